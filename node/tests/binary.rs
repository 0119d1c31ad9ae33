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
