//! A live node hands a session over (issue 14, "a runtime may connect to any of them"): a
//! runtime re-opening on node 2 the session node 1 holds, node 1 alive, gets it there at once,
//! with every message accepted for it once, in order per sender. Real node programs on one
//! fresh PostgreSQL database (`PG_TEST_URL`) and one NATS server (`NATS_TEST_URL`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::cluster::{cluster_each, cluster_with, metric, open};
use crate::support::client::RtMemory;
use crate::support::{NodeProcess, Rt};

/// Long: a node in these tests is never taken for gone, so a re-open elsewhere is a hand-over.
pub(crate) const LIVE: (&str, &str) = ("RETHINK_CLUSTER__MEMBERSHIP_TIMEOUT_MS", "30000");

/// The bound on a hand-over request (`cluster::handover::HANDOVER_TIMEOUT`).
const HANDOVER_TIMEOUT: Duration = rethink_node::cluster::handover::HANDOVER_TIMEOUT;

/// Re-opens `memory`'s session on `node` (lastSeq: what the runtime read); the answer's code
/// and the frames that arrived before it.
pub(crate) async fn reopen(
    node: &NodeProcess,
    memory: &RtMemory,
    body: Value,
) -> (Rt, u64, Vec<Value>) {
    let mut rt = send_reopen(node, memory, body).await;
    let mut before = Vec::new();
    loop {
        let v = rt.recv().await;
        if v["id"] == "resume" && v["type"] == "response" {
            let code = v["body"]["code"].as_u64().unwrap();
            return (rt, code, before);
        }
        before.push(v);
    }
}

/// Sends the re-open of `memory`'s session on a new connection to `node` (id `resume`),
/// without waiting for its answer.
pub(crate) async fn send_reopen(node: &NodeProcess, memory: &RtMemory, body: Value) -> Rt {
    let (ws, _) = tokio_tungstenite::connect_async(node.ws_url())
        .await
        .unwrap();
    let mut rt = Rt::from_ws(ws, "x");
    rt.url = memory.url.clone();
    rt.token = memory.token.clone();
    rt.last_seq = memory.last_seq;
    let mut body = body;
    body["runtimeToken"] = json!(memory.token);
    body["lastSeq"] = json!(memory.last_seq);
    rt.send(
        &json!({"id": "resume", "type": "re-open", "from": memory.url,
        "to": "mn:/session", "body": body}),
    )
    .await;
    rt
}

/// What a runtime got: per sender, the numbers of its PINGs in arrival order.
#[derive(Default, Debug)]
struct Got(BTreeMap<String, Vec<u64>>);

impl Got {
    fn record(&mut self, v: &Value) {
        if v["type"] == "PING" {
            let sender = v["body"]["sender"].as_str().unwrap().to_owned();
            self.0
                .entry(sender)
                .or_default()
                .push(v["body"]["n"].as_u64().unwrap());
        }
    }

    fn count(&self) -> usize {
        self.0.values().map(Vec::len).sum()
    }
}

/// Sends numbered PINGs from `from` to `to` until `stop`, paced (load, not synchronisation);
/// then checks nothing was refused and returns how many were sent.
async fn stream(mut s: Rt, from: String, to: String, mut stop: watch::Receiver<bool>) -> u64 {
    let mut n = 0;
    loop {
        s.send(&json!({"id": n, "type": "PING", "from": from, "to": to,
            "body": {"sender": from, "n": n}}))
            .await;
        n += 1;
        tokio::select! {
            _ = stop.changed() => break,
            () = tokio::time::sleep(Duration::from_millis(2)) => {}
        }
    }
    // Answered after every PING before it was routed: all accepted, none refused.
    let refused = s.drain().await;
    assert_eq!(refused, Vec::<Value>::new(), "{from}: nothing refused");
    n
}

/// Receives until `got` holds `until` PINGs, acknowledging now and then.
async fn receive(rt: &mut Rt, got: &mut Got, until: usize) {
    while got.count() < until {
        let v = rt.recv().await;
        got.record(&v);
        if got.count().is_multiple_of(64) {
            rt.ack().await;
        }
    }
}

