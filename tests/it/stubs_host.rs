//! Protocol stubs run by the node (`[stubs.run.*]`, crate rethink-stubs): a stub is reached over
//! the bus and answers through it; a stub that loops, exhausts its memory or traps costs only
//! itself (its senders get 504 / 502 naming it, the breaker opens), while other runtimes keep
//! their latency; a stub may not send from an address it was not given (403), and the policy's
//! denial of what it sends comes back to it as a response. The stubs are WAT guests built at
//! test time (`stubs/tests/guests/echo.wat`; `guests` is shared with the other stub tests).

#[path = "../../stubs/tests/guests/mod.rs"]
pub(crate) mod guests;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use guests::Init;
use rethink_node::config::{StubRunConfig, StubSource, StubsConfig};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::support::{DOMAIN, Rt, TestNode, get, metric, wait_for_metric};

pub(crate) fn address(name: &str) -> String {
    format!("hyperty://{DOMAIN}/{name}")
}

/// A stub instance of the echo guest (written to `dir`), owning `hyperty://<domain>/<name>`.
fn echo_stub(dir: &Path, name: &str, init: Init) -> StubRunConfig {
    let path = dir.join(format!("{name}.wasm"));
    std::fs::write(&path, guests::echo_in(init, DOMAIN)).unwrap();
    StubRunConfig {
        name: name.into(),
        source: StubSource::Component(path),
        addresses: vec![address(name)],
        allow: Vec::new(),
        config: vec![("listen".into(), address(name))],
        memory_bytes: 16 << 20,
        call_timeout: Duration::from_millis(200),
        mailbox: 64,
        patterns: Vec::new(),
        connector: false,
    }
}

fn stubs(dir: &Path, run: Vec<StubRunConfig>) -> StubsConfig {
    StubsConfig {
        dir: None,
        watch_interval: Duration::from_secs(1),
        cache_dir: PathBuf::from(dir).join("cache"),
        run,
    }
}

/// The response to a message of id `id` that `rt` sent, skipping nothing else.
async fn response_to(rt: &mut Rt, id: u64) -> Value {
    let v = rt.recv().await;
    assert_eq!(v["type"], "response", "{v}");
    assert_eq!(v["id"], id, "{v}");
    v
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at]
}

/// Latencies of `n` messages from `a` to `b`, one at a time, sorted.
async fn latencies(a: &mut Rt, b: &mut Rt, from: &str, to: &str, n: u64) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n {
        let started = Instant::now();
        a.send(&json!({"id": i, "type": "ping", "from": from, "to": to}))
            .await;
        let got = b.recv().await;
        out.push(started.elapsed());
        assert_eq!(got["id"], i);
    }
    out.sort();
    out
}

