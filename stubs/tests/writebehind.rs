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
    StubMetrics, StubSpec,
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

/// A memory store whose batches wait at a gate the test opens, and that logs each commit.
/// With `blocking`, it also offers a blocking batch writer (on that runtime's handle).
#[derive(Debug)]
struct GatedKv {
    inner: Arc<MemoryKv>,
    gate: watch::Receiver<Gate>,
    log: Arc<Mutex<Vec<String>>>,
    blocking: Option<tokio::runtime::Handle>,
}

impl GatedKv {
    /// What [`KvStore::apply`] does: through the gate, then into the memory store.
    async fn gated_apply(
        inner: &MemoryKv,
        mut gate: watch::Receiver<Gate>,
        log: &Mutex<Vec<String>>,
        stub: &str,
        ops: &[KvOp],
        max_total: usize,
    ) -> Result<usize, Failure> {
        if ops.is_empty() {
            return inner.apply(stub, ops, max_total).await;
        }
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

const RUNTIME: &str = "hyperty-runtime://a.test/node/b.test";

struct Rig {
    _host: Host,
    handle: rethink_stubs::StubHandle,
    gate: watch::Sender<Gate>,
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
    let log = Arc::new(Mutex::new(Vec::new()));
    let kv = Arc::new(GatedKv {
        inner: Arc::new(MemoryKv::default()),
        gate: gate_rx,
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
    let mut rig = rig(writer).await;
    rig.handle.deliver(ping(1)).expect("delivered");
    // Time for the stub to take the message and write it, were its frame not held (the
    // stored copy `out/1` waits at the gate meanwhile): then it would be on the socket now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let early = tokio::time::timeout(Duration::ZERO, next_message(&mut rig.ws)).await;
    assert!(
        early.is_err(),
        "a frame reached the node before its write was committed: {early:?}"
    );
    rig.log
        .lock()
        .expect("the log's lock")
        .push("gate opened".into());
    rig.gate.send_replace(Gate::Commit);
    let m = next_message(&mut rig.ws).await.expect("the ping");
    assert_eq!(m["cseq"], 1, "{m}");
    rig.log
        .lock()
        .expect("the log's lock")
        .push("ping received".into());
    let log = rig.log.lock().expect("the log's lock").clone();
    let opened = log.iter().position(|l| l == "gate opened");
    let first_commit = log.iter().position(|l| l.starts_with("commit"));
    let received = log.iter().position(|l| l == "ping received");
    assert!(
        opened < first_commit && first_commit < received,
        "the frame waited for the commit: {log:?}"
    );
    drop(rig.ws);
    rig.handle.stop().await;
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
    tokio::time::sleep(Duration::from_millis(300)).await;
    rig.gate.send_replace(Gate::Fail);
    // Nothing the stub wrote after the failed writes reaches the node: the socket closes.
    let end = next_message(&mut rig.ws).await;
    assert!(
        matches!(end, Err(Some(1011)) | Err(None)),
        "no ping, the socket closed: {end:?}"
    );
    rig.handle.stop().await;
}
