//! The operator's stub directory (`stubs.dir`) while the node runs: a stub dropped in appears
//! with its metadata, a replaced one is served to new requests (the old bytes stay downloadable
//! by their hash), and an invalid component is refused with the reason in the node's log while
//! the previous version stays served (the real program, as a child process, for its log). The
//! node checks `stubs.dir` components with the wasmtime host: a component whose function types
//! do not match the world (a WAT guest built at test time) is refused with wasmtime's reason.
//!
//! A change is seen when the node publishes it (the descriptor's `sha256` changes), polled
//! within `RECV_TIMEOUT`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use rethink_stubs::catalogue::{Structural, Validator};
use serde_json::Value;
use tempfile::TempDir;

use crate::catalogue::{download, get, path_of, sha256_hex, variant};
use crate::stubs_host::guests::{self, Init};
use crate::support::client::RECV_TIMEOUT;
use crate::support::{DOMAIN, NodeProcess, TestNode};

/// Writes `bytes` to `dir/name` atomically (a rename), as an operator should.
pub(crate) fn put(dir: &Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).expect("write");
    std::fs::rename(&tmp, dir.join(name)).expect("rename");
}

/// Polls stub `name`'s descriptor until `ready` holds for it (status and descriptor), within
/// `RECV_TIMEOUT`.
pub(crate) async fn until(
    addr: SocketAddr,
    name: &str,
    ready: impl Fn(u16, &Value) -> bool,
) -> Value {
    let deadline = Instant::now() + RECV_TIMEOUT;
    loop {
        let answer = get(addr, &format!("/.well-known/protocolstub/{name}")).await;
        let body = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
        if ready(answer.status, &body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "stub {name} not as expected within {RECV_TIMEOUT:?}: {} {body}",
            answer.status
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_dropped_in_stub_appears_and_a_replaced_one_is_served_to_new_requests() {
    let stubs = TempDir::new().expect("temp dir");
    let dir = stubs.path().to_path_buf();
    let node = TestNode::spawn_with(|c| {
        c.stubs.dir = Some(dir.clone());
        c.stubs.watch_interval = Duration::from_millis(20);
    })
    .await;
    let addr = node.addr();
    let (_, default) = download(addr, "default").await;
    assert_eq!(
        get(addr, "/.well-known/protocolstub/chat").await.status,
        404
    );

    // Small components: the node compiles each one it checks (a debug build of wasmtime takes
    // seconds for the default stub's 190 kB).
    let echo = echo();
    let one = variant(&echo, "chat-one");
    put(
        &dir,
        "chat.toml",
        b"version = \"1.2.3\"\n[configuration]\nroom = \"lobby\"\n",
    );
    put(&dir, "chat.wasm", &one);
    let d = until(addr, "chat", |status, _| status == 200).await;
    assert_eq!(d["objectName"], "chat");
    assert_eq!(d["version"], "1.2.3");
    assert_eq!(d["configuration"]["room"], "lobby");
    assert_eq!(d["configuration"]["url"], format!("ws://{addr}/ws"));
    assert_eq!(d["sha256"], sha256_hex(&one));
    let (_, bytes) = download(addr, "chat").await;
    assert_eq!(bytes, one);
    let old_url = d["sourcePackageURL"].as_str().unwrap().to_owned();

    let two = variant(&echo, "chat-two-longer");
    put(&dir, "chat.wasm", &two);
    let d = until(addr, "chat", |_, d| d["sha256"] == sha256_hex(&two)).await;
    assert_ne!(d["sourcePackageURL"], old_url.as_str());
    let (_, bytes) = download(addr, "chat").await;
    assert_eq!(bytes, two, "new requests get the replacement");
    // A runtime that read the previous descriptor can still fetch what it names.
    let old = get(addr, path_of(&old_url)).await;
    assert_eq!(old.status, 200);
    assert_eq!(old.body, one);

    // Removed from the directory: gone from the catalogue; the built-in default stays.
    std::fs::remove_file(dir.join("chat.wasm")).expect("remove");
    until(addr, "chat", |status, _| status == 404).await;
    assert_eq!(download(addr, "default").await.1, default);
}

#[tokio::test]
async fn an_invalid_component_is_refused_with_the_reason_logged_and_the_previous_one_stays() {
    let data = TempDir::new().expect("temp dir");
    let stubs = TempDir::new().expect("temp dir");
    let dir = stubs.path();
    let echo = echo();
    let good = variant(&echo, "good");
    put(dir, "chat.wasm", &good);
    let dir_setting = dir.to_str().expect("UTF-8 path");
    let mut node = NodeProcess::spawn(
        data.path(),
        &[
            ("RETHINK_STUBS__DIR", dir_setting),
            ("RETHINK_STUBS__WATCH_INTERVAL_MS", "20"),
        ],
    )
    .await;
    let addr = node.addr();
    let d = until(addr, "chat", |status, _| status == 200).await;
    assert_eq!(d["sha256"], sha256_hex(&good));

    // A core module is not a component.
    put(dir, "chat.wasm", b"\0asm\x01\0\0\0");
    let line = node.wait_for_log("stub refused").await;
    assert!(line.contains("stub=chat"), "{line}");
    assert!(line.contains("not a WebAssembly component"), "{line}");
    let (d, bytes) = download(addr, "chat").await;
    assert_eq!(d["sha256"], sha256_hex(&good), "the previous version stays");
    assert_eq!(bytes, good);

    // A component the world does not accept: it lacks the stub exports (the component with its
    // export section cut is not even valid; garbage after the header is refused as invalid).
    let mut broken = echo.clone();
    broken.truncate(broken.len() - 1);
    put(dir, "chat.wasm", &broken);
    let line = node.wait_for_log("stub refused").await;
    assert!(line.contains("invalid component"), "{line}");
    assert_eq!(download(addr, "chat").await.1, good);

    // Fixed: served again.
    let fixed = variant(&echo, "fixed");
    put(dir, "chat.wasm", &fixed);
    until(addr, "chat", |_, d| d["sha256"] == sha256_hex(&fixed)).await;
    node.kill().await;
}

/// The echo guest (see `stubs/tests/guests/echo.wat`), a valid stub.
pub(crate) fn echo() -> Vec<u8> {
    guests::echo_in(Init::Normal { timer_ms: 60_000 }, DOMAIN)
}

/// The echo guest with `on-timer` taking a `u32` where the world says `u64`: its names and
/// versions are right (the structural check passes it), its function type is not.
pub(crate) fn wrong_signature() -> Vec<u8> {
    let wit = guests::WIT.replace(
        "export on-timer: func(id: u64);",
        "export on-timer: func(id: u32);",
    );
    assert_ne!(wit, guests::WIT, "the WIT still declares on-timer(u64)");
    let wat = guests::echo_wat(Init::Normal { timer_ms: 60_000 }, DOMAIN).replace(
        "(func (export \"on-timer\") (param i64)",
        "(func (export \"on-timer\") (param i32)",
    );
    guests::component(&wat, &wit, "protocol-stub")
}

#[tokio::test]
async fn a_component_whose_function_types_do_not_match_the_world_is_refused_by_wasmtime() {
    let data = TempDir::new().expect("temp dir");
    let stubs = TempDir::new().expect("temp dir");
    let dir = stubs.path();
    let good = echo();
    put(dir, "chat.wasm", &good);
    let mut node = NodeProcess::spawn(
        data.path(),
        &[
            ("RETHINK_STUBS__DIR", dir.to_str().expect("UTF-8 path")),
            ("RETHINK_STUBS__WATCH_INTERVAL_MS", "20"),
        ],
    )
    .await;
    let addr = node.addr();
    let d = until(addr, "chat", |status, _| status == 200).await;
    assert_eq!(d["sha256"], sha256_hex(&good));

    let bad = wrong_signature();
    Structural
        .check(&bad)
        .expect("names and versions are right: only the function type is wrong");
    put(dir, "chat.wasm", &bad);
    let line = node.wait_for_log("stub refused").await;
    assert!(line.contains("stub=chat"), "{line}");
    assert!(
        line.contains("does not match the world protocol-stub") && line.contains("on-timer"),
        "the reason names the mismatch: {line}"
    );
    let (d, bytes) = download(addr, "chat").await;
    assert_eq!(d["sha256"], sha256_hex(&good), "the previous version stays");
    assert_eq!(bytes, good);

    // A good replacement is served.
    let fixed = variant(&good, "fixed");
    put(dir, "chat.wasm", &fixed);
    until(addr, "chat", |_, d| d["sha256"] == sha256_hex(&fixed)).await;
    node.kill().await;
}