#[tokio::test]
async fn a_runtime_moves_between_live_nodes_under_a_steady_stream_without_loss() {
    let c = cluster_with(3, &[LIVE]).await;
    let mut r = open(&c.nodes[0], "rt-r").await;
    let h = r.allocate(1).await.remove(0);
    let (stop, stopped) = watch::channel(false);
    let mut senders = Vec::new();
    for (i, node) in c.nodes.iter().enumerate() {
        let mut s = open(node, &format!("rt-s{i}")).await;
        let from = s.allocate(1).await.remove(0);
        senders.push(tokio::spawn(stream(s, from, h.clone(), stopped.clone())));
    }
    let mut got = Got::default();
    receive(&mut r, &mut got, 60).await;

    // Dropped (TCP closed, no `close`); re-opened on node 2 while node 1 is alive; and back.
    for (hop, target) in [(1, &c.nodes[1]), (2, &c.nodes[0])] {
        let memory = r.drop_connection();
        let asked = Instant::now();
        let (again, code, before) = reopen(target, &memory, json!({})).await;
        assert_eq!(code, 200, "hop {hop}: re-open answered {code}");
        // A figure for the report (debug build), not a check.
        eprintln!(
            "hop {hop}: re-open with hand-over answered in {:?}",
            asked.elapsed()
        );
        r = again;
        before.iter().for_each(|v| got.record(v));
        let until = got.count() + 60;
        receive(&mut r, &mut got, until).await;
    }
    stop.send(true).unwrap();
    let mut sent = 0;
    for s in senders {
        sent += s.await.unwrap();
    }
    // Everything accepted arrives (messages forwarded to its node may still be moving).
    receive(&mut r, &mut got, usize::try_from(sent).unwrap()).await;
    r.expect_nothing_queued().await;
    for (sender, ns) in &got.0 {
        let want: Vec<u64> = (0..u64::try_from(ns.len()).unwrap()).collect();
        assert_eq!(ns, &want, "{sender}: every message once, in order");
    }
    assert_eq!(got.0.len(), 3, "three senders");
    for (i, node) in c.nodes.iter().enumerate().take(2) {
        assert_eq!(
            metric(node, "rethink_cluster_handed_over_sessions_total ").await,
            1.0,
            "node {}",
            i + 1
        );
    }
}

#[tokio::test]
async fn a_re_open_elsewhere_closes_the_old_connection() {
    let c = cluster_with(2, &[LIVE]).await;
    let mut r = open(&c.nodes[0], "rt-r").await;
    let h = r.allocate(1).await.remove(0);
    let mut s = open(&c.nodes[0], "rt-s").await;
    let from = s.allocate(1).await.remove(0);
    for n in 0..3 {
        s.send(&json!({"id": n, "type": "PING", "from": from, "to": h,
            "body": {"sender": from, "n": n}}))
            .await;
    }
    assert_eq!(s.drain().await, Vec::<Value>::new());
    // Not read on the old connection, which stays open: the new one gets them.
    let memory = RtMemory {
        url: r.url.clone(),
        token: r.token.clone(),
        last_seq: r.last_seq,
        next_id: 1000,
    };
    let (mut again, code, before) = reopen(&c.nodes[1], &memory, json!({})).await;
    assert_eq!(code, 200);
    let (old, close) = r.frames_until_close().await;
    assert_eq!(close, 1008, "closed as when superseded on one node");
    let mut got = Got::default();
    before.iter().for_each(|v| got.record(v));
    receive(&mut again, &mut got, 3).await;
    assert_eq!(got.0[&from], [0, 1, 2], "old connection had: {old:?}");
    // Sent on node 1 after the hand-over: through the cluster.
    s.send(&json!({"id": 3, "type": "PING", "from": from, "to": h,
        "body": {"sender": from, "n": 3}}))
        .await;
    receive(&mut again, &mut got, 4).await;
    assert_eq!(got.0[&from], [0, 1, 2, 3]);
    assert_eq!(s.drain().await, Vec::<Value>::new());
    again.expect_nothing_queued().await;
}

