//! Losing nothing: resume after a dropped connection, after a graceful restart and after a
//! killed node (a node program killed with SIGKILL); acknowledgements; expiry; close; a session
//! taken over by a new connection.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::client::RtMemory;
use crate::support::matrix::Served;
use crate::support::{NodeProcess, Rt, TestNode, pair, wait_for_metric};

/// Reads frames until the re-open response; returns the ids of the messages replayed before it.
async fn replayed_until_reopen(rt: &mut Rt, reopen_id: &serde_json::Value) -> Vec<u64> {
    let mut ids = Vec::new();
    loop {
        let v = rt.recv().await;
        if v["type"] == "response" && &v["id"] == reopen_id {
            assert_eq!(v["body"]["code"], 200, "re-open: {v}");
            assert_eq!(v["body"]["value"]["resumed"], true);
            return ids;
        }
        ids.push(v["id"].as_u64().expect("numeric id"));
    }
}

#[tokio::test]
async fn resume_after_a_dropped_connection_delivers_queued_messages_in_order() {
    let node = TestNode::spawn().await;
    let (mut a, mut b, fa, fb) = pair(&node, "rt-sender", "rt-receiver").await;

    a.send(&json!({"id": 0, "type": "PING", "from": fa, "to": fb}))
        .await;
    let before_m0 = b.last_seq;
    assert_eq!(b.recv().await["id"], 0);
    // b drops without acknowledging message 0, and resumes as if it never processed it.
    let mut memory = b.drop_connection();
    memory.last_seq = before_m0;
    // The node has seen the connection go: what follows waits in the outbox.
    wait_for_metric(&node, "rethink_sessions_connected", 1.0).await;
    for i in 1..=5 {
        a.send(&json!({"id": i, "type": "PING", "from": fa, "to": fb}))
            .await;
    }
    a.expect_nothing_queued().await;

    let (mut b, reopen) = memory.resume(&node).await;
    let ids = replayed_until_reopen(&mut b, &reopen["id"]).await;
    assert_eq!(ids, [0, 1, 2, 3, 4, 5]);
    // The resumed session routes as before.
    a.send(&json!({"id": 6, "type": "PING", "from": fa, "to": fb}))
        .await;
    assert_eq!(b.recv().await["id"], 6);
}

#[tokio::test]
async fn acknowledged_messages_are_not_replayed() {
    let node = TestNode::spawn().await;
    let (mut a, mut b, fa, fb) = pair(&node, "rt-ack-a", "rt-ack-b").await;
    for i in 1..=3 {
        a.send(&json!({"id": i, "type": "PING", "from": fa, "to": fb}))
            .await;
        b.recv().await;
    }
    b.ack().await;
    let mut memory = b.drop_connection();
    // Once the node has seen the connection go, it has read everything before, the ack too.
    wait_for_metric(&node, "rethink_sessions_connected", 1.0).await;
    // Even asking for everything again, acknowledged frames are gone.
    memory.last_seq = 0;
    a.send(&json!({"id": 4, "type": "PING", "from": fa, "to": fb}))
        .await;
    // Accepted (no refusal before the marker), so in b's outbox before b resumes.
    a.expect_nothing_queued().await;
    let (mut b, reopen) = memory.resume(&node).await;
    assert_eq!(replayed_until_reopen(&mut b, &reopen["id"]).await, [4]);
}

/// a (holding `fa`) sends four messages to b's `fb` while b is disconnected, and every one is
/// accepted; then a drops its connection too. Returns a's and b's memories.
async fn four_accepted_for_a_disconnected_recipient(
    node: &impl Served,
    (mut a, mut b): (Rt, Rt),
    fa: &str,
    fb: &str,
) -> (RtMemory, RtMemory) {
    b.ack().await;
    let memory_b = b.drop_connection();
    wait_for_metric(node, "rethink_sessions_connected", 1.0).await;
    for i in 1..=4 {
        a.send(&json!({"id": i, "type": "PING", "from": fa, "to": fb}))
            .await;
    }
    // Every message was accepted: no error came back before the marker.
    a.expect_nothing_queued().await;
    (a.drop_connection(), memory_b)
}

/// After the restart, b's resume replays all four messages.
async fn all_four_replayed(b: &mut Rt, reopen_b: &Value) {
    assert_eq!(
        replayed_until_reopen(b, &reopen_b["id"]).await,
        [1, 2, 3, 4]
    );
}

/// Addresses survived too: a, resumed, still reaches b's hyperty, with seq still increasing.
async fn a_still_reaches_b(mut a: Rt, reopen_a: &Value, b: &mut Rt, fa: &str, fb: &str) {
    replayed_until_reopen(&mut a, &reopen_a["id"]).await;
    a.send(&json!({"id": 5, "type": "PING", "from": fa, "to": fb}))
        .await;
    assert_eq!(b.recv().await["id"], 5);
}

#[tokio::test]
async fn graceful_restart_keeps_the_outbox_of_a_resumable_session() {
    let node = TestNode::spawn().await;
    let (a, b, fa, fb) = pair(&node, "rt-restart-a", "rt-restart-b").await;
    let (memory_a, memory_b) =
        four_accepted_for_a_disconnected_recipient(&node, (a, b), &fa, &fb).await;
    let node = node.restart().await;
    let (mut b, reopen_b) = memory_b.resume(&node).await;
    all_four_replayed(&mut b, &reopen_b).await;
    let (a, reopen_a) = memory_a.resume(&node).await;
    a_still_reaches_b(a, &reopen_a, &mut b, &fa, &fb).await;
}

