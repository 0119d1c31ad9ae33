//! The `rethink-node` binary as an operator runs it: configuration errors stop it with a message
//! naming the setting, and SIGTERM shuts it down gracefully.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn node_command(data_dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rethink-node"));
    cmd.env_clear()
        .env("RETHINK_DATA_DIR", data_dir)
        .env("RETHINK_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn output_of(child: Child) -> (std::process::ExitStatus, String) {
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status, text)
}

#[test]
fn an_invalid_setting_stops_the_node_and_is_named() {
    let dir = tempfile::TempDir::new().unwrap();
    let child = node_command(dir.path())
        .env("RETHINK_SESSION__RATE_PER_SECOND", "0")
        .spawn()
        .unwrap();
    let (status, text) = output_of(child);
    assert!(!status.success());
    assert!(text.contains("session.rate_per_second"), "{text}");

    let child = node_command(dir.path())
        .env("RETHINK_LISTEN", "not-an-address")
        .spawn()
        .unwrap();
    let (status, text) = output_of(child);
    assert!(!status.success());
    assert!(text.contains("setting `listen`"), "{text}");

    let child = node_command(dir.path())
        .args(["--config", "/no/such/file.toml"])
        .spawn()
        .unwrap();
    let (status, text) = output_of(child);
    assert!(!status.success());
    assert!(text.contains("/no/such/file.toml"), "{text}");
}

fn healthz(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

#[test]
fn sigterm_shuts_down_gracefully() {
    let dir = tempfile::TempDir::new().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = node_command(dir.path())
        .env("RETHINK_LISTEN", format!("127.0.0.1:{port}"))
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut up = false;
    while Instant::now() < deadline {
        if healthz(port).is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(up, "the node answers /healthz");
    assert!(
        dir.path().join("rethink.db").exists(),
        "data kept in the data directory"
    );
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let (status, text) = output_of(child);
    assert!(status.success(), "exit status {status}: {text}");
    assert!(
        text.contains("shutting down") && text.contains("rethink-node stopped"),
        "{text}"
    );
}

fn example(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../policy/examples")
        .join(name)
}

#[test]
fn policy_validate_reports_the_count_or_the_file_and_line() {
    let dir = tempfile::TempDir::new().unwrap();
    let child = node_command(dir.path())
        .args(["policy", "validate"])
        .arg(example("blocklist"))
        .spawn()
        .unwrap();
    let (status, text) = output_of(child);
    assert!(status.success(), "{text}");
    assert!(text.contains("2 policies, valid"), "{text}");

    let bad = tempfile::TempDir::new().unwrap();
    std::fs::copy(
        example("blocklist").join("schema.cedarschema"),
        bad.path().join("schema.cedarschema"),
    )
    .unwrap();
    std::fs::write(
        bad.path().join("broken.cedar"),
        "permit(principal, action, resource)\nwhen { context.nope };\n",
    )
    .unwrap();
    let child = node_command(dir.path())
        .args(["policy", "validate"])
        .arg(bad.path())
        .spawn()
        .unwrap();
    let (status, text) = output_of(child);
    assert!(!status.success());
    assert!(text.contains("broken.cedar:2:"), "{text}");
}

#[test]
fn policy_check_prints_the_decision_and_the_deciding_policy() {
    let dir = tempfile::TempDir::new().unwrap();
    let msg = dir.path().join("msg.json");
    std::fs::write(
        &msg,
        r#"{"id":1,"type":"PING","from":"hyperty://example.com/m-1","to":"hyperty://example.com/a-1"}"#,
    )
    .unwrap();
    let check = |user: &str| {
        let child = node_command(dir.path())
            .args(["policy", "check", "--message"])
            .arg(&msg)
            .arg("--dir")
            .arg(example("blocklist"))
            .args(["--as", user, "--owner", "user://example.com/alice"])
            .spawn()
            .unwrap();
        output_of(child)
    };
    let (status, text) = check("user://example.com/mallory");
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(
        text.contains("hyperty://example.com/a-1: DENY by blocked-sender"),
        "{text}"
    );
    let (status, text) = check("user://example.com/bob");
    assert!(status.success(), "{text}");
    assert!(text.contains("ALLOW by allow-all"), "{text}");
}
