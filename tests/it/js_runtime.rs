//! The JavaScript hyperty runtime (`stubs/js`): its host with the probe component (no node),
//! then against a real node: the Node.js test and the headless Chromium test run as child
//! processes with the node's base URL; and `/demo/` serves the pages, the library and jco's
//! files.
//!
//! These tests need `npm ci --prefix stubs/js` (jco, the WASI shims, playwright-core), `node`
//! (20 or later) and, for the browser test, Debian's `chromium` (`CHROMIUM`, when set and not
//! empty, overrides `/usr/bin/chromium`; scripts/test sets it to the `chromium` on `PATH`). When
//! one is missing they fail and say which command installs it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use crate::support::{TestNode, get};

fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../stubs/js")
}

/// Fails with the command to run when `stubs/js/node_modules` has not been installed.
fn require_node_modules() {
    let modules = js_dir().join("node_modules");
    for package in [
        "@bytecodealliance/jco-transpile",
        "@bytecodealliance/preview2-shim",
        "playwright-core",
    ] {
        assert!(
            modules.join(package).is_dir(),
            "{} is missing: run `npm ci --prefix stubs/js` before `cargo test` (scripts/test does)",
            modules.join(package).display()
        );
    }
}

/// Runs `node <args>` in `stubs/js` and fails with its output unless it exits 0.
async fn run_node(args: &[&str]) {
    run_node_with(args, &[]).await;
}

/// [`run_node`] with the environment variables `env` set for it.
async fn run_node_with(args: &[&str], env: &[(&str, &str)]) {
    require_node_modules();
    let child = Command::new("node")
        .args(args)
        .envs(env.iter().copied())
        .current_dir(js_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `node` (Node.js 20 or later is needed): {e}"));
    // The scripts bound themselves (90 s / 120 s); this only catches a process that hangs past that.
    let out = tokio::time::timeout(Duration::from_secs(180), child.wait_with_output())
        .await
        .expect("the test script finishes")
        .expect("the test script's output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "`node {}` failed ({}):\n{stdout}\n{stderr}",
        args.join(" "),
        out.status
    );
}

#[tokio::test]
async fn the_runtime_hosts_a_real_component_config_kv_timers_net_and_traps() {
    run_node(&["--experimental-websocket", "test/host.mjs"]).await;
}

#[tokio::test]
async fn the_library_in_node_js_downloads_the_stub_and_resumes_without_loss() {
    let node = TestNode::spawn().await;
    let base = format!("http://{}", node.addr());
    run_node(&[
        "--experimental-websocket",
        "test/node_runtime.mjs",
        base.as_str(),
    ])
    .await;
}

#[tokio::test]
async fn two_chromium_pages_chat_through_the_downloaded_stub_across_a_network_cut() {
    let chromium = std::env::var("CHROMIUM")
        .ok()
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: run `apt-get install -y chromium` (or set CHROMIUM) before `cargo test`"
    );
    let node = TestNode::spawn().await;
    let base = format!("http://{}", node.addr());
    // The script runs the browser checked here.
    run_node_with(
        &["test/chromium.mjs", base.as_str()],
        &[("CHROMIUM", chromium.as_str())],
    )
    .await;
}

#[tokio::test]
async fn the_demo_serves_its_pages_the_library_and_only_jco_files() {
    require_node_modules();
    let node = TestNode::spawn().await;
    let (status, body) = get(&node, "/demo/").await;
    assert_eq!(status, 200);
    assert!(body.contains("pane.html?name=alice"), "{body}");
    let (status, body) = get(&node, "/demo/pane.html").await;
    assert_eq!(status, 200);
    assert!(body.contains("importmap"), "{body}");
    let (status, body) = get(&node, "/demo/lib/runtime.js").await;
    assert_eq!(status, 200);
    assert!(body.contains("export async function connect"), "{body}");
    let (status, _) = get(
        &node,
        "/demo/npm/@bytecodealliance/preview2-shim/dist/browser/cli.js",
    )
    .await;
    assert_eq!(status, 200);
    for path in [
        "/demo/lib/nope.js",
        "/demo/npm/@bytecodealliance/preview2-shim/../../../../Cargo.toml",
        "/demo/npm/@bytecodealliance/preview2-shim/%2e%2e/%2e%2e/playwright-core/index.js",
        "/demo/npm/playwright-core/index.js",
        "/demo/npm/@bytecodealliance/preview2-shim/package.jsonx",
    ] {
        let (status, body) = get(&node, path).await;
        assert_eq!(status, 404, "{path}: {body}");
    }
}
