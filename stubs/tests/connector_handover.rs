//! A connector replaced while a Matrix event had just ended its instance: the echo bot of
//! `guests/echo-connector` (the committed component) traps on `!trap-once`, and is stopped while
//! its next instance waits its restart backoff (as a replacement stops the old version). The
//! event is not lost: `stop_handing_over` returns it, and the next version, given it, handles
//! it (it answers `recovered`, the bot's second delivery) and acknowledges it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use rethink_proto::Envelope;
use rethink_stubs::{
    BoxFuture, BusPort, EventOutcome, FailingKv, Failure, Host, HostConfig, KvStore, LostReason,
    MatrixEvent, MatrixPort, MemoryKv, StubMetrics, StubSpec,
};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// The embedder's side the test sees: what the bot sent and what it acknowledged.
#[derive(Debug)]
enum Did {
    Sent { room: String, body: String },
    Handled(u64, EventOutcome),
}

#[derive(Debug)]
struct MatrixRecorder(mpsc::UnboundedSender<Did>);

impl MatrixPort for MatrixRecorder {
    fn register_user<'a>(
        &'a self,
        _connector: &'a str,
        localpart: &'a str,
    ) -> BoxFuture<'a, Result<String, Failure>> {
        Box::pin(async move { Ok(format!("@{localpart}:localhost")) })
    }

    fn join_room<'a>(
        &'a self,
        _connector: &'a str,
        _user_id: &'a str,
        room: &'a str,
    ) -> BoxFuture<'a, Result<String, Failure>> {
        Box::pin(async move { Ok(room.to_owned()) })
    }

    fn send_event<'a>(
        &'a self,
        _connector: &'a str,
        _user_id: &'a str,
        room_id: &'a str,
        _event_type: &'a str,
        content: &'a str,
    ) -> BoxFuture<'a, Result<String, Failure>> {
        Box::pin(async move {
            let content: Value = serde_json::from_str(content).unwrap_or_default();
            let _ = self.0.send(Did::Sent {
                room: room_id.to_owned(),
                body: content["body"].as_str().unwrap_or_default().to_owned(),
            });
            Ok("$sent".to_owned())
        })
    }

    fn create_room<'a>(
        &'a self,
        _connector: &'a str,
        _user_id: &'a str,
        _alias_localpart: Option<&'a str>,
        _name: Option<&'a str>,
    ) -> BoxFuture<'a, Result<String, Failure>> {
        Box::pin(async move { Ok("!new:localhost".to_owned()) })
    }

    fn handled<'a>(
        &'a self,
        _connector: &'a str,
        position: u64,
        outcome: EventOutcome,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let _ = self.0.send(Did::Handled(position, outcome));
        })
    }
}

/// A connector has no bus traffic in this test.
#[derive(Debug)]
struct NoBus;

impl BusPort for NoBus {
    fn send(&self, _stub: &str, _message: Envelope) -> Result<(), Failure> {
        Ok(())
    }
    fn add_listener(&self, _stub: &str, _address: &str) -> Result<(), Failure> {
        Ok(())
    }
    fn remove_listener(&self, _stub: &str, _address: &str) {}
    fn lost(&self, _stub: &str, _message: Envelope, _reason: LostReason) {}
}

fn message(position: u64, body: &str) -> MatrixEvent {
    MatrixEvent {
        position,
        json: json!({"type": "m.room.message", "room_id": "!r:localhost",
            "sender": "@alice:localhost", "event_id": format!("$e{position}"),
            "content": {"msgtype": "m.text", "body": body}})
        .to_string(),
    }
}

/// The echo connector's failures counted with `reason`.
fn failures(registry: &Registry, reason: &str) -> f64 {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry).expect("encode");
    let line = format!("rethink_stub_failures_total{{stub=\"echo\",reason=\"{reason}\"}}");
    out.lines()
        .find(|l| l.starts_with(&line))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// The committed echo connector, checked by `host`.
fn echo_connector(host: &Host) -> rethink_stubs::Checked {
    let bytes = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("guests/echo-connector/echo-connector.wasm"),
    )
    .expect("the committed echo connector");
    host.check(&bytes).expect("checks")
}

