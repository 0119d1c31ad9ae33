//! Clustering's edges (issue 14): two nodes opening one runtime URL at once, the `expired`
//! status of a dead node's sessions, and refusals on arrival answered to the sender. Real node
//! programs on one PostgreSQL database (`PG_TEST_URL`) and one NATS server (`NATS_TEST_URL`).

use serde_json::{Value, json};

use crate::cluster::{cluster, cluster_with, metric, not_to_bob_policies, open, wait_for_metric};
use crate::support::{DOMAIN, NodeProcess, Rt, sm_endpoint};

async fn connect(node: &NodeProcess, name: &str) -> Rt {
    let (ws, _) = tokio_tungstenite::connect_async(node.ws_url())
        .await
        .unwrap();
    Rt::from_ws(ws, name)
}

/// Of two nodes opening one runtime URL at the same moment, exactly one wins; the other
/// answers 409, as for a duplicate on one node. Many pairs, so that the race is run for real.
#[tokio::test]
async fn two_nodes_opening_one_runtime_url_at_once_give_it_to_one() {
    const PAIRS: usize = 30;
    let c = cluster(2).await;
    let (n1, n2) = (&c.nodes[0], &c.nodes[1]);
    let mut pairs = Vec::new();
    for i in 0..PAIRS {
        let name = format!("rt-twin{i}");
        pairs.push((connect(n1, &name).await, connect(n2, &name).await));
    }
    let answers = futures_util::future::join_all(pairs.iter_mut().map(|(a, b)| async {
        let (x, y) = tokio::join!(a.open_session(json!({})), b.open_session(json!({})));
        (x["body"]["code"].as_u64(), y["body"]["code"].as_u64())
    }))
    .await;
    for (i, codes) in answers.iter().enumerate() {
        assert!(
            matches!(codes, (Some(200), Some(409)) | (Some(409), Some(200))),
            "rt-twin{i}: the two opens answered {codes:?}"
        );
    }
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&c.db)
        .await
        .unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(rows, PAIRS as i64, "one session per runtime URL");

    // The winner still works; once its session is closed, the runtime URL is free on the other
    // node too.
    let (winner, other) = match answers[0].0 {
        Some(200) => (&mut pairs[0].0, n2),
        _ => (&mut pairs[0].1, n1),
    };
    let closed = winner
        .request(json!({"type": "close", "from": winner.url, "to": "mn:/session"}))
        .await;
    assert_eq!(closed["body"]["code"], 200, "{closed}");
    // The node ends the session, then closes the connection.
    let (_, code) = winner.frames_until_close().await;
    assert_eq!(code, 1000);
    let mut again = connect(other, "rt-twin0").await;
    assert_eq!(again.open_session(json!({})).await["body"]["code"], 200);
}

/// Waits for the `expired` update of `runtime`'s status.
async fn expect_expired(watcher: &mut Rt, runtime: &str) {
    let got: Value = watcher.recv().await;
    assert_eq!(
        (&got["type"], &got["from"], &got["to"], &got["body"]),
        (
            &json!("update"),
            &json!(format!("domain://msg-node.{DOMAIN}")),
            &json!(format!("{runtime}/status")),
            &json!({"resource": runtime, "attribute": "status", "value": "expired"})
        ),
        "{got}"
    );
}

/// A killed node's sessions end once it has been gone past the resume window: their
/// subscribers on every node hear `expired` on `<runtime URL>/status`, once.
#[tokio::test]
async fn the_sessions_of_a_dead_node_are_published_expired() {
    let mut c = cluster_with(3, &[("RETHINK_SESSION__RESUME_WINDOW_SECS", "1")]).await;
    let bob = open(&c.nodes[1], "rt-bob").await;
    let status = format!("{}/status", bob.url);
    let mut watchers = Vec::new();
    for (i, node) in [&c.nodes[0], &c.nodes[2]].into_iter().enumerate() {
        let mut w = open(node, &format!("rt-watcher{i}")).await;
        w.subscribe(&[&status]).await;
        watchers.push(w);
    }
    c.nodes[1].kill().await;
    for w in &mut watchers {
        expect_expired(w, &bob.url).await;
        w.expect_nothing_queued().await;
    }
}

/// Subscribes `watcher` to the status of each of `runtimes`; the status the answer carries.
async fn status_answer(watcher: &mut Rt, runtimes: &[&str]) -> Value {
    let resources: Vec<String> = runtimes.iter().map(|r| format!("{r}/status")).collect();
    let answer = watcher
        .request(
            json!({"type": "subscribe", "from": format!("{}/sm", watcher.url),
            "to": sm_endpoint(), "body": {"resources": resources}}),
        )
        .await;
    assert_eq!(answer["body"]["code"], 200, "{answer}");
    answer["body"]["value"]["status"].clone()
}

