//! PostgreSQL restarted under load (issue 14): two nodes of one cluster on a PostgreSQL server
//! of their own (started by this test with `scripts/pg-test-server`, its own data directory and
//! port, so the other tests on `PG_TEST_URL` are not disturbed) and the test NATS server
//! (`NATS_TEST_URL`). A runtime on each node keeps sending PINGs to the other, and a Matrix
//! client on node 1 keeps sending to a room, while the server is stopped for real
//! (`pg_ctl stop -m fast`) and started again on the same data and port.
//!
//! The promise checked: during the outage a PING is refused with a reTHINK `response` 503 (the
//! cluster's "the shared database is unreachable; retry"), a Matrix send is answered 200 or 503
//! `M_UNKNOWN` (never 500, never silence); `/healthz` says `database: down`, then `up` again;
//! the node processes recover by themselves (they are not restarted), and every PING that was
//! accepted (not refused) is delivered once, in order per sender.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::cluster::{Cluster, cluster_on, open};
use crate::support::matrix::{V3, call_at, room_path, user_id};
use crate::support::pg::PgServer;
use crate::support::{NodeProcess, get_at};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long the test waits for any one condition (the outage seen, recovery, delivery).
const DEADLINE: Duration = Duration::from_secs(60);
/// The `id` of a runtime's last request, answered once every PING before it was handled.
const BARRIER: u64 = u64::MAX >> 12;
/// A PING sent after the barrier: the last one the peer must see.
const LAST: u64 = BARRIER - 1;

/// What one runtime saw: the PINGs of its peer (their numbers, in arrival order), the answers
/// to its own PINGs (number → code), and whether its barrier was answered.
#[derive(Default, Debug)]
struct Seen {
    received: Vec<u64>,
    refused: BTreeMap<u64, u64>,
    barrier: bool,
}

/// What a runtime's reader records, and a wake-up at each change.
#[derive(Clone, Default)]
struct Watched {
    seen: Arc<Mutex<Seen>>,
    changed: Arc<Notify>,
}

impl Watched {
    /// Waits until `done` holds of what the runtime saw; panics after [`DEADLINE`].
    async fn wait_for(&self, what: &str, done: impl Fn(&Seen) -> bool) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let notified = self.changed.notified();
            if done(&self.seen.lock().unwrap()) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let s = self.seen.lock().unwrap();
                panic!(
                    "{what}: not within {DEADLINE:?}: {} PINGs received (last {:?}), {} \
                     refused, barrier {}",
                    s.received.len(),
                    s.received.last(),
                    s.refused.len(),
                    s.barrier
                );
            }
        }
    }

    fn received(&self) -> usize {
        self.seen.lock().unwrap().received.len()
    }
}

/// A runtime of the test with its connection split: a writer task (PINGs at a steady pace,
/// acknowledgements) and a reader task (records into [`Seen`]).
struct Runner {
    watched: Watched,
    sending: watch::Sender<bool>,
    /// The number of PINGs sent, once the writer has sent the barrier.
    sent: tokio::sync::oneshot::Receiver<u64>,
}

impl Runner {
    async fn start(node: &NodeProcess, name: &str, peer_node: &NodeProcess) -> (Runner, Runner) {
        let mut a = open(node, &format!("rt-{name}-a")).await;
        let mut b = open(peer_node, &format!("rt-{name}-b")).await;
        let fa = a.allocate(1).await.remove(0);
        let fb = b.allocate(1).await.remove(0);
        let (ua, ub) = (a.url.clone(), b.url.clone());
        (
            Runner::spawn(a.into_ws(), ua, fa.clone(), fb.clone()),
            Runner::spawn(b.into_ws(), ub, fb, fa),
        )
    }

    fn spawn(ws: Ws, url: String, from: String, to: String) -> Runner {
        let (sink, stream) = ws.split();
        let watched = Watched::default();
        let (acks, ack_rx) = mpsc::unbounded_channel();
        let (sending, sending_rx) = watch::channel(true);
        tokio::spawn(read(stream, watched.clone(), acks));
        let (sent_tx, sent) = tokio::sync::oneshot::channel();
        tokio::spawn(write(sink, url, from, to, ack_rx, sending_rx, sent_tx));
        Runner {
            watched,
            sending,
            sent,
        }
    }

    /// Stops the PINGs and sends the barrier (then [`LAST`]); the number of PINGs sent before.
    async fn stop(self) -> (u64, Watched) {
        self.sending.send(false).unwrap();
        let sent = self.sent.await.unwrap();
        (sent, self.watched)
    }
}

