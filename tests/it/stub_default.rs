//! The default stub (the committed `stubs/guests/default/default.wasm`), run by the real stub
//! host (`rethink_stubs::Host`) against a real node on loopback: the stub-side runtime is this
//! test, through a [`BusPort`] whose `send` lands on a channel and the stub handle's `deliver`;
//! the other side is a plain WebSocket client of the node ([`Rt`]).
//!
//! The stub's WebSocket goes through a TCP relay in the test ([`Relay`]), so that the test can
//! really drop that connection (both TCP streams closed) while messages flow both ways, and the
//! plain client's connection stays up.

use std::sync::Arc;

use rethink_proto::Envelope;
use rethink_stubs::{
    BusPort, Failure, Host, HostConfig, LostReason, MemoryKv, StubHandle, StubMetrics, StubSpec,
};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::support::relay::Relay;
use crate::support::{DOMAIN, Rt, TestNode};

/// The committed default stub.
const DEFAULT_WASM: &[u8] = include_bytes!("../../stubs/guests/default/default.wasm");

/// What the stub hands to its bus, as the test sees it.
#[derive(Debug)]
enum FromStub {
    Sent(Value),
    Lost(Value, String),
}

/// The bus of the stub-side runtime: every `bus.send` arrives on a channel.
#[derive(Debug)]
struct ChannelPort {
    tx: mpsc::UnboundedSender<FromStub>,
}

impl BusPort for ChannelPort {
    fn send(&self, _stub: &str, message: Envelope) -> Result<(), Failure> {
        let v: Value = serde_json::from_str(message.json()).expect("envelopes are JSON");
        let _ = self.tx.send(FromStub::Sent(v));
        Ok(())
    }
    fn add_listener(&self, _stub: &str, _address: &str) -> Result<(), Failure> {
        Ok(())
    }
    fn remove_listener(&self, _stub: &str, _address: &str) {}
    fn lost(&self, _stub: &str, message: Envelope, reason: LostReason) {
        let v: Value = serde_json::from_str(message.json()).expect("envelopes are JSON");
        let _ = self.tx.send(FromStub::Lost(v, format!("{reason:?}")));
    }
}

/// The stub-side runtime's URL and the hyperty behind the stub.
fn stub_runtime() -> String {
    format!("hyperty-runtime://{DOMAIN}/stubrt")
}
fn stub_hyperty() -> String {
    format!("{}/h", stub_runtime())
}

/// Starts the committed default stub for `url`; what it sends to its bus arrives on the
/// returned channel.
async fn start_stub(
    host: &Host,
    url: &str,
    origin: &str,
) -> (StubHandle, mpsc::UnboundedReceiver<FromStub>) {
    start_stub_with(host, url, origin, StubSpec::new("default")).await
}

/// [`start_stub`] with the limits of `spec`.
async fn start_stub_with(
    host: &Host,
    url: &str,
    origin: &str,
    mut spec: StubSpec,
) -> (StubHandle, mpsc::UnboundedReceiver<FromStub>) {
    let checked = host.check(DEFAULT_WASM).expect("the default stub compiles");
    spec.config = vec![
        ("url".into(), url.into()),
        ("runtime".into(), stub_runtime()),
    ];
    // The stub hands the bus frames from either runtime of the test's domain.
    spec.addresses = vec![format!("hyperty-runtime://{DOMAIN}")];
    spec.allow = vec![origin.into()];
    spec.mailbox = 4096;
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = host.start(
        &checked,
        spec,
        Arc::new(ChannelPort { tx }),
        Arc::new(MemoryKv::default()),
    );
    handle.started().await;
    (handle, rx)
}

fn host() -> Host {
    Host::new(HostConfig::default(), StubMetrics::unregistered()).expect("host")
}

/// The next thing the stub hands to its bus; panics on a lost message or after 5 s.
async fn next_sent(rx: &mut mpsc::UnboundedReceiver<FromStub>) -> Value {
    let got = tokio::time::timeout(crate::support::client::RECV_TIMEOUT, rx.recv())
        .await
        .expect("the stub hands a message to its bus in time")
        .expect("the port lives");
    match got {
        FromStub::Sent(v) => v,
        FromStub::Lost(v, reason) => panic!("the stub lost {v} ({reason})"),
    }
}

