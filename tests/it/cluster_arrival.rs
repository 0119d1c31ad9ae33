//! A hand-over request for a session its holder is still adopting (`Link::arriving`,
//! `node/src/cluster/handover.rs`): node 2 has taken the session's row from node 1 and is
//! restoring the session when node 3 asks it for the session. Node 2 must finish restoring it
//! and then release it as any session (closing its connection, writing its outbox), not give
//! the bare row to node 3 while it goes on restoring a session it no longer holds (two nodes
//! would then both serve it: node 2 would keep delivering its own senders' messages to a
//! connection the runtime left).
//!
//! The moment is made deterministic by node 2's `cluster.test_hold_arrivals` (tests only): its
//! adoption, the row taken, waits until a hand-over request reaches it.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::Connection;
use sqlx::postgres::PgConnection;

use crate::cluster::{Cluster, cluster_with, node_id, open};
use crate::cluster_handover::{LIVE, reopen, send_reopen};
use crate::support::client::RECV_TIMEOUT;

/// The node holding the session of runtime `url`, per the shared database.
async fn holder(db: &str, url: &str) -> Option<String> {
    let mut conn = PgConnection::connect(db).await.expect("connect");
    let node = sqlx::query_scalar("SELECT node FROM sessions WHERE runtime_url = $1")
        .bind(url)
        .fetch_one(&mut conn)
        .await
        .expect("the session's row");
    conn.close().await.expect("close");
    node
}

/// Waits until the database names node `i` (1-based) as the holder of runtime `url`.
async fn until_held_by(c: &Cluster, url: &str, i: usize) {
    let want = node_id(&c.db, i);
    let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
    loop {
        let now = holder(&c.db, url).await;
        if now.as_deref() == Some(&*want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the session is held by {now:?}, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The next PING among `rt`'s frames: its number.
async fn next_ping(rt: &mut crate::support::Rt) -> u64 {
    loop {
        let v: Value = rt.recv().await;
        if v["type"] == "PING" {
            return v["body"]["n"].as_u64().expect("n");
        }
    }
}

#[tokio::test]
async fn a_request_for_a_session_still_arriving_waits_for_it_and_releases_it_whole() {
    let mut c = cluster_with(1, &[LIVE]).await;
    c.add_node(&[LIVE, ("RETHINK_CLUSTER__TEST_HOLD_ARRIVALS", "true")])
        .await;
    c.add_node(&[LIVE]).await;
    let mut r = open(&c.nodes[0], "rt-r").await;
    let h = r.allocate(1).await.remove(0);
    // A sender on node 2, the node the session passes through.
    let mut s = open(&c.nodes[1], "rt-s").await;
    let from = s.allocate(1).await.remove(0);
    let ping = |n: u64| json!({"id": n, "type": "PING", "from": from, "to": h, "body": {"n": n}});
    s.send(&ping(0)).await;
    assert_eq!(next_ping(&mut r).await, 0);

    // The runtime re-opens on node 2, which takes the row from node 1 and holds there.
    let memory = r.drop_connection();
    let mut on_2 = send_reopen(&c.nodes[1], &memory, json!({})).await;
    until_held_by(&c, &memory.url, 2).await;
    // Then on node 3, which asks node 2 (alive, holding the row) for the session.
    let (mut on_3, code, before) = reopen(&c.nodes[2], &memory, json!({})).await;
    assert_eq!(code, 200, "re-opened on node 3: {before:?}");
    assert!(
        before.iter().all(|v| v["type"] != "PING"),
        "PING 0 was read: {before:?}"
    );
    assert_eq!(holder(&c.db, &memory.url).await, Some(node_id(&c.db, 3)));

    // Node 2 released the session it restored: its connection is closed as when superseded
    // (whether or not its re-open was answered before), and its sender's next message reaches
    // the runtime on node 3.
    let (frames, close) = on_2.frames_until_close().await;
    assert_eq!(close, 1008, "closed as when superseded, after {frames:?}");
    s.send(&ping(1)).await;
    assert_eq!(next_ping(&mut on_3).await, 1, "delivered on node 3");
    assert_eq!(s.drain().await, Vec::<Value>::new(), "nothing refused");
    on_3.expect_nothing_queued().await;
}