/// The writer: a PING every 5 ms while `sending`, numbered from 1, each acknowledgement the
/// reader asks for; then the barrier request (`sync`) and the [`LAST`] PING.
async fn write(
    mut sink: SplitSink<Ws, Message>,
    url: String,
    from: String,
    to: String,
    mut acks: mpsc::UnboundedReceiver<u64>,
    mut sending: watch::Receiver<bool>,
    sent: tokio::sync::oneshot::Sender<u64>,
) {
    let ping = |n: u64| json!({"id": n, "type": "PING", "from": from, "to": to, "body": {"n": n}});
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    let mut n = 0;
    loop {
        let frame = tokio::select! {
            biased;
            Some(seq) = acks.recv() => json!({"type": "ack", "from": url, "to": "mn:/session",
                "body": {"seq": seq}}),
            _ = sending.wait_for(|on| !on) => break,
            _ = tick.tick() => {
                n += 1;
                ping(n)
            }
        };
        sink.send(Message::text(frame.to_string())).await.unwrap();
    }
    let barrier = json!({"id": BARRIER, "type": "sync", "from": url, "to": "mn:/session"});
    sink.send(Message::text(barrier.to_string())).await.unwrap();
    sink.send(Message::text(ping(LAST).to_string()))
        .await
        .unwrap();
    let _ = sent.send(n);
    // Acknowledgements until the reader is done.
    while let Some(seq) = acks.recv().await {
        let ack = json!({"type": "ack", "from": url, "to": "mn:/session", "body": {"seq": seq}});
        if sink.send(Message::text(ack.to_string())).await.is_err() {
            break;
        }
    }
}

/// The reader: records every frame, asks for an acknowledgement every 20 frames.
async fn read(mut stream: SplitStream<Ws>, watched: Watched, acks: mpsc::UnboundedSender<u64>) {
    let mut frames = 0u64;
    while let Some(Ok(msg)) = stream.next().await {
        let Message::Text(text) = msg else { continue };
        let v: Value = serde_json::from_str(&text).expect("the node sends JSON");
        {
            let mut s = watched.seen.lock().unwrap();
            match (v["type"].as_str(), v["id"].as_u64()) {
                (Some("PING"), _) => s.received.push(v["body"]["n"].as_u64().expect("n")),
                (Some("response"), Some(BARRIER)) => {
                    assert_eq!(v["body"]["code"], 200, "the barrier: {v}");
                    s.barrier = true;
                }
                (Some("response"), Some(id)) => {
                    let code = v["body"]["code"].as_u64().expect("a code");
                    assert_eq!(s.refused.insert(id, code), None, "answered twice: {v}");
                }
                _ => panic!("an unexpected frame: {v}"),
            }
        }
        watched.changed.notify_waiters();
        frames += 1;
        if frames.is_multiple_of(20) {
            let _ = acks.send(v["seq"].as_u64().expect("seq"));
        }
    }
}

/// `/healthz` of `node`, as (status, body).
async fn health(node: &NodeProcess) -> (u16, String) {
    tokio::time::timeout(DEADLINE, get_at(node.addr(), "/healthz"))
        .await
        .expect("/healthz answers")
}

/// A Matrix client on `node` sending to its room every 20 ms until told to stop: every answer's
/// status and errcode, in order.
async fn matrix_sender(
    node: std::net::SocketAddr,
    stop: watch::Receiver<bool>,
) -> Vec<(u16, Option<String>)> {
    let register = format!("{V3}/register");
    let mut req = json!({"username": "carol", "password": "pw-carol"});
    let (status, uia) = call_at(
        node,
        "POST",
        &register,
        None,
        Some(req.to_string().as_bytes()),
    )
    .await;
    assert_eq!(status, 401, "{uia}");
    req["auth"] = json!({"type": "m.login.dummy", "session": uia["session"]});
    let (status, done) = call_at(
        node,
        "POST",
        &register,
        None,
        Some(req.to_string().as_bytes()),
    )
    .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["user_id"], user_id("carol"));
    let token = done["access_token"].as_str().unwrap().to_owned();
    let create = json!({"name": "outage"}).to_string();
    let (status, room) = call_at(
        node,
        "POST",
        &format!("{V3}/createRoom"),
        Some(&token),
        Some(create.as_bytes()),
    )
    .await;
    assert_eq!(status, 200, "{room}");
    let room = room["room_id"].as_str().unwrap().to_owned();
    let mut answers = Vec::new();
    let mut txn = 0;
    while !*stop.borrow() {
        txn += 1;
        let path = room_path(&room, &format!("send/m.room.message/t{txn}"));
        let body = json!({"msgtype": "m.text", "body": format!("m{txn}")}).to_string();
        let sent = call_at(node, "PUT", &path, Some(&token), Some(body.as_bytes()));
        let (status, answer) = tokio::time::timeout(DEADLINE, sent)
            .await
            .unwrap_or_else(|_| panic!("PUT send t{txn}: no answer within {DEADLINE:?}"));
        let errcode = answer["errcode"].as_str().map(str::to_owned);
        answers.push((status, errcode));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    answers
}

