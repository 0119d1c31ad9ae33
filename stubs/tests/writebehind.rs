//! Write-behind (`StubSpec::kv_write_behind`) with the real `default` stub and a fake node on a
//! real socket: the stub's frames reach the node only once the key-value writes made before
//! them are committed, and none does when a commit fails. Each test runs with the writer as a
//! task (`KvStore::apply`) and as a thread of its own (`KvStore::batches`, as on SQLite).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rethink_proto::Envelope;
use rethink_stubs::catalogue::DEFAULT_STUB;
use rethink_stubs::{
    BoxFuture, BusPort, Failure, Host, HostConfig, KvBatches, KvOp, KvStore, LostReason, MemoryKv,
    NetTap, StubMetrics, StubSpec,
};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

/// How the gate lets batches through: held, committed, or failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    Held,
    Commit,
    Fail,
}

/// A memory store whose batches wait at a gate the test opens, and that logs each batch
/// reaching the gate (and counts them in `at_gate`) and each commit.
/// With `blocking`, it also offers a blocking batch writer (on that runtime's handle).
#[derive(Debug)]
struct GatedKv {
    inner: Arc<MemoryKv>,
    gate: watch::Receiver<Gate>,
    at_gate: Arc<watch::Sender<usize>>,
    log: Arc<Mutex<Vec<String>>>,
    blocking: Option<tokio::runtime::Handle>,
}

impl GatedKv {
    /// What [`KvStore::apply`] does: through the gate, then into the memory store.
    async fn gated_apply(
        inner: &MemoryKv,
        mut gate: watch::Receiver<Gate>,
        at_gate: &watch::Sender<usize>,
        log: &Mutex<Vec<String>>,
        stub: &str,
        ops: &[KvOp],
        max_total: usize,
    ) -> Result<usize, Failure> {
        if ops.is_empty() {
            return inner.apply(stub, ops, max_total).await;
        }
        log.lock()
            .expect("the log's lock")
            .push(format!("at gate {}", ops.len()));
        at_gate.send_modify(|n| *n += 1);
        let g = *gate.wait_for(|g| *g != Gate::Held).await.expect("gate");
        if g == Gate::Fail {
            return Err(Failure::new(503, "the test's store fails"));
        }
        let total = inner.apply(stub, ops, max_total).await?;
        log.lock()
            .expect("the log's lock")
            .push(format!("commit {}", ops.len()));
        Ok(total)
    }
}

/// The blocking batch writer of a [`GatedKv`] (called on the write-behind's thread).
struct GatedBatches {
    inner: Arc<MemoryKv>,
    gate: watch::Receiver<Gate>,
    at_gate: Arc<watch::Sender<usize>>,
    log: Arc<Mutex<Vec<String>>>,
    runtime: tokio::runtime::Handle,
}

impl KvBatches for GatedBatches {
    fn apply(&mut self, stub: &str, ops: &[KvOp], max_total: usize) -> Result<usize, Failure> {
        assert!(
            tokio::runtime::Handle::try_current().is_err(),
            "called on a thread of its own, not in a task"
        );
        self.runtime.block_on(GatedKv::gated_apply(
            &self.inner,
            self.gate.clone(),
            &self.at_gate,
            &self.log,
            stub,
            ops,
            max_total,
        ))
    }
}

impl KvStore for GatedKv {
    fn get<'a>(
        &'a self,
        stub: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, Failure>> {
        self.inner.get(stub, key)
    }
    fn set<'a>(
        &'a self,
        stub: &'a str,
        key: &'a str,
        value: Vec<u8>,
        max_total: usize,
    ) -> BoxFuture<'a, Result<(), Failure>> {
        self.inner.set(stub, key, value, max_total)
    }
    fn delete<'a>(&'a self, stub: &'a str, key: &'a str) -> BoxFuture<'a, Result<(), Failure>> {
        self.inner.delete(stub, key)
    }
    fn keys<'a>(
        &'a self,
        stub: &'a str,
        prefix: &'a str,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<String>, Failure>> {
        self.inner.keys(stub, prefix, limit)
    }
    fn apply<'a>(
        &'a self,
        stub: &'a str,
        ops: &'a [KvOp],
        max_total: usize,
    ) -> BoxFuture<'a, Result<usize, Failure>> {
        Box::pin(Self::gated_apply(
            &self.inner,
            self.gate.clone(),
            &self.at_gate,
            &self.log,
            stub,
            ops,
            max_total,
        ))
    }
    fn batches(&self) -> Option<Box<dyn KvBatches>> {
        let runtime = self.blocking.clone()?;
        Some(Box::new(GatedBatches {
            inner: Arc::clone(&self.inner),
            gate: self.gate.clone(),
            at_gate: Arc::clone(&self.at_gate),
            log: Arc::clone(&self.log),
            runtime,
        }))
    }
}

