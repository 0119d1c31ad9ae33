//! Delivery guarantees across domains (issue 13), with the nodes as real processes
//! ([`NodeProcess`]: a real SIGTERM, a real SIGKILL): messages for a domain whose node is down
//! (also when A starts: its stub cannot be fetched yet) wait in A's persisted per-domain queue
//! (the gateway outbox in bus.db, then the stub's store) and arrive in order, once, when it is
//! back, also across a SIGKILL of A or of B (B commits the `cseq` it handled with the message's
//! frames); a message not
//! delivered within `cross_domain.delivery_timeout_secs` is answered 504, one beyond
//! `cross_domain.queue_limit` 503, both naming the domain; a domain that is down does not hold
//! up another.
//!
//! "Once" is checked with a marker: after the messages under test the sender sends one more,
//! and the recipient must get exactly the expected messages before it (a duplicate would come
//! before the marker: the path keeps order).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_tungstenite::connect_async;

use crate::crossdomain::{A, B, FIRST, free_addr};
use crate::support::Rt;
use crate::support::process::NodeProcess;

const C: &str = "c.test";
/// Messages sent while the other node is down.
const N: u64 = 40;

/// A node of `domain` as a process on `addr`, knowing `peers`, with extra settings.
pub(crate) async fn spawn(
    dir: &Path,
    domain: &str,
    addr: SocketAddr,
    peers: &[(&str, SocketAddr)],
    extra: &[(&str, &str)],
) -> NodeProcess {
    let peers = peers
        .iter()
        .map(|(d, a)| format!("\"{d}\"=\"http://{a}\""))
        .collect::<Vec<_>>()
        .join(",");
    let peers = format!("{{{peers}}}");
    let listen = addr.to_string();
    let mut env = vec![
        ("RETHINK_DOMAIN", domain),
        ("RETHINK_MATRIX__SERVER_NAME", domain),
        ("RETHINK_LISTEN", listen.as_str()),
        ("RETHINK_CROSS_DOMAIN__ENABLED", "true"),
        ("RETHINK_CROSS_DOMAIN__PEERS", peers.as_str()),
    ];
    env.extend_from_slice(extra);
    NodeProcess::spawn(dir, &env).await
}

/// A runtime of `domain` on the node at `node`, with one hyperty address.
pub(crate) async fn hyperty(node: &NodeProcess, domain: &str, name: &str) -> (Rt, String) {
    let (ws, _) = connect_async(node.ws_url()).await.expect("connect");
    crate::crossdomain::open_with_hyperty(Rt::from_ws(ws, name), domain, name).await
}

/// Re-opens `rt`'s session on a new connection to `node` (after the node restarted).
pub(crate) async fn reopen(node: &NodeProcess, rt: Rt) -> Rt {
    let (rt, replayed) = reopen_replaying(node, rt).await;
    assert_eq!(replayed, Vec::<Value>::new(), "nothing was owed");
    rt
}

/// Like [`reopen`], with the frames the node replays (what it owed and was not acknowledged,
/// which comes before the answer to `re-open`).
async fn reopen_replaying(node: &NodeProcess, rt: Rt) -> (Rt, Vec<Value>) {
    let memory = rt.drop_connection();
    let (ws, _) = connect_async(node.ws_url()).await.expect("connect");
    let mut rt = Rt::from_ws(ws, "x");
    rt.url = memory.url.clone();
    let id = rt.fresh_id();
    rt.send(
        &json!({"id": id, "type": "re-open", "from": memory.url, "to": "mn:/session",
        "body": {"runtimeToken": memory.token, "lastSeq": memory.last_seq}}),
    )
    .await;
    let mut replayed = Vec::new();
    let resp = loop {
        let f = rt.recv().await;
        if f["type"] == "response" && f["id"] == id {
            break f;
        }
        replayed.push(f);
    };
    assert_eq!(resp["body"]["code"], 200, "re-open: {resp}");
    rt.token = memory.token;
    (rt, replayed)
}

