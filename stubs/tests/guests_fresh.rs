//! Our own guests (stubs/guests) are committed as built components: each `<guest>.wasm` must
//! match its `<guest>.wasm.sha256`, always; and it must be what the source builds to.
//!
//! Which path was taken is printed (run with `--nocapture` to see it):
//! - `STUBS_GUEST_BUILD=committed`: the committed components are used as they are (checked
//!   against their sha256 only). `scripts/test` sets this when `wasm32-wasip2` is not installed.
//! - otherwise (`rebuild`, or unset): `stubs/guests/build.sh --check` rebuilds them and fails if
//!   a committed component is stale; without the `wasm32-wasip2` target this test fails, naming
//!   the two ways out.
//! - always: the guests' unit tests (`cargo test` in stubs/guests, natively).

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

const GUESTS: &[&str] = &["probe", "default", "registry", "archive", "echo-connector"];

fn guests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("guests")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn committed_components_match_their_sha256() {
    for guest in GUESTS {
        let dir = guests_dir().join(guest);
        let wasm = std::fs::read(dir.join(format!("{guest}.wasm")))
            .unwrap_or_else(|e| panic!("{guest}.wasm is not committed: {e}"));
        let recorded = std::fs::read_to_string(dir.join(format!("{guest}.wasm.sha256")))
            .unwrap_or_else(|e| panic!("{guest}.wasm.sha256 is not committed: {e}"));
        let expected = format!("{}  {guest}.wasm\n", hex(&Sha256::digest(&wasm)));
        assert_eq!(
            recorded, expected,
            "{guest}.wasm.sha256 does not match {guest}.wasm (run stubs/guests/build.sh)"
        );
        assert!(
            wasm.starts_with(b"\0asm\x0d\0\x01\0"),
            "{guest}.wasm is not a WebAssembly component"
        );
    }
}

fn wasm_target_installed() -> bool {
    let Ok(out) = Command::new("rustc").args(["--print", "sysroot"]).output() else {
        return false;
    };
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Path::new(&sysroot)
        .join("lib/rustlib/wasm32-wasip2")
        .is_dir()
}

#[test]
fn committed_components_are_what_the_source_builds() {
    let mode = std::env::var("STUBS_GUEST_BUILD").unwrap_or_default();
    if mode == "committed" {
        println!(
            "guests: STUBS_GUEST_BUILD=committed: using the committed components (sha256 checked, not rebuilt)"
        );
        return;
    }
    assert!(
        wasm_target_installed(),
        "guests: the wasm32-wasip2 target is not installed, so the committed components cannot be \
         checked against their source: run `rustup target add wasm32-wasip2`, or set \
         STUBS_GUEST_BUILD=committed to use the committed components (scripts/test does)"
    );
    println!("guests: wasm32-wasip2 installed: rebuilding with stubs/guests/build.sh --check");
    let out = Command::new("bash")
        .arg(guests_dir().join("build.sh"))
        .arg("--check")
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("run stubs/guests/build.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "guests: a committed component is stale or the build failed:\n{stdout}{stderr}"
    );
}

/// The guests' own unit tests (the `default` stub's session driven through a recording host,
/// the envelope's JSON) run natively: the guests' workspace is not part of the root one.
#[test]
fn guest_unit_tests_pass() {
    let dir = guests_dir();
    let out = Command::new("cargo")
        .args(["test", "--locked", "--quiet"])
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .output()
        .expect("run cargo test in stubs/guests");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("guests: cargo test in stubs/guests:\n{stdout}");
    assert!(
        out.status.success(),
        "guests: unit tests failed:\n{stdout}{stderr}"
    );
}
