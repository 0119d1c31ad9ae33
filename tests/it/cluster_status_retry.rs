//! A runtime's status published while the cluster's database is down still reaches the
//! subscribers on the other nodes once it is back (`node/src/bus/status.rs`: the remote part of
//! a status notice is tried again). Two nodes of one cluster on a PostgreSQL server of the
//! test's own (`scripts/pg-test-server`, stopped and started again on the same data and port,
//! as in `cluster_pg_restart.rs`) and the test NATS server (`NATS_TEST_URL`).
//!
//! A runtime R on node 1, a subscriber S of `<R>/status` on node 2. With PostgreSQL stopped,
//! R's connection is dropped (`disconnected`): node 1 cannot look up nor reach S's queue, and
//! says so in its log (the test's signal that the notice was tried and failed). `expired` is
//! not used: a session ends only once its deletion is committed, so its `expired` is published
//! after the database is back.

use std::time::Duration;

use serde_json::{Value, json};

use crate::cluster::{Cluster, cluster_on, open};
use crate::cluster_handover::{LIVE, send_reopen};
use crate::support::Rt;
use crate::support::pg::PgServer;

/// How long the test waits for any one condition (the failure logged, the update received).
const DEADLINE: Duration = Duration::from_secs(60);

/// Two nodes (never taken for gone during the outage) on `pg`; R on node 1 and S on node 2,
/// subscribed to R's status; R's URL.
async fn watched(pg: &PgServer) -> (Cluster, Rt, Rt, String) {
    let c = cluster_on(pg.database("rethink_status_retry").await, 2, &[LIVE]).await;
    let r = open(&c.nodes[0], "rt-r").await;
    let mut sub = open(&c.nodes[1], "rt-sub").await;
    let runtime = r.url.clone();
    sub.subscribe(&[&format!("{runtime}/status")]).await;
    (c, r, sub, runtime)
}

/// Waits for node 1 to log that a status update of `runtime` did not get through.
async fn failure_logged(c: &mut Cluster, runtime: &str) {
    let line = tokio::time::timeout(DEADLINE, c.nodes[0].wait_for_log("a runtime status update"))
        .await
        .expect("node 1 logs the failed status update");
    assert!(line.contains(runtime), "{line}");
}

/// The next status update `sub` receives: `<runtime>/status`'s value.
async fn next_status(sub: &mut Rt, runtime: &str) -> String {
    let v: Value = sub
        .try_recv(DEADLINE)
        .await
        .unwrap_or_else(|| panic!("no status update of {runtime} within {DEADLINE:?}"));
    status_value(&v, runtime)
}

/// `v`, a status update of `runtime`: its value.
fn status_value(v: &Value, runtime: &str) -> String {
    assert_eq!(
        (&v["type"], &v["to"], &v["body"]["resource"]),
        (
            &json!("update"),
            &json!(format!("{runtime}/status")),
            &json!(runtime)
        ),
        "{v}"
    );
    v["body"]["value"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_status_published_while_the_database_is_down_reaches_other_nodes_once_it_is_back() {
    let pg = PgServer::start();
    let (mut c, r, mut sub, runtime) = watched(&pg).await;

    pg.pause();
    let _memory = r.drop_connection();
    failure_logged(&mut c, &runtime).await;
    pg.resume();

    assert_eq!(next_status(&mut sub, &runtime).await, "disconnected");
    sub.expect_nothing_queued().await;
}

/// A newer status published while an older one is still owed to the other nodes is not
/// overtaken by it: the subscriber's last update is the newer one (the older one may come
/// before it, or not at all: superseded). What node 1 sends is checked once its retry has ended
/// (its log says so), up to a message R sends S after that (behind them in S's queue).
#[tokio::test]
async fn a_status_owed_during_the_outage_does_not_overtake_a_newer_one() {
    let pg = PgServer::start();
    let (mut c, r, mut sub, runtime) = watched(&pg).await;

    pg.pause();
    let memory = r.drop_connection();
    failure_logged(&mut c, &runtime).await;
    // Re-opened on its node while the database is still down: `live`, after `disconnected`.
    // Its answer may wait for the node's own lookup of the status's subscribers (which fails
    // after the pool's acquire timeout) when no earlier status is owed.
    let mut again = send_reopen(&c.nodes[0], &memory, json!({})).await;
    loop {
        let v = again
            .try_recv(DEADLINE)
            .await
            .expect("the re-open is answered");
        if v["type"] == "response" && v["id"] == "resume" {
            assert_eq!(v["body"]["code"], 200, "{v}");
            break;
        }
    }
    pg.resume();

    // Node 1's retry has ended: what it sent S is in S's queue.
    let line = c.nodes[0]
        .wait_for_log("a runtime status update reached the other nodes")
        .await;
    assert!(line.contains(&runtime) && line.contains("live"), "{line}");
    again
        .send(&json!({"id": "after", "type": "PING", "from": runtime,
            "to": format!("{}/inbox", sub.url)}))
        .await;
    let mut got = Vec::new();
    loop {
        let v: Value = sub
            .try_recv(DEADLINE)
            .await
            .expect("R's message reaches S after the status updates");
        if v["type"] == "PING" {
            assert_eq!(v["id"], "after", "{v}");
            break;
        }
        got.push(status_value(&v, &runtime));
    }
    assert!(
        got == ["live"] || got == ["disconnected", "live"],
        "the updates of {runtime}: {got:?}"
    );
    sub.expect_nothing_queued().await;
}