/// What the bot did next, as text; fails the test after 10 s.
async fn next_did(did: &mut mpsc::UnboundedReceiver<Did>) -> String {
    let next = tokio::time::timeout(Duration::from_secs(10), did.recv())
        .await
        .expect("the bot acted in time")
        .expect("recorder");
    match next {
        Did::Sent { room, body } => format!("sent {room} {body}"),
        Did::Handled(p, outcome) => format!("handled {p} {outcome:?}"),
    }
}

#[tokio::test]
async fn an_event_that_ended_a_replaced_instance_is_handed_to_its_successor() {
    let mut registry = Registry::with_prefix("rethink");
    let metrics = StubMetrics::new(&mut registry);
    // The instance that traps is not restarted before the stop: its backoff is long.
    let host = Host::new(
        HostConfig {
            restart_backoff: Duration::from_secs(600),
            restart_backoff_max: Duration::from_secs(600),
            ..HostConfig::default()
        },
        metrics,
    )
    .expect("host");
    let checked = echo_connector(&host);
    let kv: Arc<dyn KvStore> = Arc::new(MemoryKv::default());
    let (tx, mut did) = mpsc::unbounded_channel();
    let matrix: Arc<dyn MatrixPort> = Arc::new(MatrixRecorder(tx));
    let start = || {
        let mut spec = StubSpec::new("echo");
        spec.call_timeout = Duration::from_secs(2);
        host.start_connector(
            &checked,
            spec,
            Arc::new(NoBus),
            Arc::clone(&kv),
            Arc::clone(&matrix),
        )
    };

    let old = start();
    old.started().await;
    old.matrix_events()
        .send(message(5, "!trap-once"))
        .await
        .expect("queued");
    // Queued behind it, not handled either: the instance is gone.
    old.matrix_events()
        .send(message(6, "after"))
        .await
        .expect("queued");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while failures(&registry, "trap") < 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the instance did not trap"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let left = old.stop_handing_over().await;
    let positions: Vec<u64> = left.iter().map(|e| e.position).collect();
    assert_eq!(positions, [5, 6], "handed back, in order");

    let new = start();
    new.started().await;
    for event in left {
        new.matrix_events().send(event).await.expect("queued");
    }
    let mut seen = Vec::new();
    while seen.len() < 4 {
        seen.push(next_did(&mut did).await);
    }
    assert_eq!(
        seen,
        [
            "sent !r:localhost recovered",
            "handled 5 Handled",
            "sent !r:localhost echo: after",
            "handled 6 Handled",
        ]
    );
    new.stop().await;
}

/// An event whose handling reads a store that cannot answer is given again however often that
/// happens (more than `MAX_EVENT_TRIES`), not skipped as a poisonous event: the store's failure
/// is not the event's. The bot's `!trap-once` reads the store before it traps (once).
#[tokio::test]
async fn an_event_the_store_fails_more_than_max_event_tries_times_is_not_skipped() {
    let mut registry = Registry::with_prefix("rethink");
    let metrics = StubMetrics::new(&mut registry);
    let host = Host::new(
        HostConfig {
            restart_backoff: Duration::from_millis(1),
            restart_backoff_max: Duration::from_millis(5),
            breaker_threshold: 100,
            ..HostConfig::default()
        },
        metrics,
    )
    .expect("host");
    let checked = echo_connector(&host);
    let kv = Arc::new(FailingKv::default());
    let (tx, mut did) = mpsc::unbounded_channel();
    let mut spec = StubSpec::new("echo");
    spec.call_timeout = Duration::from_secs(2);
    let stub = host.start_connector(
        &checked,
        spec,
        Arc::new(NoBus),
        Arc::clone(&kv) as Arc<dyn KvStore>,
        Arc::new(MatrixRecorder(tx)),
    );
    stub.started().await;
    let tries = rethink_stubs::MAX_EVENT_TRIES + 2;
    kv.fail_reads(tries);
    stub.matrix_events()
        .send(message(5, "!trap-once"))
        .await
        .expect("queued");
    let mut seen = Vec::new();
    while seen.len() < 2 {
        seen.push(next_did(&mut did).await);
    }
    assert_eq!(seen, ["sent !r:localhost recovered", "handled 5 Handled"]);
    assert_eq!(kv.reads_to_fail(), 0, "every failed read was retried");
    stub.stop().await;
    assert_eq!(failures(&registry, "store"), f64::from(tries));
}
