//! The node's program as a child process: it starts on a fresh data directory, survives a real
//! SIGKILL (a restarted node serves the same data), and stops with a real SIGTERM.

use std::time::Duration;

use crate::support::matrix::{login, register, sync, user_id};
use crate::support::{NodeProcess, get_at};

#[tokio::test]
async fn the_program_restarts_after_sigkill_and_stops_on_sigterm() {
    let dir = tempfile::TempDir::new().unwrap();
    let mut node = NodeProcess::spawn(dir.path(), &[]).await;
    let (status, body) = get_at(node.addr(), "/healthz").await;
    assert_eq!(status, 200, "{body}");
    let addr = node.addr();
    // Data the restarted node must still have: a user (password `pw-alice`).
    register(&node, "alice").await;

    node.kill().await;
    let mut node = node.restart().await;
    assert_eq!(
        node.addr(),
        addr,
        "the restarted node listens on the same port"
    );
    let (status, body) = get_at(node.addr(), "/healthz").await;
    assert_eq!(status, 200, "{body}");
    // The user is still there: her password logs her in, and the new device's token works.
    let alice = login(&node, "alice").await;
    assert_eq!(alice.user_id, user_id("alice"));
    sync(&node, &alice.token, None).await;

    node.terminate();
    let status = node
        .wait_exit(Duration::from_secs(15))
        .await
        .expect("SIGTERM stops the node within 15 s");
    assert!(status.success(), "graceful stop exits 0: {status}");
    let log = node.drain_log().await.join("\n");
    assert!(log.contains("rethink-node stopped"), "{log}");
}