/// Sends `PING`s numbered `range` from `from` to `to`, then shows they were accepted: a request
/// to the node answered next (a refusal of any of them would come before it).
pub(crate) async fn send_accepted(
    rt: &mut Rt,
    from: &str,
    to: &str,
    range: std::ops::RangeInclusive<u64>,
) {
    for n in range {
        rt.send(&json!({"id": n, "type": "PING", "from": from, "to": to, "body": {"n": n}}))
            .await;
    }
    let domain = rt.url.split('/').nth(2).unwrap_or("").to_owned();
    let alloc = format!("{}/registry/allocation", rt.url);
    let resp = rt
        .request(json!({"type": "create", "from": alloc,
            "to": format!("domain://msg-node.{domain}/address-allocation"),
            "body": {"scheme": "hyperty", "value": {"number": 1}}}))
        .await;
    assert_eq!(resp["body"]["code"], 200, "{resp}");
}

/// The numbers of the `PING`s `rt` gets, up to and without `marker` (acknowledging as it goes);
/// on a timeout, panics with what came and the log of `sender` (the node the PINGs left).
pub(crate) async fn pings_until(rt: &mut Rt, marker: u64, sender: &mut NodeProcess) -> Vec<u64> {
    let mut got = Vec::new();
    loop {
        let Some(f) = rt.try_recv(FIRST).await else {
            let log = sender.drain_log().await.join("\n");
            panic!("no PING {marker} within {FIRST:?}; got {got:?}; the sender's log:\n{log}");
        };
        assert_eq!(f["type"], "PING", "{f}");
        let n = f["body"]["n"].as_u64().expect("n");
        if got.len() % 16 == 15 {
            rt.ack().await;
        }
        if n == marker {
            rt.ack().await;
            return got;
        }
        got.push(n);
    }
}