#[tokio::test]
async fn killed_node_keeps_every_accepted_message() {
    let dir = tempfile::TempDir::new().unwrap();
    let mut node = NodeProcess::spawn(dir.path(), &[]).await;
    let mut a = node.open_rt("rt-restart-a").await;
    let mut b = node.open_rt("rt-restart-b").await;
    let fa = a.allocate(1).await.remove(0);
    let fb = b.allocate(1).await.remove(0);
    let (memory_a, memory_b) =
        four_accepted_for_a_disconnected_recipient(&node, (a, b), &fa, &fb).await;
    // A real SIGKILL: nothing the node held only in memory survives it.
    node.kill().await;
    let node = node.restart().await;
    let (mut b, reopen_b) = node.resume_rt(&memory_b).await;
    all_four_replayed(&mut b, &reopen_b).await;
    let (a, reopen_a) = node.resume_rt(&memory_a).await;
    a_still_reaches_b(a, &reopen_a, &mut b, &fa, &fb).await;
}

#[tokio::test]
async fn a_connected_session_resumes_after_a_graceful_restart() {
    let node = TestNode::spawn().await;
    let (mut a, mut b, fa, fb) = pair(&node, "rt-conn-a", "rt-conn-b").await;
    a.send(&json!({"id": 1, "type": "PING", "from": fa, "to": fb}))
        .await;
    let seen = b.recv().await;
    assert_eq!(seen["id"], 1);
    let node = node.restart().await;
    // The node closed b's connection with 1001 going away.
    assert_eq!(b.closed_with(Duration::from_secs(3)).await, Some(1001));
    let memory = b.drop_connection();
    let (mut b, reopen) = memory.resume(&node).await;
    assert_eq!(
        replayed_until_reopen(&mut b, &reopen["id"]).await,
        Vec::<u64>::new()
    );
    assert!(b.last_seq >= seen["seq"].as_u64().unwrap());
}

#[tokio::test]
async fn expiry_releases_addresses_and_subscriptions() {
    const WINDOW: Duration = Duration::from_secs(60);
    let node = TestNode::spawn_with_clock(|c| c.session.resume_window = WINDOW).await;
    let (mut a, b, fa, fb) = pair(&node, "rt-exp-a", "rt-exp-b").await;
    let memory = b.drop_connection();
    // The resume window runs from when the node saw the connection go.
    wait_for_metric(&node, "rethink_sessions_connected", 1.0).await;
    // Just before the end of its window the session still takes messages...
    node.advance(WINDOW - Duration::from_millis(1)).await;
    a.send(&json!({"id": 1, "type": "PING", "from": fa, "to": fb}))
        .await;
    a.expect_nothing_queued().await;
    // ... and the reaper's next pass after it (a quarter of the window, at most 1 s) ends it.
    node.advance(Duration::from_secs(1)).await;
    let resp = a
        .request(json!({"type": "PING", "from": fa, "to": fb}))
        .await;
    assert_eq!(
        resp["body"]["code"], 404,
        "expired session's address is released: {resp}"
    );
    let (mut b, _) = memory.resume(&node).await;
    let refused = b.recv().await;
    assert_eq!(
        refused["body"]["code"], 404,
        "expired session cannot be resumed: {refused}"
    );
    // The runtime URL is free again, for a new session numbered from 1.
    b.last_seq = 0;
    assert_eq!(b.open_session(json!({})).await["body"]["code"], 200);
}

#[tokio::test]
async fn close_ends_the_session_at_once() {
    let node = TestNode::spawn().await;
    let (mut a, mut b, fa, fb) = pair(&node, "rt-close-a", "rt-close-b").await;
    let url = b.url.clone();
    let resp = b
        .request(json!({"type": "close", "from": url, "to": "mn:/session"}))
        .await;
    assert_eq!(resp["body"]["code"], 200);
    assert_eq!(b.closed_with(Duration::from_secs(2)).await, Some(1000));
    let gone = a
        .request(json!({"type": "PING", "from": fa, "to": fb}))
        .await;
    assert_eq!(gone["body"]["code"], 404);
}

#[tokio::test]
async fn re_open_on_a_new_connection_takes_the_session_over() {
    let node = TestNode::spawn().await;
    let (mut a, mut b, fa, fb) = pair(&node, "rt-take-a", "rt-take-b").await;
    let memory = crate::support::client::RtMemory {
        url: b.url.clone(),
        token: b.token.clone(),
        last_seq: b.last_seq,
        next_id: 5000,
    };
    let (mut b2, reopen) = memory.resume(&node).await;
    replayed_until_reopen(&mut b2, &reopen["id"]).await;
    assert_eq!(b.closed_with(Duration::from_secs(2)).await, Some(1008));
    a.send(&json!({"id": 9, "type": "PING", "from": fa, "to": fb}))
        .await;
    assert_eq!(b2.recv().await["id"], 9);
}

#[tokio::test]
async fn re_open_with_a_wrong_token_is_refused() {
    let node = TestNode::spawn().await;
    let b = Rt::open(&node, "rt-wrong-token").await;
    let mut memory = b.drop_connection();
    memory.token = Some("0".repeat(64));
    let (mut rt, _) = memory.resume(&node).await;
    assert_eq!(rt.recv().await["body"]["code"], 404);
}