/// A port that records lost messages (the stub sends nothing to the bus in these tests).
#[derive(Debug, Default)]
struct Port(Mutex<Vec<(String, LostReason)>>);

impl BusPort for Port {
    fn send(&self, _stub: &str, _message: Envelope) -> Result<(), Failure> {
        Ok(())
    }
    fn add_listener(&self, _stub: &str, _address: &str) -> Result<(), Failure> {
        Ok(())
    }
    fn remove_listener(&self, _stub: &str, _address: &str) {}
    fn lost(&self, _stub: &str, message: Envelope, reason: LostReason) {
        self.0
            .lock()
            .expect("the lost messages' lock")
            .push((message.id_json().to_owned(), reason));
    }
}

/// Logs the stub's pings as the host takes them for writing (before any hold), and counts
/// them in `sent`.
#[derive(Debug)]
struct Tap {
    log: Arc<Mutex<Vec<String>>>,
    sent: watch::Sender<usize>,
}

impl NetTap for Tap {
    fn sent(&self, _socket: u64, text: &str) {
        let v: Value = serde_json::from_str(text).expect("JSON");
        if v["type"] == "ping" {
            self.log
                .lock()
                .expect("the log's lock")
                .push("ping handed to the socket".into());
            self.sent.send_modify(|n| *n += 1);
        }
    }
    fn received(&self, _socket: u64, _text: &str) {}
}

const RUNTIME: &str = "hyperty-runtime://a.test/node/b.test";

struct Rig {
    _host: Host,
    handle: rethink_stubs::StubHandle,
    gate: watch::Sender<Gate>,
    /// How many non-empty batches have reached the gate.
    at_gate: watch::Receiver<usize>,
    /// How many pings the stub has handed to its socket (held or not).
    sent: watch::Receiver<usize>,
    log: Arc<Mutex<Vec<String>>>,
    /// The fake node's socket, the `open` answered.
    ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
}

/// How the write-behind commits.
#[derive(Debug, Clone, Copy)]
enum Writer {
    /// A task calling `KvStore::apply`.
    Task,
    /// A thread of its own with `KvStore::batches`.
    Thread,
}

/// The default stub with write-behind over a held gate, connected to a fake node that has
/// answered its `open`.
async fn rig(writer: Writer) -> Rig {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mut registry = prometheus_client::registry::Registry::default();
    let host = Host::new(HostConfig::default(), StubMetrics::new(&mut registry)).expect("host");
    let checked = host.check(DEFAULT_STUB).expect("the default stub checks");
    let mut spec = StubSpec::new("xdomain-b.test");
    spec.config = vec![
        ("url".into(), format!("ws://127.0.0.1:{port}/ws")),
        ("runtime".into(), RUNTIME.into()),
    ];
    spec.allow = vec![format!("ws://127.0.0.1:{port}")];
    spec.addresses = vec!["hyperty://b.test".into()];
    spec.kv_write_behind = true;
    let (gate, gate_rx) = watch::channel(Gate::Held);
    let (at_gate, at_gate_rx) = watch::channel(0);
    let log = Arc::new(Mutex::new(Vec::new()));
    let (sent, sent_rx) = watch::channel(0);
    spec.tap = Some(Arc::new(Tap {
        log: Arc::clone(&log),
        sent,
    }));
    let kv = Arc::new(GatedKv {
        inner: Arc::new(MemoryKv::default()),
        gate: gate_rx,
        at_gate: Arc::new(at_gate),
        log: Arc::clone(&log),
        blocking: match writer {
            Writer::Task => None,
            Writer::Thread => Some(tokio::runtime::Handle::current()),
        },
    });
    let handle = host.start(&checked, spec, Arc::new(Port::default()), kv);
    let (tcp, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
        .await
        .expect("the stub connects within 10 s")
        .expect("accept");
    let mut ws = tokio_tungstenite::accept_async(tcp).await.expect("upgrade");
    let open = next_json(&mut ws).await.expect("the open frame");
    assert_eq!(open["type"], "open", "{open}");
    let answer = json!({
        "seq": 1, "id": open["id"], "type": "response", "from": "mn:/session", "to": RUNTIME,
        "body": {"code": 200, "value": {"runtimeToken": "t"}},
    });
    ws.send(Message::text(answer.to_string()))
        .await
        .expect("answer");
    Rig {
        _host: host,
        handle,
        gate,
        at_gate: at_gate_rx,
        sent: sent_rx,
        log,
        ws,
    }
}

/// The next text frame as JSON (`None` once the socket closed: the close code as `Err`).
async fn next_json(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
) -> Result<Value, Option<u16>> {
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame or the close within 10 s");
        match next {
            Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(&t).expect("JSON")),
            Some(Ok(Message::Close(frame))) => return Err(frame.map(|f| f.code.into())),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return Err(None),
        }
    }
}

