//! The host with real components: load, calls, listeners, timers, kv, the version and world
//! checks, the cache, and containment (trap, deadline, memory, mailbox, breaker).

mod guests;

use std::sync::Arc;
use std::time::Duration;

use guests::Init;
use prometheus_client::registry::Registry;
use rethink_proto::Envelope;
use rethink_stubs::{
    BreakerState, BusPort, FailingKv, Failure, Host, HostConfig, KvStore, LostReason, MemoryKv,
    Refused, StubError, StubHandle, StubMetrics, StubSpec, World,
};
use tokio::sync::mpsc;

/// What the stub did, in order.
#[derive(Debug)]
enum Seen {
    Sent(Envelope),
    Listen(String),
    Lost(Envelope, LostReason),
}

#[derive(Debug)]
struct Recorder(mpsc::UnboundedSender<Seen>);

impl BusPort for Recorder {
    fn send(&self, _stub: &str, message: Envelope) -> Result<(), Failure> {
        let _ = self.0.send(Seen::Sent(message));
        Ok(())
    }
    fn add_listener(&self, _stub: &str, address: &str) -> Result<(), Failure> {
        let _ = self.0.send(Seen::Listen(address.to_owned()));
        Ok(())
    }
    fn remove_listener(&self, _stub: &str, _address: &str) {}
    fn lost(&self, _stub: &str, message: Envelope, reason: LostReason) {
        let _ = self.0.send(Seen::Lost(message, reason));
    }
}

struct Rig {
    host: Host,
    registry: Registry,
    kv: Arc<MemoryKv>,
    seen: mpsc::UnboundedReceiver<Seen>,
    port: Arc<Recorder>,
}

fn rig(config: HostConfig) -> Rig {
    let mut registry = Registry::with_prefix("rethink");
    let metrics = StubMetrics::new(&mut registry);
    let host = Host::new(config, metrics).expect("host");
    let (tx, seen) = mpsc::unbounded_channel();
    Rig {
        host,
        registry,
        kv: Arc::new(MemoryKv::default()),
        seen,
        port: Arc::new(Recorder(tx)),
    }
}

fn quick() -> HostConfig {
    HostConfig {
        max_instances: 8,
        restart_backoff: Duration::from_millis(1),
        restart_backoff_max: Duration::from_millis(5),
        breaker_threshold: 3,
        breaker_cooldown: Duration::from_secs(60),
        ..HostConfig::default()
    }
}

fn spec() -> StubSpec {
    let mut s = StubSpec::new("echo");
    s.addresses = vec!["hyperty://localhost/stub".into()];
    s.memory_bytes = 2 << 20;
    s.call_timeout = Duration::from_millis(200);
    s
}

impl Rig {
    fn start(&self, bytes: &[u8], spec: StubSpec) -> StubHandle {
        let checked = self.host.check(bytes).expect("the guest checks");
        let kv: Arc<dyn KvStore> = self.kv.clone();
        self.host.start(&checked, spec, self.port.clone(), kv)
    }

    /// Starts the echo stub (its timer after `timer_ms`) with `spec` over `kv`.
    fn start_echo_on(&self, kv: &Arc<FailingKv>, timer_ms: u64, spec: StubSpec) -> StubHandle {
        let checked = self
            .host
            .check(&guests::echo(Init::Normal { timer_ms }))
            .expect("the guest checks");
        let kv: Arc<dyn KvStore> = kv.clone();
        self.host.start(&checked, spec, self.port.clone(), kv)
    }