fn envelope(v: &Value) -> Envelope {
    Envelope::parse(&v.to_string()).expect("a valid envelope")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_stub_carries_messages_and_responses_both_ways() {
    let node = TestNode::spawn().await;
    let host = host();
    let origin = format!("ws://{}", node.addr());
    let (stub, mut bus) = start_stub(&host, &node.ws_url(), &origin).await;
    let mut plain = Rt::open(&node, "plain").await;
    let plain_h = format!("{}/h", plain.url);

    // Stub side to the plain client: the first message also opens the stub's session.
    stub.deliver(envelope(
        &json!({"id": 1, "type": "update", "from": stub_hyperty(),
        "to": plain_h, "body": {"value": "hello"}}),
    ))
    .unwrap();
    let got = plain.recv().await;
    assert_eq!(got["type"], "update", "{got}");
    assert_eq!(got["from"], stub_hyperty());
    assert_eq!(got["body"]["value"], "hello");
    // ... and its response back to the stub side, through the stub.
    plain
        .send(
            &json!({"id": 1, "type": "response", "from": plain_h, "to": stub_hyperty(),
            "body": {"code": 200}}),
        )
        .await;
    let resp = next_sent(&mut bus).await;
    assert_eq!(resp["type"], "response", "{resp}");
    assert_eq!(resp["id"], 1);
    assert_eq!(resp["from"], plain_h);
    assert_eq!(resp["body"]["code"], 200);
    assert_eq!(
        resp["body"]["via"],
        format!("{}/protostub/default", stub_runtime()),
        "frames from the node carry the stub's URL in body.via"
    );
    assert!(resp.get("seq").is_none(), "seq stays on the wire: {resp}");

    // Plain client to the stub side, and the stub side's response.
    plain
        .send(
            &json!({"id": "q7", "type": "read", "from": plain_h, "to": stub_hyperty(),
            "body": {"resource": "x"}}),
        )
        .await;
    let req = next_sent(&mut bus).await;
    assert_eq!(req["type"], "read", "{req}");
    assert_eq!(req["id"], "q7");
    assert_eq!(req["to"], stub_hyperty());
    stub.deliver(envelope(
        &json!({"id": "q7", "type": "response", "from": stub_hyperty(),
        "to": plain_h, "body": {"code": 200, "value": {"x": 1}}}),
    ))
    .unwrap();
    let got = plain.recv().await;
    assert_eq!(got["type"], "response", "{got}");
    assert_eq!(got["id"], "q7");
    assert_eq!(got["body"]["value"]["x"], 1);

    // A message the node refuses is answered to the stub side, through the stub.
    stub.deliver(envelope(
        &json!({"id": 9, "type": "update", "from": stub_hyperty(),
        "to": format!("hyperty-runtime://{DOMAIN}/nobody/h")}),
    ))
    .unwrap();
    let refusal = next_sent(&mut bus).await;
    assert_eq!(refusal["type"], "response", "{refusal}");
    assert_eq!(refusal["id"], 9);
    assert_eq!(refusal["body"]["code"], 404, "{refusal}");

    stub.stop().await;
}

/// How many messages each side sends in the loss test.
const N: u64 = 400;

/// Checks the stub side's messages as the plain client got them: in order, each `n` in `0..N`
/// at least once, and a duplicate only as the start of a replay after a cut (the stub writes
/// its unconfirmed messages again, in order, after a resume): at most `cuts` replays, each a
/// contiguous run of numbers already seen that continues with new ones.
fn check_in_order_with_replays(got: &[u64], cuts: usize) {
    let mut max: Option<u64> = None;
    let mut replays = 0;
    let mut prev: Option<u64> = None;
    for &n in got {
        let next_new = max.map_or(0, |m| m + 1);
        if n == next_new {
            max = Some(n);
        } else {
            let continues = prev.is_some_and(|p| n == p + 1);
            assert!(
                max.is_some_and(|m| n <= m),
                "message {n} arrived before {next_new}: a gap ({got:?})"
            );
            if !continues {
                replays += 1;
            }
        }
        prev = Some(n);
    }
    assert_eq!(max, Some(N - 1), "every message arrived: {got:?}");
    assert!(
        replays <= cuts,
        "{replays} replays for {cuts} cuts: duplicates outside a resume ({got:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_stub_connection_resumes_without_loss_in_either_direction() {
    let node = TestNode::spawn().await;
    let relay = Relay::start(node.addr()).await;
    let (relay_url, relay_origin) = (
        format!("ws://{}/ws", relay.addr()),
        format!("ws://{}", relay.addr()),
    );
    let host = host();
    let (stub, mut bus) = start_stub(&host, &relay_url, &relay_origin).await;
    let mut plain = Rt::open(&node, "plain").await;
    let plain_h = format!("{}/h", plain.url);

    // The stub side's N updates are all handed to the stub at once: they flow while the
    // plain client sends its own N.
    for n in 0..N {
        stub.deliver(envelope(
            &json!({"id": n, "type": "update", "from": stub_hyperty(),
            "to": plain_h, "body": {"n": n}}),
        ))
        .unwrap();
    }

    // The plain client: sends one of its N per frame it reads (from the first one on), answers
    // every update, acks.
    let (half_tx, half_rx) = oneshot::channel::<()>();
    let ph = plain_h.clone();
    let plain_task = tokio::spawn(async move {
        let mut half = Some(half_tx);
        let mut got = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        let mut answered = std::collections::BTreeSet::new();
        let mut sent = 0;
        let mut frames = 0u64;
        while seen.len() < N as usize || answered.len() < N as usize {
            // The first frame (an update through the node) shows the stub's session is open:
            // before it, the stub's address may not exist yet (404).
            if sent < N && frames > 0 {
                plain
                    .send(
                        &json!({"id": format!("p{sent}"), "type": "update", "from": ph,
                        "to": stub_hyperty(), "body": {"m": sent}}),
                    )
                    .await;
                sent += 1;
            }
            let f = plain.recv().await;
            frames += 1;
            if frames.is_multiple_of(32) {
                plain.ack().await;
            }
            match f["type"].as_str() {
                Some("update") => {
                    let n = f["body"]["n"].as_u64().expect("n");
                    got.push(n);
                    seen.insert(n);
                    plain
                        .send(&json!({"id": f["id"], "type": "response", "from": ph,
                            "to": stub_hyperty(), "body": {"code": 200}}))
                        .await;
                    if seen.len() == N as usize / 2
                        && let Some(h) = half.take()
                    {
                        let _ = h.send(());
                    }
                }
                Some("response") => {
                    assert_eq!(f["body"]["code"], 200, "{f}");
                    answered.insert(f["id"].as_str().expect("id").to_owned());
                }
                _ => panic!("unexpected frame {f}"),
            }
        }
        plain.ack().await;
        got
    });

    // The stub side: records the plain client's updates, answers them, counts responses.
    let mut half_rx = Some(half_rx);
    let mut cuts = 0;
    let mut from_plain = Vec::new();
    let mut responses = std::collections::BTreeSet::new();
    while from_plain.len() < N as usize || responses.len() < N as usize {
        let v = tokio::select! {
            v = next_sent(&mut bus) => v,
            _ = async { half_rx.as_mut().unwrap().await }, if half_rx.is_some() => {
                half_rx = None;
                // Half of the stub side's messages are through and the plain client's flow:
                // drop the stub's connection.
                assert_eq!(relay.cut(), 1, "the stub's one connection is cut");
                cuts += 1;
                continue;
            }
        };
        match v["type"].as_str() {
            Some("update") => {
                let m = v["body"]["m"].as_u64().expect("m");
                from_plain.push(m);
                stub.deliver(envelope(&json!({"id": v["id"], "type": "response",
                    "from": stub_hyperty(), "to": plain_h, "body": {"code": 200}})))
                    .unwrap();
            }
            Some("response") => {
                assert_eq!(v["body"]["code"], 200, "{v}");
                responses.insert(v["id"].as_u64().expect("id"));
            }
            _ => panic!("unexpected message from the stub {v}"),
        }
    }
    let to_plain = plain_task.await.expect("the plain client finishes");
    assert_eq!(cuts, 1, "the connection was cut while messages flowed");

    // Node to stub side: the node replays after the last frame the stub received, so every
    // message arrives once, in order.
    assert_eq!(
        from_plain,
        (0..N).collect::<Vec<_>>(),
        "the plain client's messages reach the stub side in order, once"
    );
    // Stub side to node: the stub sends its unconfirmed messages again after the resume, and
    // the node drops those it had handled (their `cseq`): in order, once.
    check_in_order_with_replays(&to_plain, cuts);
    assert_eq!(
        to_plain,
        (0..N).collect::<Vec<_>>(),
        "the stub side's messages reach the plain client in order, once"
    );

    stub.stop().await;
}

/// The stub's instance traps (a message larger than its memory) while messages it wrote to
/// the node are not yet confirmed and others wait in its mailbox: the host restarts it, `init`
/// finds the stored messages, resumes the session and sends them again; the node drops what
/// it had handled. The plain client gets every message once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapped_stub_instance_loses_nothing_and_duplicates_nothing() {
    let node = TestNode::spawn().await;
    let host = host();
    let origin = format!("ws://{}", node.addr());
    let mut spec = StubSpec::new("default");
    spec.memory_bytes = 8 << 20;
    let (stub, mut bus) = start_stub_with(&host, &node.ws_url(), &origin, spec).await;
    let mut plain = Rt::open(&node, "plain").await;
    let plain_h = format!("{}/h", plain.url);
    let update = |n: u64| {
        envelope(&json!({"id": n, "type": "update", "from": stub_hyperty(),
            "to": plain_h, "body": {"n": n}}))
    };
    // 12 MiB of body: the instance runs out of its 8 MiB taking it, and traps. Made before
    // the updates are delivered, so that it follows them at once (some still unconfirmed).
    let bomb = envelope(
        &json!({"id": "bomb", "type": "update", "from": stub_hyperty(),
        "to": plain_h, "body": {"x": "y".repeat(12 << 20)}}),
    );
    // The session is open once the first message is through.
    stub.deliver(update(0)).unwrap();
    assert_eq!(plain.recv().await["body"]["n"], 0);
    for n in 1..N / 2 {
        stub.deliver(update(n)).unwrap();
    }
    stub.deliver(bomb).unwrap();
    for n in N / 2..=N {
        stub.deliver(update(n)).unwrap();
    }
    // Every update up to N (the last one, after which nothing more is sent): any duplicate
    // would arrive before it (the stub writes in order).
    let mut got = vec![0];
    let mut frames = 1u64;
    loop {
        let f = plain.recv().await;
        frames += 1;
        if frames.is_multiple_of(32) {
            plain.ack().await;
        }
        let n = f["body"]["n"]
            .as_u64()
            .unwrap_or_else(|| panic!("an update: {f}"));
        if n == N {
            break;
        }
        got.push(n);
    }
    plain.ack().await;
    assert_eq!(got, (0..N).collect::<Vec<_>>(), "in order, once");
    // The bomb was the instance's end: reported lost (the trap), not delivered.
    let lost = tokio::time::timeout(crate::support::client::RECV_TIMEOUT, bus.recv())
        .await
        .expect("the trap is reported")
        .expect("the port lives");
    assert!(
        matches!(&lost, FromStub::Lost(v, _) if v["id"] == "bomb"),
        "{lost:?}"
    );
    stub.stop().await;
}

/// The node's side of `cseq`, with plain clients: a message sent again with a `cseq` already
/// handled is dropped (the recipient gets it once), `sync` and `re-open` answer the highest.
#[tokio::test]
async fn the_node_handles_a_resent_cseq_once_and_reports_the_highest() {
    let node = TestNode::spawn().await;
    let mut rx = Rt::open(&node, "rx").await;
    let mut tx = Rt::open(&node, "tx").await;
    let (from, to) = (format!("{}/h", tx.url), format!("{}/h", rx.url));
    for (n, cseq) in [(1, 1), (1, 1), (2, 2), (1, 1), (3, 3)] {
        tx.send(&json!({"id": n, "type": "update", "from": from, "to": to,
            "cseq": cseq, "body": {"n": n}}))
            .await;
    }
    let url = tx.url.clone();
    let synced = tx
        .request(json!({"type": "sync", "from": url, "to": "mn:/session"}))
        .await;
    assert_eq!(synced["body"]["code"], 200, "{synced}");
    assert_eq!(synced["body"]["value"]["cseq"], 3, "{synced}");
    let got: Vec<Value> = [rx.recv().await, rx.recv().await, rx.recv().await]
        .iter()
        .map(|f| f["body"]["n"].clone())
        .collect();
    assert_eq!(
        got,
        vec![json!(1), json!(2), json!(3)],
        "each once, in order"
    );
    // The re-open answer says the same, and 3 sent again on the new connection is dropped.
    let (mut tx, reopen) = tx.drop_connection().resume(&node).await;
    let answer = tx.recv_response(&reopen["id"]).await;
    assert_eq!(answer["body"]["value"]["cseq"], 3, "{answer}");
    for (n, cseq) in [(3, 3), (4, 4)] {
        tx.send(&json!({"id": n, "type": "update", "from": from, "to": to,
            "cseq": cseq, "body": {"n": n}}))
            .await;
    }
    assert_eq!(rx.recv().await["body"]["n"], 4, "3 is not handled twice");
}

#[test]
fn the_replay_check_refuses_gaps_and_stray_duplicates() {
    let all: Vec<u64> = (0..N).collect();
    check_in_order_with_replays(&all, 0);
    let mut replayed: Vec<u64> = (0..200).collect();
    replayed.extend(150..N);
    check_in_order_with_replays(&replayed, 1);
    let gap: Vec<u64> = (0..N).filter(|&n| n != 7).collect();
    assert!(std::panic::catch_unwind(|| check_in_order_with_replays(&gap, 1)).is_err());
    assert!(std::panic::catch_unwind(|| check_in_order_with_replays(&replayed, 0)).is_err());
    let mut reordered = all.clone();
    reordered.swap(3, 4);
    assert!(std::panic::catch_unwind(|| check_in_order_with_replays(&reordered, 1)).is_err());
}