#[tokio::test]
async fn runaway_stubs_cost_only_themselves() {
    let dir = TempDir::new().unwrap();
    let run = vec![
        echo_stub(dir.path(), "echo", Init::Normal { timer_ms: 600_000 }),
        echo_stub(dir.path(), "runaway", Init::Normal { timer_ms: 600_000 }),
        StubRunConfig {
            memory_bytes: 2 << 20,
            ..echo_stub(dir.path(), "bomb", Init::Normal { timer_ms: 600_000 })
        },
        echo_stub(dir.path(), "crasher", Init::Trap),
    ];
    let config = stubs(dir.path(), run);
    let node = TestNode::spawn_with(|c| c.stubs = config).await;
    let mut alice = Rt::open(&node, "alice").await;
    let me = alice.url.clone();

    // Reached over the bus, answered through it.
    alice
        .send(
            &json!({"id": 1, "type": "ping", "from": me, "to": address("echo"), "body": {"n": 1}}),
        )
        .await;
    let echoed = alice.recv().await;
    assert_eq!(
        (
            &echoed["type"],
            &echoed["from"],
            &echoed["to"],
            &echoed["body"]
        ),
        (
            &json!("ping"),
            &json!(address("echo")),
            &json!(me),
            &json!({"n": 1})
        ),
        "{echoed}"
    );

    // Quiet: two runtimes' latency.
    let (mut bob, mut carol) = (Rt::open(&node, "bob").await, Rt::open(&node, "carol").await);
    let (b, c) = (bob.url.clone(), carol.url.clone());
    let quiet = latencies(&mut bob, &mut carol, &b, &c, 200).await;

    // Attack: a flood of calls that loop until their deadline, while bob and carol talk.
    let mut mallory = Rt::open(&node, "mallory").await;
    let m = mallory.url.clone();
    // Fewer than the breaker threshold (5): each is answered 504, none 503.
    const LOOPS: u64 = 4;
    for i in 0..LOOPS {
        mallory
            .send(&json!({"id": i, "type": "loop", "from": m, "to": address("runaway")}))
            .await;
    }
    let attacked = latencies(&mut bob, &mut carol, &b, &c, 200).await;
    for i in 0..LOOPS {
        let r = response_to(&mut mallory, i).await;
        assert_eq!(r["body"]["code"], 504, "{r}");
        let text = r["body"]["description"].as_str().unwrap();
        assert!(
            text.contains("stub runaway") && text.contains("deadline"),
            "{text}"
        );
        assert_eq!(r["from"], json!(address("runaway")));
    }
    let (q50, q99) = (percentile(&quiet, 0.5), percentile(&quiet, 0.99));
    let (a50, a99) = (percentile(&attacked, 0.5), percentile(&attacked, 0.99));
    println!("latency quiet p50 {q50:?} p99 {q99:?}; under a runaway stub p50 {a50:?} p99 {a99:?}");
    assert!(
        a99 <= q99 * 2 + Duration::from_millis(20),
        "p99 under attack {a99:?} vs quiet {q99:?}"
    );

    // A memory bomb and a trap: 502 naming the stub; the stub is back for the next message.
    alice
        .send(&json!({"id": 2, "type": "memory", "from": me, "to": address("bomb")}))
        .await;
    let r = response_to(&mut alice, 2).await;
    assert_eq!(r["body"]["code"], 502, "{r}");
    assert!(
        r["body"]["description"]
            .as_str()
            .unwrap()
            .contains("stub bomb: the stub exhausted its memory"),
        "{r}"
    );
    alice
        .send(&json!({"id": 3, "type": "trap", "from": me, "to": address("echo")}))
        .await;
    let r = response_to(&mut alice, 3).await;
    assert_eq!(r["body"]["code"], 502, "{r}");
    assert!(
        r["body"]["description"]
            .as_str()
            .unwrap()
            .contains("stub echo: the stub trapped"),
        "{r}"
    );
    alice
        .send(&json!({"id": 4, "type": "ping", "from": me, "to": address("echo")}))
        .await;
    assert_eq!(alice.recv().await["id"], 4);

    // A stub that traps in every init: its breaker opens and its messages are answered 503.
    wait_for_metric(&node, "rethink_stub_breaker_state{stub=\"crasher\"}", 1.0).await;
    alice
        .send(&json!({"id": 5, "type": "ping", "from": me, "to": address("crasher")}))
        .await;
    let r = response_to(&mut alice, 5).await;
    assert_eq!(r["body"]["code"], 503, "{r}");
    assert!(
        r["body"]["description"]
            .as_str()
            .unwrap()
            .contains("stub crasher"),
        "{r}"
    );

    let (_, text) = get(&node, "/metrics").await;
    for (name, at_least) in [
        (
            "rethink_stub_failures_total{stub=\"runaway\",reason=\"deadline\"}",
            LOOPS as f64,
        ),
        (
            "rethink_stub_restarts_total{stub=\"runaway\"}",
            (LOOPS - 1) as f64,
        ),
        (
            "rethink_stub_failures_total{stub=\"bomb\",reason=\"memory\"}",
            1.0,
        ),
        (
            "rethink_stub_failures_total{stub=\"echo\",reason=\"trap\"}",
            1.0,
        ),
        (
            "rethink_stub_failures_total{stub=\"crasher\",reason=\"init\"}",
            5.0,
        ),
    ] {
        assert!(metric(&text, name) >= at_least, "{name} in\n{text}");
    }
    assert_eq!(
        metric(&text, "rethink_stub_breaker_state{stub=\"echo\"}"),
        0.0
    );
}

#[tokio::test]
async fn a_stub_may_not_forge_and_policy_denials_come_back_to_it() {
    let dir = TempDir::new().unwrap();
    let policies = crate::support::policy_dir(
        r#"@id("allow-all")
permit(principal, action, resource);

@id("no-secrets-from-stubs")
forbid(principal, action, resource)
when { context.transport == "stub" && context.message_type == "secret" };
"#,
    );
    let config = stubs(
        dir.path(),
        vec![echo_stub(
            dir.path(),
            "echo",
            Init::Normal { timer_ms: 600_000 },
        )],
    );
    let node = TestNode::spawn_with(|c| {
        c.stubs = config;
        c.policy.dir = Some(policies.path().to_path_buf());
    })
    .await;
    let mut alice = Rt::open(&node, "alice").await;
    let mut observer = Rt::open(&node, "observer").await;
    let me = alice.url.clone();

    // The guest sends the message back from alice's own address: the host refuses (403) and the
    // guest reports the code it got.
    alice
        .send(&json!({"id": 1, "type": "forge", "from": me, "to": address("echo")}))
        .await;
    let report = alice.recv().await;
    assert_eq!(report["type"], "refused", "{report}");
    assert_eq!(report["body"], json!({"code": 403}), "{report}");

    // The echo of a "secret" is denied by policy: the 403 reaches the stub as a response, which
    // it forwards to the observer; alice gets nothing.
    alice
        .send(&json!({"id": 2, "type": "secret", "from": me, "to": address("echo")}))
        .await;
    let forwarded = observer.recv().await;
    assert_eq!(forwarded["type"], "report", "{forwarded}");
    assert_eq!(forwarded["id"], 2);
    assert_eq!(forwarded["body"]["code"], 403, "{forwarded}");
    let text = forwarded["body"]["description"].as_str().unwrap();
    assert!(text.contains("no-secrets-from-stubs"), "{text}");
    alice.expect_nothing_queued().await;
}