/// The answer to a `subscribe` naming `<runtime URL>/status` of a runtime whose session
/// another node holds carries that node's view: `live` while connected there, `disconnected`
/// once its connection is lost and once that node is killed (its session waits to be re-opened
/// elsewhere). A runtime with no session anywhere is `expired`.
#[tokio::test]
async fn a_subscription_gets_the_status_a_runtime_has_on_its_node() {
    let mut c = cluster(2).await;
    let bob = open(&c.nodes[1], "rt-bob").await;
    let mut watcher = open(&c.nodes[0], "rt-watcher").await;
    let nobody = format!("hyperty-runtime://{DOMAIN}/rt-nobody");
    let bob_url = bob.url.clone();
    assert_eq!(
        status_answer(&mut watcher, &[&bob_url, &nobody]).await,
        json!({ &bob_url: "live", &nobody: "expired" })
    );

    let _memory = bob.drop_connection();
    let update = watcher.recv().await;
    assert_eq!(update["body"]["value"], "disconnected", "{update}");
    assert_eq!(
        status_answer(&mut watcher, &[&bob_url]).await,
        json!({ &bob_url: "disconnected" })
    );

    c.nodes[1].kill().await;
    assert_eq!(
        status_answer(&mut watcher, &[&bob_url]).await,
        json!({ &bob_url: "disconnected" })
    );
}

/// A message refused on arrival by the receiving node (its policies, or the sending session
/// not owning `from`) is answered to the sender with 403, as a refusal on its own node would
/// be; a `response` refused there is not answered.
#[tokio::test]
async fn a_refusal_on_arrival_is_answered_to_the_sender() {
    let policies = not_to_bob_policies();
    let dir = policies.path().to_str().unwrap();
    let c = cluster_with(2, &[("RETHINK_POLICY__DIR", dir)]).await;
    let (n1, n2) = (&c.nodes[0], &c.nodes[1]);
    let mut alice = open(n1, "rt-alice").await;
    let mut bob = open(n2, "rt-bob").await;
    let a = alice.allocate(1).await.remove(0);
    let b = bob.allocate(1).await.remove(0);

    let refused = alice
        .request(json!({"id": 7, "type": "PING", "from": a, "to": b}))
        .await;
    assert_eq!(
        (
            refused["from"].as_str(),
            refused["to"].as_str(),
            refused["body"]["code"].as_u64()
        ),
        (Some(&*b), Some(&*a), Some(403)),
        "{refused}"
    );
    let why = refused["body"]["description"].as_str().unwrap_or_default();
    assert!(why.contains("not-to-bob"), "{refused}");

    // A response refused on arrival is not answered.
    alice
        .send(&json!({"id": 8, "type": "response", "from": a, "to": b, "body": {"code": 200}}))
        .await;
    wait_for_metric(n2, "rethink_cluster_refused_on_arrival_total ", 2.0).await;
    alice.expect_nothing_queued().await;
    bob.expect_nothing_queued().await;
    assert_eq!(
        metric(n2, r#"rethink_policy_denials_total{policy="not-to-bob"} "#).await,
        2.0
    );
}

/// The queue for a session on another node is bounded by `session.outbox_max_messages`
/// (counted by the forward's statement up to the bound): with its holder stopped (SIGSTOP: it
/// drains nothing), what fits is accepted, the next message is refused with 503 as a full
/// outbox on one node, and once the holder runs again the accepted ones arrive, in order, once,
/// and the refused one never.
#[tokio::test]
async fn a_full_queue_for_another_node_refuses_the_next_message() {
    let c = cluster_with(
        2,
        &[
            ("RETHINK_SESSION__OUTBOX_MAX_MESSAGES", "3"),
            // Nobody is found gone while node 2 is stopped.
            ("RETHINK_CLUSTER__MEMBERSHIP_TIMEOUT_MS", "60000"),
        ],
    )
    .await;
    let (n1, n2) = (&c.nodes[0], &c.nodes[1]);
    let mut alice = open(n1, "rt-alice").await;
    let mut bob = open(n2, "rt-bob").await;
    let a = alice.allocate(1).await.remove(0);
    let b = bob.allocate(1).await.remove(0);
    alice.ack().await;
    let ping = |id: u64| json!({"id": id, "type": "PING", "from": a, "to": b});
    alice.send(&ping(0)).await;
    assert_eq!(bob.recv().await["id"], 0);
    bob.ack().await;

    n2.signal("-STOP");
    for id in 1..=3 {
        alice.send(&ping(id)).await;
    }
    // Frames are handled in order: an error for 1..=3 would come before this answer.
    let full = alice.request(ping(4)).await;
    n2.signal("-CONT");
    assert_eq!(full["body"]["code"], 503, "{full}");
    for id in 1..=3 {
        assert_eq!(bob.recv().await["id"], id);
    }
    bob.ack().await;
    alice.send(&ping(5)).await;
    assert_eq!(bob.recv().await["id"], 5, "4 was refused, not queued");
}