/// Checks one direction after recovery: every PING the sender did not see refused reached the
/// receiver once, in order, and nothing else did.
fn check_direction(label: &str, sent: u64, sender: &Seen, receiver: &Seen) {
    for (n, code) in &sender.refused {
        assert_eq!(*code, 503, "{label}: PING {n} answered {code}, not 503");
    }
    let accepted: Vec<u64> = (1..=sent)
        .filter(|n| !sender.refused.contains_key(n))
        .chain([LAST])
        .collect();
    let got = &receiver.received;
    let distinct: BTreeSet<u64> = got.iter().copied().collect();
    assert_eq!(distinct.len(), got.len(), "{label}: a PING delivered twice");
    assert!(got.is_sorted(), "{label}: PINGs out of order");
    let lost: Vec<&u64> = accepted.iter().filter(|n| !distinct.contains(n)).collect();
    assert!(
        lost.is_empty(),
        "{label}: {} accepted PINGs never delivered (of {sent} sent, {} refused): {lost:?}",
        lost.len(),
        sender.refused.len()
    );
    let refused_but_delivered: Vec<&u64> = got
        .iter()
        .filter(|n| sender.refused.contains_key(n))
        .collect();
    assert!(
        refused_but_delivered.is_empty(),
        "{label}: PINGs answered 503 and delivered all the same: {refused_but_delivered:?}"
    );
}

#[tokio::test]
async fn postgres_restarted_under_load_loses_nothing_accepted_and_the_nodes_recover() {
    let pg = PgServer::start();
    let c: Cluster = cluster_on(pg.database("rethink_restart").await, 2, &[]).await;
    let (n1, n2) = (&c.nodes[0], &c.nodes[1]);
    let up = (200, "ok\ndatabase: up\nnats: up".to_owned());
    let down = (503, "database: down\nnats: up".to_owned());
    for node in [n1, n2] {
        assert_eq!(health(node).await, up);
    }
    let (a, b) = Runner::start(n1, "x", n2).await;
    let (stop_matrix, stop_rx) = watch::channel(false);
    let matrix = tokio::spawn(matrix_sender(n1.addr(), stop_rx));

    // Load established: each side received some of the other's PINGs.
    for r in [&a, &b] {
        r.watched
            .wait_for("PINGs before the outage", |s| s.received.len() >= 50)
            .await;
    }
    eprintln!("load established; stopping PostgreSQL");
    pg.pause();
    eprintln!("PostgreSQL stopped");
    for node in [n1, n2] {
        assert_eq!(health(node).await, down);
    }
    // The outage is answered, not silent: each sender sees its PINGs refused with 503.
    for r in [&a, &b] {
        r.watched
            .wait_for("a PING refused during the outage", |s| {
                !s.refused.is_empty()
            })
            .await;
    }
    let before = [a.watched.received(), b.watched.received()];
    eprintln!("refusals seen; starting PostgreSQL");
    pg.resume();
    // The nodes recover by themselves: healthy again, and PINGs flow again.
    for node in [n1, n2] {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while health(node).await != up {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{:?} not healthy again within {DEADLINE:?}",
                node.addr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for (r, before) in [&a, &b].into_iter().zip(before) {
        r.watched
            .wait_for("PINGs after the recovery", |s| {
                s.received.len() >= before + 50
            })
            .await;
    }
    stop_matrix.send(true).unwrap();
    eprintln!("recovered; stopping the senders");

    // Every PING before the barrier was handled once its answer is here; the peer then gets
    // every accepted one, up to LAST.
    let (sent_a, seen_a) = a.stop().await;
    let (sent_b, seen_b) = b.stop().await;
    for seen in [&seen_a, &seen_b] {
        seen.wait_for("the barrier's answer and the last PING", |s| {
            s.barrier && s.received.last() == Some(&LAST)
        })
        .await;
    }
    {
        let (sa, sb) = (seen_a.seen.lock().unwrap(), seen_b.seen.lock().unwrap());
        eprintln!(
            "PINGs sent {sent_a} and {sent_b}, refused {} and {}",
            sa.refused.len(),
            sb.refused.len()
        );
        check_direction("node 1 → node 2", sent_a, &sa, &sb);
        check_direction("node 2 → node 1", sent_b, &sb, &sa);
    }
    let answers = matrix.await.unwrap();
    let refused = answers.iter().filter(|a| a.0 == 503).count();
    eprintln!("Matrix sends: {}, of which 503: {refused}", answers.len());
    let bad: Vec<_> = answers
        .iter()
        .filter(|(s, e)| !matches!((s, e.as_deref()), (200, None) | (503, Some("M_UNKNOWN"))))
        .collect();
    assert!(bad.is_empty(), "Matrix sends answered {bad:?}");
    assert_eq!(
        answers.last().map(|a| a.0),
        Some(200),
        "the last Matrix send, after the recovery"
    );
}
