//! The host gives a stub another message only once its port is ready
//! ([`BusPort::ready`]: room in the outgoing queue for the answers): with 64 messages in the
//! mailbox and an outgoing queue of 8 nobody drains yet, the echo guest stops before the queue
//! is full instead of having its answers refused, and every message is answered exactly once
//! when the queue drains.

mod guests;

use std::sync::Arc;
use std::time::Duration;

use guests::Init;
use prometheus_client::registry::Registry;
use rethink_proto::Envelope;
use rethink_stubs::{
    BoxFuture, BusPort, Failure, Host, HostConfig, KvStore, LostReason, MemoryKv, StubMetrics,
    StubSpec,
};
use tokio::sync::mpsc;

/// The outgoing queue's size, and the room the port waits for.
const QUEUE: usize = 8;
const ROOM: usize = 2;
const MESSAGES: u64 = 64;

/// What the port saw besides the sends it queued.
#[derive(Debug, PartialEq)]
enum Signal {
    /// `ready` found too little room: the host waits.
    Waiting,
    /// A send was refused: the queue was full.
    Refused(String),
    Lost(String),
}

/// A port with a bounded outgoing queue, refusing sends (503) when it is full, like the node's.
#[derive(Debug)]
struct Bounded {
    sends: mpsc::Sender<Envelope>,
    signals: mpsc::UnboundedSender<Signal>,
}

impl BusPort for Bounded {
    fn send(&self, _stub: &str, message: Envelope) -> Result<(), Failure> {
        self.sends.try_send(message).map_err(|e| {
            let id = e.into_inner().id_json().to_owned();
            let _ = self.signals.send(Signal::Refused(id));
            Failure::new(503, "the outgoing queue is full")
        })
    }
    fn add_listener(&self, _stub: &str, _address: &str) -> Result<(), Failure> {
        Ok(())
    }
    fn remove_listener(&self, _stub: &str, _address: &str) {}
    fn lost(&self, _stub: &str, message: Envelope, _reason: LostReason) {
        let _ = self
            .signals
            .send(Signal::Lost(message.id_json().to_owned()));
    }
    fn ready<'a>(&'a self, _stub: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if self.sends.capacity() < ROOM {
                let _ = self.signals.send(Signal::Waiting);
                let _ = self.sends.reserve_many(ROOM).await;
            }
        })
    }
}

fn message(id: u64) -> Envelope {
    Envelope::parse(&format!(
        r#"{{"id":{id},"type":"create","from":"hyperty://localhost/alice","to":"hyperty://localhost/stub/x","body":{{"n":1}}}}"#
    ))
    .expect("test message")
}

#[tokio::test]
async fn a_stub_is_fed_only_while_its_answers_have_room() {
    let host = Host::new(
        HostConfig::default(),
        StubMetrics::new(&mut Registry::default()),
    )
    .expect("host");
    let (sends, mut queue) = mpsc::channel(QUEUE);
    let (signals, mut seen) = mpsc::unbounded_channel();
    let port = Arc::new(Bounded { sends, signals });
    let bytes = guests::echo(Init::Normal {
        timer_ms: 3_600_000,
    });
    let checked = host.check(&bytes).expect("the guest checks");
    let mut spec = StubSpec::new("echo");
    spec.addresses = vec!["hyperty://localhost/stub".into()];
    let kv: Arc<dyn KvStore> = Arc::new(MemoryKv::default());
    let stub = host.start(&checked, spec, port, kv);
    stub.started().await;
    for id in 1..=MESSAGES {
        stub.deliver(message(id)).expect("the mailbox takes it");
    }
    // Nobody drains the queue yet: the host waits for room before the queue is full (without
    // the wait, the ninth answer is refused).
    let first = tokio::time::timeout(Duration::from_secs(10), seen.recv())
        .await
        .expect("the host waits or a send is refused within 10 s");
    assert_eq!(first, Some(Signal::Waiting));
    // Draining the queue lets the host go on: every message answered once, in order.
    for id in 1..=MESSAGES {
        let answer = tokio::time::timeout(Duration::from_secs(10), queue.recv())
            .await
            .expect("the next answer within 10 s")
            .expect("the port lives");
        assert_eq!(answer.id_json(), id.to_string());
    }
    stub.stop().await;
    assert!(queue.try_recv().is_err(), "an answer more than once");
    while let Ok(signal) = seen.try_recv() {
        assert_eq!(signal, Signal::Waiting);
    }
}