fn ping(id: u64) -> Envelope {
    Envelope::parse(&format!(
        r#"{{"id":{id},"type":"ping","from":"hyperty://a.test/alice","to":"hyperty://b.test/bob","body":{{}}}}"#
    ))
    .expect("ping")
}

/// The next frame that is a message of the stub's (not a session control frame).
async fn next_message(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
) -> Result<Value, Option<u16>> {
    loop {
        let v = next_json(ws).await?;
        if v["type"] == "ping" {
            return Ok(v);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_reaches_the_node_only_once_its_stored_copy_is_committed() {
    reaches_the_node_once_committed(Writer::Task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_reaches_the_node_only_once_committed_by_the_writer_thread() {
    reaches_the_node_once_committed(Writer::Thread).await;
}

async fn reaches_the_node_once_committed(writer: Writer) {
    let Rig {
        _host,
        handle,
        gate,
        mut at_gate,
        mut sent,
        log,
        mut ws,
    } = rig(writer).await;
    // The fake node reads its socket all along and logs the ping the moment it arrives, in
    // the same log as the store's batches and commits.
    let reader = tokio::spawn({
        let log = Arc::clone(&log);
        async move {
            let m = next_message(&mut ws).await;
            if m.is_ok() {
                log.lock()
                    .expect("the log's lock")
                    .push("ping received".into());
            }
            (ws, m)
        }
    });
    handle.deliver(ping(1)).expect("delivered");
    // The stored copy `out/1` has reached the gate, and the stub has handed its frame to the
    // socket: not held, it is on its way to the node now. It then races the commit below, and
    // this test sees it only when it wins; the failed-commit tests see it always (a frame not
    // held arrives, and no close comes).
    tokio::time::timeout(Duration::from_secs(10), at_gate.wait_for(|n| *n > 0))
        .await
        .expect("a batch reaches the gate within 10 s")
        .expect("the store is alive");
    tokio::time::timeout(Duration::from_secs(10), sent.wait_for(|n| *n > 0))
        .await
        .expect("the stub writes the ping within 10 s")
        .expect("the tap is alive");
    log.lock()
        .expect("the log's lock")
        .push("gate opened".into());
    gate.send_replace(Gate::Commit);
    let (ws, m) = reader.await.expect("the fake node's reader");
    let m = m.expect("the ping");
    assert_eq!(m["cseq"], 1, "{m}");
    let log = log.lock().expect("the log's lock").clone();
    let at = log.iter().position(|l| l.starts_with("at gate"));
    let handed = log.iter().position(|l| l == "ping handed to the socket");
    let opened = log.iter().position(|l| l == "gate opened");
    let first_commit = log.iter().position(|l| l.starts_with("commit"));
    let received = log.iter().position(|l| l == "ping received");
    assert!(
        at.is_some()
            && handed.is_some()
            && at < opened
            && handed < opened
            && opened < first_commit
            && first_commit < received,
        "the frame waited for the commit: {log:?}"
    );
    drop(ws);
    handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_drops_the_frames_behind_it_and_closes_the_socket() {
    a_failed_commit_closes_the_socket(Writer::Task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_of_the_writer_thread_closes_the_socket() {
    a_failed_commit_closes_the_socket(Writer::Thread).await;
}

async fn a_failed_commit_closes_the_socket(writer: Writer) {
    let mut rig = rig(writer).await;
    rig.handle.deliver(ping(1)).expect("delivered");
    tokio::time::timeout(Duration::from_secs(10), rig.at_gate.wait_for(|n| *n > 0))
        .await
        .expect("a batch reaches the gate within 10 s")
        .expect("the store is alive");
    tokio::time::timeout(Duration::from_secs(10), rig.sent.wait_for(|n| *n > 0))
        .await
        .expect("the stub writes the ping within 10 s")
        .expect("the tap is alive");
    rig.gate.send_replace(Gate::Fail);
    // Nothing the stub wrote after the failed writes reaches the node: the socket closes.
    let end = next_message(&mut rig.ws).await;
    assert!(
        matches!(end, Err(Some(1011)) | Err(None)),
        "no ping, the socket closed: {end:?}"
    );
    rig.handle.stop().await;
}