fn dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b_stopped_while_a_sends_then_restarted_gets_everything_in_order_once() {
    let (da, db) = (dir(), dir());
    let (aa, ab) = (free_addr(), free_addr());
    let mut b = spawn(db.path(), B, ab, &[(A, aa)], &[]).await;
    let mut a = spawn(da.path(), A, aa, &[(B, ab)], &[]).await;
    let (mut alice, ha) = hyperty(&a, A, "rt-alice").await;
    let (mut bob, hb) = hyperty(&b, B, "rt-bob").await;
    send_accepted(&mut alice, &ha, &hb, 0..=0).await;
    assert_eq!(pings_until(&mut bob, 0, &mut a).await, Vec::<u64>::new());

    // B stops (SIGTERM); A keeps accepting messages for it.
    b.terminate();
    assert!(b.wait_exit(FIRST).await.is_some(), "B stops");
    send_accepted(&mut alice, &ha, &hb, 1..=N).await;

    let b = b.restart().await;
    let mut bob = reopen(&b, bob).await;
    send_accepted(&mut alice, &ha, &hb, N + 1..=N + 1).await;
    let got = pings_until(&mut bob, N + 1, &mut a).await;
    assert_eq!(got, (1..=N).collect::<Vec<_>>(), "in order, once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_with_its_queue_delivers_it_after_the_restart() {
    let (da, db) = (dir(), dir());
    let (aa, ab) = (free_addr(), free_addr());
    let mut b = spawn(db.path(), B, ab, &[(A, aa)], &[]).await;
    let mut a = spawn(da.path(), A, aa, &[(B, ab)], &[]).await;
    let (mut alice, ha) = hyperty(&a, A, "rt-alice").await;
    let (mut bob, hb) = hyperty(&b, B, "rt-bob").await;
    send_accepted(&mut alice, &ha, &hb, 0..=0).await;
    assert_eq!(pings_until(&mut bob, 0, &mut a).await, Vec::<u64>::new());

    // B down: A queues; then A is killed with everything still queued.
    b.terminate();
    assert!(b.wait_exit(FIRST).await.is_some(), "B stops");
    send_accepted(&mut alice, &ha, &hb, 1..=N).await;
    a.kill().await;

    let b = b.restart().await;
    let mut a = a.restart().await;
    let mut bob = reopen(&b, bob).await;
    let mut alice = reopen(&a, alice).await;
    send_accepted(&mut alice, &ha, &hb, N + 1..=N + 1).await;
    let got = pings_until(&mut bob, N + 1, &mut a).await;
    assert_eq!(got, (1..=N).collect::<Vec<_>>(), "in order, once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undelivered_messages_get_504_after_the_timeout_and_503_beyond_the_limit() {
    let (da, db) = (dir(), dir());
    let (aa, ab) = (free_addr(), free_addr());
    let mut b = spawn(db.path(), B, ab, &[(A, aa)], &[]).await;
    let limits = [
        ("RETHINK_CROSS_DOMAIN__DELIVERY_TIMEOUT_SECS", "2"),
        ("RETHINK_CROSS_DOMAIN__QUEUE_LIMIT", "3"),
    ];
    let mut a = spawn(da.path(), A, aa, &[(B, ab)], &limits).await;
    let (mut alice, ha) = hyperty(&a, A, "rt-alice").await;
    let (mut bob, hb) = hyperty(&b, B, "rt-bob").await;
    send_accepted(&mut alice, &ha, &hb, 0..=0).await;
    assert_eq!(pings_until(&mut bob, 0, &mut a).await, Vec::<u64>::new());
    // Bob's answer reaches alice after B confirmed PING 0 to A's stub (B handles the stub's
    // frames in order): 0 does not wait in A's queue when B stops.
    bob.send(&json!({"id": 0, "type": "response", "from": hb, "to": ha, "body": {"code": 200}}))
        .await;
    let r = alice.recv().await;
    assert_eq!(
        (r["id"].as_u64(), r["body"]["code"].as_u64()),
        (Some(0), Some(200)),
        "{r}"
    );
    b.terminate();
    assert!(b.wait_exit(FIRST).await.is_some(), "B stops");
    five_beyond_a_queue_of_three(&mut alice, &ha, &hb).await;
}

/// Five messages for a domain whose node is down, with room for three: 4 and 5 are refused at
/// once (503), 1 to 3 are answered 504 once they waited the 2 s, all naming the domain.
async fn five_beyond_a_queue_of_three(alice: &mut Rt, ha: &str, hb: &str) {
    for n in 1..=5u64 {
        alice
            .send(&json!({"id": n, "type": "PING", "from": ha, "to": hb}))
            .await;
    }
    let mut answers = Vec::new();
    for _ in 1..=5 {
        let r = alice
            .try_recv(Duration::from_secs(30))
            .await
            .expect("every message is answered");
        assert_eq!(r["type"], "response", "{r}");
        let desc = r["body"]["description"].as_str().unwrap_or("").to_owned();
        assert!(desc.contains(B), "the answer names the domain: {r}");
        answers.push((
            r["id"].as_u64().expect("id"),
            r["body"]["code"].as_u64().expect("code"),
        ));
    }
    assert_eq!(
        answers,
        vec![(4, 503), (5, 503), (1, 504), (2, 504), (3, 504)],
        "503 at once beyond the limit, then 504 in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b_killed_while_a_sends_handles_each_message_once() {
    // Enough that A's stub is still sending when B dies.
    const M: u64 = 300;
    let (da, db) = (dir(), dir());
    let (aa, ab) = (free_addr(), free_addr());
    let mut b = spawn(db.path(), B, ab, &[(A, aa)], &[]).await;
    let mut a = spawn(da.path(), A, aa, &[(B, ab)], &[]).await;
    let (mut alice, ha) = hyperty(&a, A, "rt-alice").await;
    let (mut bob, hb) = hyperty(&b, B, "rt-bob").await;
    send_accepted(&mut alice, &ha, &hb, 0..=0).await;
    assert_eq!(pings_until(&mut bob, 0, &mut a).await, Vec::<u64>::new());

    // B is killed once bob got a quarter of them: what B handled is what bob got or gets
    // after the restart (its outbox), and A's stub sends again what B did not confirm.
    send_accepted(&mut alice, &ha, &hb, 1..=M).await;
    let mut got = Vec::new();
    while got.len() < (M / 4) as usize {
        let f = bob.try_recv(FIRST).await.expect("a PING before the kill");
        assert_eq!(f["type"], "PING", "{f}");
        got.push(f["body"]["n"].as_u64().expect("n"));
    }
    b.kill().await;

    let b = b.restart().await;
    let (mut bob, replayed) = reopen_replaying(&b, bob).await;
    for f in replayed {
        assert_eq!(f["type"], "PING", "{f}");
        got.push(f["body"]["n"].as_u64().expect("n"));
    }
    send_accepted(&mut alice, &ha, &hb, M + 1..=M + 1).await;
    got.extend(pings_until(&mut bob, M + 1, &mut a).await);
    assert_eq!(
        got,
        (1..=M).collect::<Vec<_>>(),
        "nothing lost, nothing twice"
    );
}

/// Settings of A that retry a domain that is down every second at most.
const RETRY_FAST: (&str, &str) = ("RETHINK_CROSS_DOMAIN__RETRY_SECS", "1");

/// B's node, with `bob` allocated on it, stopped: a domain A has never reached.
async fn b_with_bob_then_stopped(
    db: &Path,
    ab: SocketAddr,
    aa: SocketAddr,
) -> (NodeProcess, Rt, String) {
    let mut b = spawn(db, B, ab, &[(A, aa)], &[]).await;
    let (bob, hb) = hyperty(&b, B, "rt-bob").await;
    b.terminate();
    assert!(b.wait_exit(FIRST).await.is_some(), "B stops");
    (b, bob, hb)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_down_when_a_starts_gets_what_waited_in_order_once_it_is_up() {
    let (da, db) = (dir(), dir());
    let (aa, ab) = (free_addr(), free_addr());
    let (b, bob, hb) = b_with_bob_then_stopped(db.path(), ab, aa).await;
    // A starts while B is down: B's stub cannot be fetched, A keeps what is sent to B.
    let mut a = spawn(da.path(), A, aa, &[(B, ab)], &[RETRY_FAST]).await;
    let (mut alice, ha) = hyperty(&a, A, "rt-alice").await;
    send_accepted(&mut alice, &ha, &hb, 1..=N).await;
    a.wait_for_log("its messages wait for it").await;

    let b = b.restart().await;
    let mut bob = reopen(&b, bob).await;
    send_accepted(&mut alice, &ha, &hb, N + 1..=N + 1).await;
    let got = pings_until(&mut bob, N + 1, &mut a).await;
    assert_eq!(got, (1..=N).collect::<Vec<_>>(), "in order, once");
    // Nothing was refused meanwhile: bob's answer to the marker is the next thing alice gets.
    bob.send(
        &json!({"id": N + 1, "type": "response", "from": hb, "to": ha, "body": {"code": 200}}),
    )
    .await;
    let r = alice.recv().await;
    assert_eq!(
        (r["id"].as_u64(), r["body"]["code"].as_u64()),
        (Some(N + 1), Some(200)),
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_down_when_a_starts_gets_504_after_the_timeout_and_503_beyond_the_limit() {
    let (da, db) = (dir(), dir());
    let (aa, ab) = (free_addr(), free_addr());
    let (_b, _bob, hb) = b_with_bob_then_stopped(db.path(), ab, aa).await;
    let settings = [
        RETRY_FAST,
        ("RETHINK_CROSS_DOMAIN__DELIVERY_TIMEOUT_SECS", "2"),
        ("RETHINK_CROSS_DOMAIN__QUEUE_LIMIT", "3"),
    ];
    let a = spawn(da.path(), A, aa, &[(B, ab)], &settings).await;
    let (mut alice, ha) = hyperty(&a, A, "rt-alice").await;
    five_beyond_a_queue_of_three(&mut alice, &ha, &hb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_that_is_down_does_not_hold_up_another() {
    let (da, db, dc) = (dir(), dir(), dir());
    let (aa, ab, ac) = (free_addr(), free_addr(), free_addr());
    let mut b = spawn(db.path(), B, ab, &[(A, aa)], &[]).await;
    let c = spawn(dc.path(), C, ac, &[(A, aa)], &[]).await;
    let mut a = spawn(da.path(), A, aa, &[(B, ab), (C, ac)], &[]).await;
    let (mut alice, ha) = hyperty(&a, A, "rt-alice").await;
    let (mut bob, hb) = hyperty(&b, B, "rt-bob").await;
    let (mut carol, hc) = hyperty(&c, C, "rt-carol").await;
    send_accepted(&mut alice, &ha, &hb, 0..=0).await;
    assert_eq!(pings_until(&mut bob, 0, &mut a).await, Vec::<u64>::new());

    b.terminate();
    assert!(b.wait_exit(FIRST).await.is_some(), "B stops");
    // B's queue fills while C is reached.
    send_accepted(&mut alice, &ha, &hb, 1..=N).await;
    send_accepted(&mut alice, &ha, &hc, 1..=N).await;
    let got = pings_until(&mut carol, N, &mut a).await;
    assert_eq!(
        got,
        (1..N).collect::<Vec<_>>(),
        "C gets its messages while B is down"
    );

    let b = b.restart().await;
    let mut bob = reopen(&b, bob).await;
    send_accepted(&mut alice, &ha, &hb, N + 1..=N + 1).await;
    assert_eq!(
        pings_until(&mut bob, N + 1, &mut a).await,
        (1..=N).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stub_that_reconnects_after_the_proof_ttl_still_authenticates() {
    // B's challenges, so A's proofs for B, live 2 s.
    const TTL: &str = "2";
    let ttl = [("RETHINK_CROSS_DOMAIN__PROOF_TTL_SECS", TTL)];
    let (da, db) = (dir(), dir());
    let (aa, ab) = (free_addr(), free_addr());
    let mut b = spawn(db.path(), B, ab, &[(A, aa)], &ttl).await;
    let mut a = spawn(da.path(), A, aa, &[(B, ab)], &ttl).await;
    let (mut alice, ha) = hyperty(&a, A, "rt-alice").await;
    let (mut bob, hb) = hyperty(&b, B, "rt-bob").await;
    send_accepted(&mut alice, &ha, &hb, 0..=0).await;
    assert_eq!(pings_until(&mut bob, 0, &mut a).await, Vec::<u64>::new());

    // B goes away until the proof A's stub opened with has expired (the wait is the condition
    // under test, not a synchronisation), then comes back: A's stub must reconnect with a
    // proof B still accepts.
    b.terminate();
    assert!(b.wait_exit(FIRST).await.is_some(), "B stops");
    send_accepted(&mut alice, &ha, &hb, 1..=3).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let b = b.restart().await;
    let mut bob = reopen(&b, bob).await;
    send_accepted(&mut alice, &ha, &hb, 4..=4).await;
    assert_eq!(
        pings_until(&mut bob, 4, &mut a).await,
        vec![1, 2, 3],
        "in order, once, after the reconnect"
    );
}

#[tokio::test]
async fn a_message_written_just_before_a_lost_connection_is_answered_504_if_b_stays_away() {
    // A's stub writes PING 1 to B, but the connection has stopped carrying what it writes (the
    // relay swallows it); then it breaks, and B stays unreachable: the `re-open` that would
    // say whether B handled it is never answered. PING 1 is answered 504 all the same.
    let (a, b, relay) = crate::crossdomain::b_behind_a_relay(
        |c| c.cross_domain.delivery_timeout = Duration::from_secs(2),
        |_| {},
    )
    .await;
    let (mut alice, ha) = crate::crossdomain::hyperty(&a, A, "rt-alice").await;
    let (mut bob, hb) = crate::crossdomain::hyperty(&b, B, "rt-bob").await;
    alice
        .send(&json!({"id": 0, "type": "PING", "from": ha, "to": hb}))
        .await;
    assert_eq!(bob.try_recv(FIRST).await.expect("PING 0")["type"], "PING");
    // Bob's answer reaches alice after B confirmed PING 0 to A's stub (B handles the stub's
    // frames in order): 0 is not waiting when the connection goes.
    bob.send(&json!({"id": 0, "type": "response", "from": hb, "to": ha, "body": {"code": 200}}))
        .await;
    let r = alice.recv().await;
    assert_eq!(r["body"]["code"], 200, "{r}");

    let mut swallowed = relay.swallow();
    alice
        .send(&json!({"id": 1, "type": "PING", "from": ha, "to": hb}))
        .await;
    // The stub wrote it (B never reads it).
    tokio::time::timeout(FIRST, swallowed.wait_for(|n| *n > 0))
        .await
        .expect("the stub writes PING 1")
        .expect("relay");
    relay.set_down(true);
    let r = alice
        .try_recv(Duration::from_secs(30))
        .await
        .expect("PING 1 is answered");
    assert_eq!(
        (r["id"].as_u64(), r["body"]["code"].as_u64()),
        (Some(1), Some(504)),
        "{r}"
    );
    let desc = r["body"]["description"].as_str().unwrap_or("");
    assert!(desc.contains(B), "names the domain: {r}");
    bob.expect_nothing_queued().await;
}