/// Static tokens for two users (a file: `auth.tokens` is a list).
fn two_users() -> (tempfile::TempDir, String) {
    let dir = tempfile::TempDir::new().unwrap();
    let path = dir.path().join("node.toml");
    std::fs::write(
        &path,
        "[[auth.tokens]]\ntoken = \"alice-token-0123456789\"\nsubject = \"user://example.com/alice\"\n\
         [[auth.tokens]]\ntoken = \"bob-token-0123456789ab\"\nsubject = \"user://example.com/bob\"\n",
    )
    .unwrap();
    let path = path.to_str().unwrap().to_owned();
    (dir, path)
}

#[tokio::test]
async fn a_re_open_with_another_identity_leaves_the_session_where_it_is() {
    let (_dir, config) = two_users();
    let c = cluster_with(2, &[LIVE, ("RETHINK_CONFIG", &config)]).await;
    let (ws, _) = tokio_tungstenite::connect_async(c.nodes[0].ws_url())
        .await
        .unwrap();
    let mut r = Rt::from_ws(ws, "rt-r");
    let opened = r
        .open_session(json!({"token": "alice-token-0123456789"}))
        .await;
    assert_eq!(opened["body"]["code"], 200, "{opened}");
    let h = r.allocate(1).await.remove(0);
    let mut s = open(&c.nodes[1], "rt-s").await;
    let from = s.allocate(1).await.remove(0);

    let memory = RtMemory {
        url: r.url.clone(),
        token: r.token.clone(),
        last_seq: r.last_seq,
        next_id: 1000,
    };
    for body in [json!({"token": "bob-token-0123456789ab"}), json!({})] {
        let (_, code, before) = reopen(&c.nodes[1], &memory, body).await;
        assert_eq!((code, before), (401, Vec::new()));
    }
    // Still on node 1, connected there, receiving from node 2.
    s.send(&json!({"id": 0, "type": "PING", "from": from, "to": h,
        "body": {"sender": from, "n": 0}}))
        .await;
    let got = r.recv().await;
    assert_eq!(
        (got["type"].as_str(), &got["body"]["n"]),
        (Some("PING"), &json!(0))
    );
    assert_eq!(s.drain().await, Vec::<Value>::new());
    assert_eq!(
        metric(&c.nodes[1], "rethink_cluster_handed_over_sessions_total ").await,
        0.0
    );
    // Her own token moves it.
    let memory = RtMemory {
        last_seq: r.last_seq,
        ..memory
    };
    let (_, code, _) = reopen(
        &c.nodes[1],
        &memory,
        json!({"token": "alice-token-0123456789"}),
    )
    .await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn a_stopped_holder_is_refused_in_bounded_time_and_nothing_is_lost() {
    let c = cluster_with(2, &[LIVE]).await;
    let mut r = open(&c.nodes[0], "rt-r").await;
    let h = r.allocate(1).await.remove(0);
    let mut s = open(&c.nodes[1], "rt-s").await;
    let from = s.allocate(1).await.remove(0);
    let memory = r.drop_connection();

    c.nodes[0].signal("-STOP");
    // Accepted meanwhile (queued in the shared database for R).
    for n in 0..5 {
        s.send(&json!({"id": n, "type": "PING", "from": from, "to": h,
            "body": {"sender": from, "n": n}}))
            .await;
    }
    assert_eq!(s.drain().await, Vec::<Value>::new());
    let started = Instant::now();
    let (_, code, before) = reopen(&c.nodes[1], &memory, json!({})).await;
    let took = started.elapsed();
    c.nodes[0].signal("-CONT");
    assert_eq!((code, before), (503, Vec::new()));
    assert!(
        took >= HANDOVER_TIMEOUT && took < HANDOVER_TIMEOUT + Duration::from_secs(2),
        "refused after {took:?}"
    );

    let (mut r, code, before) = reopen(&c.nodes[1], &memory, json!({})).await;
    assert_eq!(code, 200);
    let mut got = Got::default();
    before.iter().for_each(|v| got.record(v));
    receive(&mut r, &mut got, 5).await;
    assert_eq!(got.0[&from], [0, 1, 2, 3, 4]);
    r.expect_nothing_queued().await;
}

/// The next status update of `runtime` that `sub` receives.
async fn status(sub: &mut Rt, runtime: &str) -> String {
    let v = sub.recv().await;
    assert_eq!(
        (v["type"].as_str(), v["to"].as_str()),
        (Some("update"), Some(&*format!("{runtime}/status"))),
        "{v}"
    );
    v["body"]["value"].as_str().unwrap().to_owned()
}

/// A runtime on node 1 whose status a runtime on node 2 subscribed to, its connection then
/// dropped (`disconnected` seen): the subscriber, the runtime's URL and what it remembers.
async fn dropped_and_watched(c: &crate::cluster::Cluster) -> (Rt, String, RtMemory) {
    let r = open(&c.nodes[0], "rt-r").await;
    let mut sub = open(&c.nodes[1], "rt-sub").await;
    let runtime = r.url.clone();
    sub.subscribe(&[&format!("{runtime}/status")]).await;
    let memory = r.drop_connection();
    assert_eq!(status(&mut sub, &runtime).await, "disconnected");
    (sub, runtime, memory)
}

#[tokio::test]
async fn status_notices_reach_subscribers_on_other_nodes() {
    let c = cluster_with(2, &[LIVE]).await;
    // Dropped and re-opened on its node.
    let (mut sub, runtime, memory) = dropped_and_watched(&c).await;
    let (r, code, _) = reopen(&c.nodes[0], &memory, json!({})).await;
    assert_eq!(code, 200);
    assert_eq!(status(&mut sub, &runtime).await, "live");

    // Re-opened on node 2 with the old connection open: as a disconnect and a re-open.
    let memory = RtMemory {
        url: r.url.clone(),
        token: r.token.clone(),
        last_seq: r.last_seq,
        next_id: 1000,
    };
    let (_r2, code, _) = reopen(&c.nodes[1], &memory, json!({})).await;
    assert_eq!(code, 200);
    assert_eq!(status(&mut sub, &runtime).await, "disconnected");
    assert_eq!(status(&mut sub, &runtime).await, "live");
    sub.expect_nothing_queued().await;
    drop(r);
}

#[tokio::test]
async fn a_session_released_after_the_asking_node_gave_up_expires_there() {
    // Node 1 gives the row 3 s after it is asked (tests only): node 2 stops waiting at 2 s.
    // Heartbeats every 2 s; node 1 stays alive.
    let db = crate::store_postgres::fresh_database().await;
    let c = cluster_each(db, 2, |i| {
        let mut env = vec![
            (
                "RETHINK_CLUSTER__MEMBERSHIP_TIMEOUT_MS".to_owned(),
                "6000".to_owned(),
            ),
            (
                "RETHINK_SESSION__RESUME_WINDOW_SECS".to_owned(),
                "2".to_owned(),
            ),
        ];
        if i == 1 {
            env.push((
                "RETHINK_CLUSTER__TEST_RELEASE_DELAY_MS".to_owned(),
                "3000".to_owned(),
            ));
        }
        env
    })
    .await;
    let (mut sub, runtime, memory) = dropped_and_watched(&c).await;

    let (_, code, _) = reopen(&c.nodes[1], &memory, json!({})).await;
    assert_eq!(code, 503, "node 2 gave up");
    // Node 1 released the row to node 2 all the same: node 2 takes the session in, and with
    // no runtime re-opening it, it expires there after its resume window.
    let v = sub
        .try_recv(Duration::from_secs(30))
        .await
        .expect("the session expires on node 2");
    assert_eq!(
        (v["to"].as_str(), v["body"]["value"].as_str()),
        (Some(&*format!("{runtime}/status")), Some("expired")),
        "{v}"
    );
}
