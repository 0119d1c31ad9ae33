//! End-to-end throughput of the default stub: a runtime whose messages pass through the
//! committed `default` stub (run by this host) to a local node and back.
//!
//! The bench starts the `rethink-node` executable of the same target directory (or
//! `STUBS_BENCH_NODE`, not a `RETHINK_*` name, which the node would read as a setting) on a free
//! port and a temporary data directory, and two instances of the default stub, `a` for the
//! runtime `hyperty-runtime://bench.example/a` and `b` for `.../b`, each with its own session.
//! It hands `a` N updates from `<a>/h` to `<b>/h` (at most `WINDOW` outstanding). The node routes
//! each to `b`'s session, `b` hands it to its bus (this bench's port), which answers it with a
//! `response` handed to `b`, and the node routes that back to `a`. Every message thus crosses a
//! stub twice (bus to node in one instance, node to bus in the other). (One instance for both
//! ends would not work: a frame coming back through the stub it left is dropped by the stub's
//! loop prevention.)
//!
//! Reported: messages/s (requests and responses arriving at the port, over the wall time), the
//! one-way latency of a request (handed to the stub until the stub hands it back to the bus)
//! and the round trip (request handed to the stub until its response reaches the port), p50
//! and p99.
//!
//! `cargo build --release -p rethink-node && CARGO_TARGET_DIR=... cargo bench -p rethink-stubs
//! --bench default_e2e` (`STUBS_BENCH_N` changes the number of requests, 100000 by default;
//! `STUBS_BENCH_WASM` names another build of the default stub to run instead of the committed
//! one, to compare two builds of the guest with one bench binary).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rethink_proto::Envelope;
use rethink_stubs::{
    BusPort, Failure, Host, HostConfig, LostReason, Mailbox, MemoryKv, StubMetrics, StubSpec,
};
use tokio::sync::{Notify, Semaphore};

const DEFAULT_WASM: &[u8] = include_bytes!("../guests/default/default.wasm");
const DOMAIN: &str = "bench.example";
/// Requests handed to the stub and not yet answered, at most.
const WINDOW: usize = 512;
/// Requests before the measurement (the session opens, caches warm).
const WARMUP: u64 = 2_000;

fn runtime(side: &str) -> String {
    format!("hyperty-runtime://{DOMAIN}/{side}")
}

/// The node under test, killed on drop.
struct Node {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Node {
    fn start() -> Self {
        let path = std::env::var_os("STUBS_BENCH_NODE")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                // target/release/deps/<bench> -> target/release/rethink-node
                let exe = std::env::current_exe().expect("current exe");
                exe.parent()
                    .and_then(|d| d.parent())
                    .expect("target dir")
                    .join("rethink-node")
            });
        assert!(
            path.is_file(),
            "{} not found: `cargo build --release -p rethink-node` first, or set STUBS_BENCH_NODE",
            path.display()
        );
        let dir = tempfile::tempdir().expect("data dir");
        let mut command = Command::new(&path);
        // The node reads every `RETHINK_*` variable as a setting and refuses unknown ones: none
        // of the caller's reaches it, only the ones below.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("RETHINK_") {
                command.env_remove(name);
            }
        }
        let mut child = command
            .env("RETHINK_LISTEN", "127.0.0.1:0")
            .env("RETHINK_DOMAIN", DOMAIN)
            .env("RETHINK_DATA_DIR", dir.path())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env("RETHINK_SESSION__RATE_PER_SECOND", "1000000")
            .env("RETHINK_SESSION__RATE_BURST", "1000000")
            .env("RETHINK_AUTH__ALLOW_ANONYMOUS", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the node starts");
        // Readiness is the node's own "listening" line, which names the bound address; the
        // rest of its log is drained by the same thread.
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        let (err_tx, err_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.is_some() {
                    // Kept for the panic message should the node stop before listening.
                    let _ = err_tx.send(line.clone());
                }
                if line.contains("rethink-node listening")
                    && let Some(addr) = line
                        .split_once("addr=")
                        .and_then(|(_, r)| r.split_whitespace().next())
                        .and_then(|a| a.parse::<SocketAddr>().ok())
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr);
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|e| {
                let log: Vec<String> = err_rx.try_iter().collect();
                panic!(
                    "the node did not listen within 30 s ({e}); its log:\n{}",
                    log.join("\n")
                )
            });
        Self {
            child,
            addr,
            _dir: dir,
        }
    }
}