    /// The next event matching `f` (others are skipped); fails the test after 10 s.
    async fn until<T>(&mut self, mut f: impl FnMut(Seen) -> Option<T>) -> T {
        let wait = async {
            loop {
                let seen = self.seen.recv().await.expect("the port lives");
                if let Some(t) = f(seen) {
                    return t;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .expect("the stub did what was expected within 10 s")
    }

    async fn sent(&mut self, id: &str) -> Envelope {
        self.until(|s| match s {
            Seen::Sent(e) if e.id_json() == id => Some(e),
            _ => None,
        })
        .await
    }

    async fn lost(&mut self) -> (Envelope, LostReason) {
        self.until(|s| match s {
            Seen::Lost(e, r) => Some((e, r)),
            _ => None,
        })
        .await
    }

    fn metrics(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("encode");
        out
    }
}

fn message(id: &str, kind: &str) -> Envelope {
    Envelope::parse(&format!(
        r#"{{"id":{id},"type":"{kind}","from":"hyperty://localhost/alice","to":"hyperty://localhost/stub/x","body":{{"n":1}},"extra":{{"k":[1,2]}}}}"#
    ))
    .expect("test message")
}

fn metric(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_stub_loads_listens_and_echoes_with_every_field_kept() {
    let mut r = rig(quick());
    let bytes = guests::echo(Init::Normal { timer_ms: 60_000 });
    let checked = r.host.check(&bytes).expect("checks");
    assert_eq!(checked.world(), World::ProtocolStub);
    assert_eq!(checked.version(), "0.1.0");
    let stub = r.start(&bytes, spec());
    let address = r
        .until(|s| match s {
            Seen::Listen(a) => Some(a),
            _ => None,
        })
        .await;
    assert_eq!(address, "hyperty://localhost/stub");
    stub.deliver(message("\"m1\"", "create")).expect("taken");
    let echo = r.sent("\"m1\"").await;
    assert_eq!(echo.from(), "hyperty://localhost/stub/x");
    assert_eq!(echo.to().collect::<Vec<_>>(), ["hyperty://localhost/alice"]);
    assert_eq!(echo.kind().as_str(), "create");
    assert_eq!(echo.body_json(), Some(r#"{"n":1}"#));
    let extra: serde_json::Value = serde_json::from_str(echo.json()).expect("json");
    assert_eq!(extra["extra"], serde_json::json!({"k": [1, 2]}));
    stub.stop().await;
    let text = r.metrics();
    assert!(
        metric(&text, "rethink_stub_calls_total{stub=\"echo\"}") >= 2.0,
        "{text}"
    );
}

/// A stub that sets every timer again in each `on-timer` call: the timers that fired and wait
/// for their call count as set (`max_timers`), so the events waiting for the instance stay
/// within that bound however long it goes on (they grew by ~15 a call when a fired timer no
/// longer counted).
#[tokio::test]
async fn a_timer_storm_keeps_at_most_max_timers_events_waiting() {
    let r = rig(quick());
    let mut s = spec();
    s.max_timers = 16;
    let stub = r.start(&guests::storm(16), s);
    let calls = "rethink_stub_calls_total{stub=\"echo\"}";
    let queued = "rethink_stub_events_queued{stub=\"echo\"}";
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut most = 0.0f64;
    loop {
        let text = r.metrics();
        most = most.max(metric(&text, queued));
        if metric(&text, calls) >= 3000.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "too few calls: {text}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let text = r.metrics();
    most = most.max(metric(&text, queued));
    assert!(most <= 16.0, "{most} events waited: {text}");
    assert!(text.contains(queued), "{text}");
    stub.stop().await;
}

#[tokio::test]
async fn timers_fire_and_the_store_outlives_a_crashed_instance() {
    let mut r = rig(quick());
    let stub = r.start(&guests::echo(Init::Normal { timer_ms: 1 }), spec());
    let tick = r.sent("\"t7\"").await;
    assert_eq!(tick.from(), "hyperty://localhost/stub");
    assert_eq!(r.kv.get("echo", "boots").await.unwrap(), Some(vec![1]));
    stub.deliver(message("1", "trap")).expect("taken");
    let (lost, reason) = r.lost().await;
    assert_eq!(
        (lost.id_json(), reason, reason.code()),
        ("1", LostReason::Trap, 502)
    );
    // The restarted instance ran init again (a second boot counted) and its timer fired.
    r.sent("\"t7\"").await;
    assert_eq!(r.kv.get("echo", "boots").await.unwrap(), Some(vec![2]));
    stub.deliver(message("2", "create")).expect("taken");
    r.sent("2").await;
    stub.stop().await;
    let text = r.metrics();
    assert_eq!(
        metric(&text, "rethink_stub_restarts_total{stub=\"echo\"}"),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "rethink_stub_failures_total{stub=\"echo\",reason=\"trap\"}"
        ),
        1.0,
        "{text}"
    );
}

/// A read the store cannot answer is not taken for an absent key: the call's instance ends,
/// its message is answered 503, and the next instance that starts reads what is stored (its
/// `init` counts a second boot, not a first).
#[tokio::test]
async fn a_read_the_store_cannot_answer_ends_the_instance_with_503_and_the_next_reads_again() {
    let mut r = rig(quick());
    let kv = Arc::new(FailingKv::default());
    let stub = r.start_echo_on(&kv, 1, spec());
    r.sent("\"t7\"").await;
    assert_eq!(
        kv.memory().get("echo", "boots").await.unwrap(),
        Some(vec![1])
    );
    // The message's read fails, and so does the next instance's `init` read.
    kv.fail_reads(2);
    stub.deliver(message("1", "get")).expect("taken");
    let (lost, reason) = r.lost().await;
    assert_eq!(
        (lost.id_json(), reason, reason.code()),
        ("1", LostReason::Unavailable, 503)
    );
    // The instance after that one reads the store again.
    r.sent("\"t7\"").await;
    assert_eq!(kv.reads_to_fail(), 0);
    assert_eq!(
        kv.memory().get("echo", "boots").await.unwrap(),
        Some(vec![2])
    );
    stub.deliver(message("2", "get")).expect("taken");
    r.sent("2").await;
    stub.stop().await;
    let text = r.metrics();
    assert_eq!(
        metric(
            &text,
            "rethink_stub_failures_total{stub=\"echo\",reason=\"store\"}"
        ),
        2.0,
        "{text}"
    );
}

/// A read the store fails for another reason than an outage (500) is an ordinary failure of
/// the call: 502, counted as a trap.
#[tokio::test]
async fn a_read_the_store_fails_otherwise_is_a_trap() {
    let mut r = rig(quick());
    let kv = Arc::new(FailingKv::default());
    let stub = r.start_echo_on(&kv, 60_000, spec());
    stub.started().await;
    kv.fail_with(500);
    kv.fail_reads(1);
    stub.deliver(message("1", "get")).expect("taken");
    let (lost, reason) = r.lost().await;
    assert_eq!(
        (lost.id_json(), reason, reason.code()),
        ("1", LostReason::Trap, 502)
    );
    stub.stop().await;
}

/// With write-behind, a write the store fails to commit (here `init`'s count of its boots)
/// ends the instance at its next call that needs the store, as the store's failure: the
/// message is answered 503 and counted with reason `store`, not 502 as a stub bug.
#[tokio::test]
async fn a_write_behind_commit_the_store_fails_is_answered_503() {
    let mut r = rig(quick());
    let kv = Arc::new(FailingKv::default());
    kv.fail_writes(1);
    let mut spec = spec();
    spec.kv_write_behind = true;
    let stub = r.start_echo_on(&kv, 60_000, spec);
    stub.started().await;
    // Its read waits for the failed commit of init's write.
    stub.deliver(message("1", "get")).expect("taken");
    let (lost, reason) = r.lost().await;
    assert_eq!(
        (lost.id_json(), reason, reason.code()),
        ("1", LostReason::Unavailable, 503)
    );
    stub.stop().await;
    let text = r.metrics();
    assert_eq!(
        metric(
            &text,
            "rethink_stub_failures_total{stub=\"echo\",reason=\"store\"}"
        ),
        1.0,
        "{text}"
    );
}

#[tokio::test]
async fn a_call_past_its_deadline_is_lost_with_504_and_the_stub_comes_back() {
    let mut r = rig(quick());
    let stub = r.start(&guests::echo(Init::Normal { timer_ms: 60_000 }), spec());
    stub.deliver(message("1", "loop")).expect("taken");
    let started = std::time::Instant::now();
    let (lost, reason) = r.lost().await;
    assert_eq!(
        (lost.id_json(), reason, reason.code()),
        ("1", LostReason::Deadline, 504)
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    stub.deliver(message("2", "create")).expect("taken");
    r.sent("2").await;
    stub.stop().await;
}

#[tokio::test]
async fn a_memory_bomb_is_lost_with_502_memory() {
    let mut r = rig(quick());
    let stub = r.start(&guests::echo(Init::Normal { timer_ms: 60_000 }), spec());
    stub.deliver(message("1", "memory")).expect("taken");
    let (_, reason) = r.lost().await;
    assert_eq!((reason, reason.code()), (LostReason::Memory, 502));
    stub.deliver(message("2", "create")).expect("taken");
    r.sent("2").await;
    stub.stop().await;
    let text = r.metrics();
    assert_eq!(
        metric(
            &text,
            "rethink_stub_failures_total{stub=\"echo\",reason=\"memory\"}"
        ),
        1.0,
        "{text}"
    );
}

#[tokio::test]
async fn a_full_mailbox_refuses_and_a_forged_sender_gets_403() {
    let mut r = rig(quick());
    let mut s = spec();
    s.mailbox = 1;
    s.call_timeout = Duration::from_secs(3);
    let stub = r.start(&guests::echo(Init::Normal { timer_ms: 60_000 }), s);
    r.until(|s| matches!(s, Seen::Listen(_)).then_some(()))
        .await;
    stub.deliver(message("1", "loop")).expect("taken");
    // One message in the call at most, one in the mailbox: the third is refused at the latest.
    let mut taken = Vec::new();
    let mut refused = None;
    for i in 2..=3 {
        match stub.deliver(message(&i.to_string(), "create")) {
            Ok(()) => taken.push(i.to_string()),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    assert_eq!(refused, Some(Refused::MailboxFull));
    let (_, reason) = r.lost().await;
    assert_eq!(reason, LostReason::Deadline);
    // What the mailbox took is handled by the next instance.
    for id in &taken {
        r.sent(id).await;
    }
    stub.deliver(message("\"f\"", "forge")).expect("taken");
    let report = r
        .until(|s| match s {
            Seen::Sent(e) if e.kind().as_str() == "refused" => Some(e),
            _ => None,
        })
        .await;
    assert_eq!(report.body_json(), Some(r#"{"code":403}"#));
    stub.stop().await;
}

#[tokio::test]
async fn a_stub_that_always_traps_opens_its_breaker() {
    // Restarts after 200 ms, 400 ms: the message below is in the mailbox long before the
    // third failure opens the breaker.
    let mut r = rig(HostConfig {
        restart_backoff: Duration::from_millis(200),
        restart_backoff_max: Duration::from_secs(1),
        ..quick()
    });
    let stub = r.start(&guests::echo(Init::Trap), spec());
    stub.started().await;
    // Taken while the supervisor restarts; refused with 503 when the breaker opens.
    stub.deliver(message("1", "create")).expect("taken");
    let (lost, reason) = r.lost().await;
    assert_eq!(
        (lost.id_json(), reason, reason.code()),
        ("1", LostReason::Unavailable, 503)
    );
    assert_eq!(stub.breaker(), BreakerState::Open);
    assert_eq!(
        stub.deliver(message("2", "create")),
        Err(Refused::BreakerOpen)
    );
    let text = r.metrics();
    assert_eq!(
        metric(&text, "rethink_stub_breaker_state{stub=\"echo\"}"),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "rethink_stub_restarts_total{stub=\"echo\"}"),
        2.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "rethink_stub_failures_total{stub=\"echo\",reason=\"init\"}"
        ),
        3.0,
        "{text}"
    );
    stub.stop().await;
}

#[tokio::test]
async fn an_unknown_wit_version_is_refused_by_name() {
    let r = rig(quick());
    let err = r
        .host
        .check(&guests::echo_with_version("0.2.0"))
        .expect_err("0.2.0 is refused");
    assert!(
        matches!(&err, StubError::UnsupportedVersion { found, .. } if found == "0.2.0"),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("rethink:stub@0.2.0") && text.contains("serves rethink:stub@0.1.0"),
        "{text}"
    );
}

#[tokio::test]
async fn a_component_missing_exports_does_not_match_the_world() {
    let r = rig(quick());
    let wit = format!(
        "{}\nworld partial {{\n    import host;\n    export init: func() -> result<_, string>;\n}}\n",
        guests::WIT
    );
    let wat = r#"(module
      (import "rethink:stub/host@0.1.0" "log" (func $log (param i32 i32 i32)))
      (memory (export "memory") 1)
      (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 64))
      (func (export "init") (result i32) (call $log (i32.const 2) (i32.const 0) (i32.const 0)) (i32.const 32)))"#;
    let err = r
        .host
        .check(&guests::component(wat, &wit, "partial"))
        .expect_err("refused");
    let text = err.to_string();
    assert!(
        matches!(
            err,
            StubError::WorldMismatch {
                world: "protocol-stub",
                ..
            }
        ),
        "{text}"
    );
    assert!(text.contains("on-message"), "{text}");
    assert!(matches!(
        r.host.check(b"\0asm nonsense"),
        Err(StubError::Compile(_))
    ));
}

#[tokio::test]
async fn a_second_host_loads_the_component_precompiled_from_the_cache() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = HostConfig {
        cache_dir: Some(dir.path().to_owned()),
        ..quick()
    };
    let bytes = guests::echo(Init::Normal { timer_ms: 60_000 });
    let first = rig(config.clone()).host.check(&bytes).expect("checks");
    assert!(!first.from_cache());
    let mut r = rig(config);
    let second = r.host.check(&bytes).expect("checks");
    assert!(second.from_cache());
    assert_eq!(first.sha256(), second.sha256());
    let kv: Arc<dyn KvStore> = r.kv.clone();
    let stub = r.host.start(&second, spec(), r.port.clone(), kv);
    stub.deliver(message("5", "create")).expect("taken");
    r.sent("5").await;
    stub.stop().await;
}
