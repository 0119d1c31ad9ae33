//! The pruning of `stream_log` (`node/src/stream/remote.rs`, `stream/commit.rs`): with each
//! group of stream positions a node writes what they touched into `stream_log`, for the other
//! nodes to follow; each time the head passes a multiple of 4,096 (`PRUNE_EVERY`) the group also
//! deletes the entries more than 100,000 positions (`LOG_KEEP`) behind it. What the code
//! promises: the log serves only the catch-up of running nodes; a client's `/sync` reads the
//! tables, so a `since` older than the pruned range still gets every event after it, through a
//! node that followed the positions and through a node started after the pruning (its change
//! marks cover only what came after its start: an older `since` counts everything as changed).
//!
//! Two nodes, Alice on one and Bob on the other. The test moves the shared head forward by
//! 102,399 positions with SQL (as 100,000 writes would, without their log entries, which would
//! be pruned anyway; the nodes see the head move and skip the positions without an entry), so
//! that the next write passes a multiple of 4,096 and prunes everything written before.

use serde_json::{Value, json};
use sqlx::Connection;
use sqlx::postgres::PgConnection;

use crate::cluster::{cluster, cluster_with};
use crate::matrix_cluster::alice_and_bob;
use crate::support::NodeProcess;
use crate::support::client::RECV_TIMEOUT;
use crate::support::http::wait_for_metric;
use crate::support::matrix::{
    V3, bodies, create_room, get, invite, join, next_batch, ok, register_session, send_text, sync,
    user_id,
};

/// Where the test moves the head: the next position is a multiple of `PRUNE_EVERY` (4,096),
/// and every position the test wrote before lies more than `LOG_KEEP` (100,000) behind it.
const JUMP_TO: i64 = 25 * 4096 - 1;

async fn scalar(db: &str, sql: &'static str) -> i64 {
    let mut conn = PgConnection::connect(db)
        .await
        .expect("connect to the database");
    let n: i64 = sqlx::query_scalar(sql)
        .fetch_one(&mut conn)
        .await
        .expect("query");
    conn.close().await.expect("close");
    n
}

/// Moves the shared head to [`JUMP_TO`] (as 100,000 writes would, without their log entries).
async fn move_head(db: &str) {
    let mut conn = PgConnection::connect(db).await.expect("connect");
    sqlx::query("UPDATE stream_head SET pos = $1 WHERE id = 0")
        .bind(JUMP_TO)
        .execute(&mut conn)
        .await
        .expect("move the head");
    conn.close().await.expect("close");
}

/// The room's message bodies in Bob's `/sync` from `since` on `node`, once `last` is among them
/// (long-polling: another node's writes arrive a moment after their answer).
async fn synced_since(
    node: &NodeProcess,
    token: &str,
    room: &str,
    since: &str,
    last: &str,
) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
    let mut wait_from = since.to_owned();
    loop {
        let body = sync(node, token, Some(since)).await;
        let timeline = &body["rooms"]["join"][room]["timeline"];
        let events = timeline["events"].as_array().cloned().unwrap_or_default();
        let got = bodies(&events);
        if got.iter().any(|b| b == last) {
            assert_ne!(timeline["limited"], Value::Bool(true), "{body}");
            return got;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{last} is not in the sync: {got:?}"
        );
        let path = format!("{V3}/sync?timeout=1000&since={wait_from}");
        wait_from = next_batch(&ok(get(node, &path, token).await));
    }
}