impl Node {
    /// Waits until `n` sessions are connected (the node's `rethink_sessions_connected` gauge):
    /// a stub's `init` returns before its session is open, and a message for a session not yet
    /// open would be answered 404.
    fn wait_for_sessions(&self, n: u32) {
        use std::io::{Read, Write};
        let deadline = Instant::now() + Duration::from_secs(30);
        let want = format!("rethink_sessions_connected {n}");
        loop {
            let mut body = String::new();
            if let Ok(mut tcp) = std::net::TcpStream::connect(self.addr) {
                let _ = write!(
                    tcp,
                    "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                    self.addr
                );
                let _ = tcp.read_to_string(&mut body);
            }
            if body.lines().any(|l| l.trim() == want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the stubs' {n} sessions did not open within 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Nanoseconds since the bench's start, per request id.
#[derive(Debug)]
struct Times {
    start: Instant,
    sent: Vec<AtomicU64>,
    arrived: Vec<AtomicU64>,
    answered: Vec<AtomicU64>,
}

impl Times {
    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// The runtime's bus: answers each request the stub hands back, counts the responses.
#[derive(Debug)]
struct Port {
    times: Arc<Times>,
    /// Instance `b`'s mailbox, for the responses.
    mailbox: Mutex<Option<Mailbox>>,
    window: Arc<Semaphore>,
    done: Arc<Notify>,
    responses: AtomicU64,
    total: u64,
    failures: AtomicU64,
}

impl BusPort for Port {
    fn send(&self, _stub: &str, message: Envelope) -> Result<(), Failure> {
        let now = self.times.now();
        let Ok(id) = message.id_json().parse::<usize>() else {
            self.failures.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        };
        if message.kind().as_str() == "update" {
            self.times.arrived[id].store(now, Ordering::Relaxed);
            let answer = Envelope::parse(&format!(
                r#"{{"id":{id},"type":"response","from":"{b}/h","to":"{a}/h","body":{{"code":200}}}}"#,
                a = runtime("a"),
                b = runtime("b")
            ))
            .expect("response");
            let mailbox = self.mailbox.lock().expect("mailbox").clone();
            if mailbox.is_none_or(|m| m.deliver(answer).is_err()) {
                self.failures.fetch_add(1, Ordering::Relaxed);
            }
        } else if message
            .body_json()
            .is_some_and(|b| b.contains(r#""code":200"#))
        {
            self.times.answered[id].store(now, Ordering::Relaxed);
            self.window.add_permits(1);
            if self.responses.fetch_add(1, Ordering::AcqRel) + 1 == self.total {
                self.done.notify_one();
            }
        } else {
            eprintln!("unexpected: {}", message.json());
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
    fn add_listener(&self, _: &str, _: &str) -> Result<(), Failure> {
        Ok(())
    }
    fn remove_listener(&self, _: &str, _: &str) {}
    fn lost(&self, _: &str, message: Envelope, reason: LostReason) {
        eprintln!("lost {} ({reason:?})", message.json());
        self.failures.fetch_add(1, Ordering::Relaxed);
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1e6
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is understood.
    let n: u64 = std::env::var("STUBS_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let total = WARMUP + n;
    // The host's and the stub's warnings (a refused connection, a trap) on stderr.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let node = Node::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let host = Host::new(HostConfig::default(), StubMetrics::unregistered()).expect("host");
    let wasm = std::env::var_os("STUBS_BENCH_WASM").map_or_else(
        || DEFAULT_WASM.to_vec(),
        |path| std::fs::read(&path).expect("STUBS_BENCH_WASM is readable"),
    );
    let checked = host.check(&wasm).expect("the default stub compiles");
    let len = usize::try_from(total).expect("fits");
    let times = Arc::new(Times {
        start: Instant::now(),
        sent: (0..len).map(|_| AtomicU64::new(0)).collect(),
        arrived: (0..len).map(|_| AtomicU64::new(0)).collect(),
        answered: (0..len).map(|_| AtomicU64::new(0)).collect(),
    });
    let window = Arc::new(Semaphore::new(WINDOW));
    let done = Arc::new(Notify::new());
    let port = Arc::new(Port {
        times: Arc::clone(&times),
        mailbox: Mutex::new(None),
        window: Arc::clone(&window),
        done: Arc::clone(&done),
        responses: AtomicU64::new(0),
        total,
        failures: AtomicU64::new(0),
    });
    let spec = |side: &str| {
        let mut spec = StubSpec::new(side);
        spec.config = vec![
            ("url".into(), format!("ws://{}/ws", node.addr)),
            ("runtime".into(), runtime(side)),
            // Messages wait in the stub until the node confirms them (`sync`, one round trip
            // at a time): the queue holds the window plus what one confirmation lags behind.
            ("queue_max".into(), (8 * WINDOW).to_string()),
        ];
        // Each instance hands its bus the frames of the other side's runtime.
        spec.addresses = vec![format!("hyperty-runtime://{DOMAIN}")];
        spec.allow = vec![format!("ws://{}", node.addr)];
        spec.mailbox = 4 * WINDOW;
        spec
    };
    let (elapsed, measured_from) = rt.block_on(async {
        let start = |side: &str| {
            host.start(
                &checked,
                spec(side),
                Arc::clone(&port) as Arc<dyn BusPort>,
                Arc::new(MemoryKv::default()),
            )
        };
        let a = start("a");
        let b = start("b");
        a.started().await;
        b.started().await;
        node.wait_for_sessions(2);
        *port.mailbox.lock().expect("mailbox") = Some(b.mailbox());
        let handle = a;
        let mailbox = handle.mailbox();
        let mut begun = Instant::now();
        for id in 0..total {
            if id == WARMUP {
                // Every warm-up request answered before the clock starts.
                let all = tokio::time::timeout(
                    Duration::from_secs(30),
                    window.acquire_many(WINDOW as u32),
                )
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "the warm-up was not answered within 30 s: {} of {WARMUP} answered, {} \
                         failures",
                        port.responses.load(Ordering::Acquire),
                        port.failures.load(Ordering::Relaxed)
                    )
                })
                .expect("window");
                drop(all);
                begun = Instant::now();
            }
            tokio::time::timeout(Duration::from_secs(30), window.acquire())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "no response for 30 s: {} of {id} sent answered, {} failures",
                        port.responses.load(Ordering::Acquire),
                        port.failures.load(Ordering::Relaxed)
                    )
                })
                .expect("window")
                .forget();
            let msg = Envelope::parse(&format!(
                r#"{{"id":{id},"type":"update","from":"{a}/h","to":"{b}/h","body":{{"value":{{"n":{id}}}}}}}"#,
                a = runtime("a"),
                b = runtime("b")
            ))
            .expect("request");
            times.sent[usize::try_from(id).expect("fits")].store(times.now(), Ordering::Relaxed);
            mailbox
                .deliver(msg)
                .map_err(|(e, _)| e)
                .expect("the mailbox has room for the window");
        }
        let notified = done.notified();
        if port.responses.load(Ordering::Acquire) < total {
            tokio::time::timeout(Duration::from_secs(60), notified)
                .await
                .expect("every response within 60 s");
        }
        let elapsed = begun.elapsed();
        handle.stop().await;
        b.stop().await;
        (elapsed, usize::try_from(WARMUP).expect("fits"))
    });
    let mut one_way = Vec::with_capacity(len);
    let mut round_trip = Vec::with_capacity(len);
    for i in measured_from..len {
        let s = times.sent[i].load(Ordering::Relaxed);
        one_way.push(times.arrived[i].load(Ordering::Relaxed).saturating_sub(s));
        round_trip.push(times.answered[i].load(Ordering::Relaxed).saturating_sub(s));
    }
    one_way.sort_unstable();
    round_trip.sort_unstable();
    let messages = 2 * n;
    println!(
        "default stub end to end: {n} requests + {n} responses through the stub and the node in {:.2} s",
        elapsed.as_secs_f64()
    );
    println!(
        "  throughput: {:.0} messages/s ({:.0} round trips/s), window {WINDOW}",
        messages as f64 / elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  one way (stub -> node -> stub): p50 {:.3} ms, p99 {:.3} ms",
        percentile(&one_way, 0.50),
        percentile(&one_way, 0.99)
    );
    println!(
        "  round trip (request and response): p50 {:.3} ms, p99 {:.3} ms",
        percentile(&round_trip, 0.50),
        percentile(&round_trip, 0.99)
    );
    let failures = port.failures.load(Ordering::Relaxed);
    assert_eq!(
        failures, 0,
        "{failures} messages refused, lost or unexpected"
    );
}