#[tokio::test]
async fn the_log_is_pruned_behind_the_head_and_an_older_since_still_syncs() {
    let mut c = cluster(2).await;
    let (alice, bob, room) = alice_and_bob(&c.nodes[0], &c.nodes[1]).await;
    let old = next_batch(&sync(&c.nodes[1], &bob.token, None).await);
    send_text(&c.nodes[0], &alice.token, &room, "t1", "m1").await;
    let want = ["m1"];
    assert_eq!(
        synced_since(&c.nodes[1], &bob.token, &room, &old, "m1").await,
        want
    );

    // Everything so far is in the log, behind where the test moves the head.
    let written = scalar(&c.db, "SELECT max(pos) FROM stream_log").await;
    assert!(written > 0 && written < JUMP_TO - 100_000, "head {written}");
    move_head(&c.db).await;

    // The next group (position JUMP_TO + 1) prunes the log.
    send_text(&c.nodes[0], &alice.token, &room, "t2", "m2").await;
    send_text(&c.nodes[1], &bob.token, &room, "t3", "m3").await;
    assert_eq!(
        scalar(
            &c.db,
            "SELECT count(*) FROM stream_log WHERE pos <= 25 * 4096 - 100000"
        )
        .await,
        0,
        "the entries more than LOG_KEEP behind are pruned"
    );
    let logged = "SELECT count(*) FROM stream_log WHERE pos > 25 * 4096 - 1";
    assert!(
        scalar(&c.db, logged).await >= 2,
        "the new positions are logged"
    );

    // A since from before the pruned range: every event after it, through the node that
    // followed, and through a node started after the pruning.
    let want = ["m1", "m2", "m3"];
    for node in [0, 1] {
        let got = synced_since(&c.nodes[node], &bob.token, &room, &old, "m3").await;
        assert_eq!(got, want, "through node {}", node + 1);
    }
    let late = c.add_node(&[]).await;
    assert_eq!(
        synced_since(late, &bob.token, &room, &old, "m3").await,
        want
    );
    send_text(late, &alice.token, &room, "t4", "m4").await;
    let got = synced_since(&c.nodes[1], &bob.token, &room, &old, "m4").await;
    assert_eq!(
        got,
        ["m1", "m2", "m3", "m4"],
        "the late node's writes are followed"
    );
}

/// A *running* node that falls more than `LOG_KEEP` positions behind: node 2 is stopped
/// (SIGSTOP) while node 1 writes a join and a message and the log is pruned past them. What
/// those positions touched is then unknown to node 2; the code promises that node 2 loads
/// their room events from the `events` table, counts everything as changed for a `since` from
/// before, and wakes every waiting `/sync`. So Bob's long-poll on node 2, waiting from before the
/// pause, returns the message (nothing that was logged concerns Bob: only the wake of everyone
/// can end his wait), and Carol, whose join node 2 never saw in the log, finds the room joined.
#[tokio::test]
async fn a_running_node_that_missed_pruned_positions_loads_them_and_wakes_every_sync() {
    let c = cluster_with(
        2,
        // Nobody is found gone while node 2 is stopped.
        &[("RETHINK_CLUSTER__MEMBERSHIP_TIMEOUT_MS", "60000")],
    )
    .await;
    let (n1, n2) = (&c.nodes[0], &c.nodes[1]);
    let (alice, bob, room) = alice_and_bob(n1, n2).await;
    let carol = register_session(n1, "carol").await;
    invite(n1, &alice.token, &room, &user_id("carol")).await;
    let old = next_batch(&sync(n2, &bob.token, None).await);
    send_text(n1, &alice.token, &room, "t1", "m1").await;
    synced_since(n2, &bob.token, &room, &old, "m1").await;
    let since = next_batch(&sync(n2, &bob.token, Some(&old)).await);

    // Bob waits on node 2 from a position after m1.
    let path = format!("{V3}/sync?timeout=60000&since={since}");
    let poll = tokio::spawn({
        let (addr, token) = (n2.addr(), bob.token.clone());
        async move { ok(get(&addr, &path, &token).await) }
    });
    wait_for_metric(n2, "rethink_matrix_syncs_waiting", 1.0).await;

    n2.signal("-STOP");
    join(n1, &carol.token, &room).await;
    send_text(n1, &alice.token, &room, "t2", "m2").await;
    move_head(&c.db).await;
    // A write that concerns only Alice passes the multiple of 4,096 and prunes the log.
    create_room(n1, &alice.token, &json!({"name": "Alone"})).await;
    assert_eq!(
        scalar(
            &c.db,
            "SELECT count(*) FROM stream_log WHERE pos <= 25 * 4096 - 100000"
        )
        .await,
        0,
        "the join and m2 are pruned from the log"
    );
    n2.signal("-CONT");

    let woken = tokio::time::timeout(RECV_TIMEOUT, poll)
        .await
        .expect("Bob's long-poll returns")
        .expect("the poll task");
    let events = woken["rooms"]["join"][&room]["timeline"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(bodies(&events), ["m2"], "{woken}");
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "m.room.member" && e["state_key"] == user_id("carol")),
        "{woken}"
    );

    let carols = sync(n2, &carol.token, None).await;
    let timeline = &carols["rooms"]["join"][&room]["timeline"]["events"];
    assert_eq!(
        bodies(
            timeline
                .as_array()
                .expect("Carol's room is joined on node 2")
        ),
        ["m1", "m2"],
        "{carols}"
    );
}
