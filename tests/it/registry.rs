//! The domain registry connector (`[connectors.registry]`, the component of
//! `stubs/guests/registry` run by the node), reached by real WebSocket runtimes: register,
//! search, keep-alive and expiry; `/registration` notices when the registering runtime connects,
//! disconnects and expires; the registry survives a killed node (a SIGKILL of the node program),
//! after which the registrations of runtimes not back are `disconnected`; a runtime registers
//! only what was allocated to it (403 from the node); and a connector (the probe component, as
//! a `[connectors.*]` entry) may send only from its namespace.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use rethink_node::config::RawConnector;
use serde_json::{Value, json};

use crate::support::client::RECV_TIMEOUT;
use crate::support::connectors::{ask, hyperty, registry, with_connectors, with_registry};
use crate::support::{DOMAIN, NodeProcess, Rt, TestNode, allocation_endpoint};

/// The next frame, which must be a status notice for `url`; returns its status.
async fn notice(rt: &mut Rt, url: &str) -> String {
    let v = rt.recv().await;
    assert_eq!(
        (&v["type"], &v["from"], &v["to"]),
        (
            &json!("update"),
            &json!(registry()),
            &json!(format!("{url}/registration"))
        ),
        "{v}"
    );
    assert_eq!(v["body"]["resource"], url, "{v}");
    v["body"]["value"].as_str().expect("a status").to_owned()
}

#[tokio::test]
async fn register_search_keep_alive_and_expiry() {
    let node = TestNode::spawn_with(with_registry).await;
    let mut alice = Rt::open(&node, "alice").await;
    let mut bob = Rt::open(&node, "bob").await;
    let h = alice.allocate(1).await.remove(0);
    bob.subscribe(&[&format!("{h}/registration")]).await;

    let created = Instant::now();
    assert_eq!(ask(&mut alice, "create", hyperty(&h, 2)).await["code"], 200);
    assert_eq!(notice(&mut bob, &h).await, "live");

    // Lookups: by user, by URL, by criteria; misses are 404.
    let by_user = ask(
        &mut bob,
        "read",
        json!({"resource": "user://idp.example/alice"}),
    )
    .await;
    assert_eq!(by_user["code"], 200, "{by_user}");
    let record = &by_user["value"][&h];
    assert_eq!(
        (&record["hypertyURL"], &record["status"], &record["runtime"]),
        (&json!(h), &json!("live"), &json!(alice.url)),
        "{by_user}"
    );
    assert_eq!(
        ask(&mut bob, "read", json!({"resource": h})).await["code"],
        200
    );
    let search =
        |criteria: Value| json!({"search": "hypertyResourcesDataSchemes", "criteria": criteria});
    for (criteria, code) in [
        (json!({"resources": ["chat"], "dataSchemes": ["comm"]}), 200),
        (
            json!({"user": "user://idp.example/alice", "schemes": ["hyperty"]}),
            200,
        ),
        (json!({"resources": ["video"]}), 404),
        (json!({"schemes": ["comm"]}), 404),
    ] {
        let found = ask(&mut bob, "read", search(criteria.clone())).await;
        assert_eq!(found["code"], code, "{criteria}: {found}");
    }
    assert_eq!(
        ask(
            &mut bob,
            "read",
            json!({"resource": "user://idp.example/nobody"})
        )
        .await["code"],
        404
    );

    // Refusals: a malformed registration, another runtime's keep-alive, an unknown type.
    let bad = ask(
        &mut alice,
        "create",
        json!({"value": {"hypertyURL": h, "expires": -1}}),
    )
    .await;
    assert_eq!(bad["code"], 400, "{bad}");
    assert!(
        bad["description"].as_str().unwrap().contains("expires"),
        "{bad}"
    );
    assert_eq!(
        ask(&mut bob, "update", json!({"resource": h})).await["code"],
        403
    );
    assert_eq!(
        ask(&mut bob, "delete", json!({"resource": h})).await["code"],
        403
    );
    assert_eq!(ask(&mut bob, "execute", json!({})).await["code"], 400);

    // A keep-alive one second in restarts the two seconds: the registration expires about
    // three seconds after it was made, not two.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        ask(&mut alice, "update", json!({"resource": h})).await["code"],
        200
    );
    assert_eq!(notice(&mut bob, &h).await, "expired");
    let lived = created.elapsed();
    assert!(
        lived >= Duration::from_millis(2900),
        "expired {lived:?} after creation, despite the keep-alive"
    );
    assert_eq!(
        ask(&mut bob, "read", json!({"resource": h})).await["code"],
        404
    );

    // Data objects, and delete.
    let room1 = allocate_object(&mut alice).await;
    let obj = json!({"value": {"url": room1, "name": "room1",
        "reporter": h, "schema": "hyperty-catalogue://example.com/Communication"}});
    assert_eq!(ask(&mut alice, "create", obj).await["code"], 200);
    // Nobody subscribed to its `/registration`: its owner, Alice, gets the notices.
    assert_eq!(notice(&mut alice, &room1).await, "live");
    let per_reporter = json!({"search": "dataObjectPerReporter", "resource": h});
    assert_eq!(
        ask(&mut bob, "read", per_reporter.clone()).await["code"],
        200
    );
    let del = json!({"resource": room1});
    assert_eq!(ask(&mut alice, "delete", del.clone()).await["code"], 200);
    assert_eq!(notice(&mut alice, &room1).await, "deleted");
    assert_eq!(ask(&mut bob, "read", per_reporter).await["code"], 404);
    assert_eq!(ask(&mut alice, "delete", del).await["code"], 404);
}

/// A data object address allocated to `rt`.
async fn allocate_object(rt: &mut Rt) -> String {
    let from = format!("{}/registry/allocation", rt.url);
    let answer = rt
        .request(
            json!({"type": "create", "from": from, "to": allocation_endpoint(),
            "body": {"scheme": "comm", "value": {"number": 1}}}),
        )
        .await;
    assert_eq!(answer["body"]["code"], 200, "{answer}");
    answer["body"]["value"]["allocated"][0]
        .as_str()
        .expect("an address")
        .to_owned()
}

/// The answer to `body` of `kind` sent to the registry from `rt`'s runtime registry, whoever
/// answers (the registry, or the node refusing before it).
async fn try_ask(rt: &mut Rt, kind: &str, body: Value) -> Value {
    let from = format!("{}/registry", rt.url);
    let r = rt
        .request(json!({"type": kind, "from": from, "to": registry(), "body": body}))
        .await;
    r["body"].clone()
}

#[tokio::test]
async fn a_runtime_registers_only_addresses_allocated_to_it() {
    let node = TestNode::spawn_with(with_registry).await;
    let mut alice = Rt::open(&node, "alice").await;
    let mut bob = Rt::open(&node, "bob").await;
    let h = alice.allocate(1).await.remove(0);
    let object = allocate_object(&mut alice).await;
    let data_object = |url: &str| json!({"value": {"url": url, "name": "o"}});
    // Alice's hyperty and object, registered by Bob: refused by the node, nothing registered.
    for (kind, body) in [
        ("create", hyperty(&h, 3600)),
        ("create", data_object(&object)),
        ("update", hyperty(&h, 3600)),
    ] {
        let refused = try_ask(&mut bob, kind, body).await;
        assert_eq!(refused["code"], 403, "{kind}: {refused}");
        assert!(
            refused.to_string().contains("was not allocated to"),
            "{refused}"
        );
    }
    assert_eq!(
        ask(&mut bob, "read", json!({"resource": h})).await["code"],
        404
    );
    // An address nobody was allocated: refused too.
    let nobody = format!("hyperty://{DOMAIN}/not-allocated");
    assert_eq!(
        try_ask(&mut alice, "create", hyperty(&nobody, 3600)).await["code"],
        403
    );
    // Alice registers her own (and an address below one of hers is hers as well); nobody
    // subscribed to their `/registration`, so she gets the notices.
    let child = format!("{object}/child");
    for (url, body) in [(&h, hyperty(&h, 3600)), (&child, data_object(&child))] {
        assert_eq!(ask(&mut alice, "create", body).await["code"], 200);
        assert_eq!(notice(&mut alice, url).await, "live");
    }
    let found = ask(&mut bob, "read", json!({"resource": h})).await;
    assert_eq!(found["value"][&h]["runtime"], json!(alice.url), "{found}");
}

/// Reads `url` from the registry until its status is `want` (the registry applies the node's
/// answer to its subscriptions after its start), at most [`RECV_TIMEOUT`].
async fn status_becomes(rt: &mut Rt, url: &str, want: &str) {
    let deadline = Instant::now() + RECV_TIMEOUT;
    loop {
        let read = ask(rt, "read", json!({"resource": url})).await;
        if read["value"][url]["status"] == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{url} is still not {want}: {read}"
        );
        tokio::task::yield_now().await;
    }
}

/// A node program with `[connectors.registry]` (what [`with_registry`] gives a [`TestNode`]),
/// its configuration file in `etc`, on the data directory `data`.
async fn registry_process(etc: &Path, data: &Path) -> NodeProcess {
    let config = etc.join("rethink.toml");
    std::fs::write(&config, "[connectors.registry]\n").expect("write the configuration");
    let config = config.display().to_string();
    NodeProcess::spawn(data, &[("RETHINK_CONFIG", &config)]).await
}

#[tokio::test]
async fn after_a_restart_registrations_of_runtimes_not_back_are_disconnected() {
    let (etc, data) = (
        tempfile::TempDir::new().unwrap(),
        tempfile::TempDir::new().unwrap(),
    );
    let mut node = registry_process(etc.path(), data.path()).await;
    let mut alice = node.open_rt("alice").await;
    let h = alice.allocate(1).await.remove(0);
    assert_eq!(
        ask(&mut alice, "create", hyperty(&h, 3600)).await["code"],
        200
    );
    assert_eq!(notice(&mut alice, &h).await, "live");
    // Killed (SIGKILL of the node's process) with Alice connected: nobody told the registry
    // she went.
    node.kill().await;
    let node = node.restart().await;
    let memory = alice.drop_connection();
    let mut carol = node.open_rt("carol").await;
    status_becomes(&mut carol, &h, "disconnected").await;
    // She resumes: live again. (The notices of her hyperty are hers: nobody subscribed.)
    let (mut alice, reopen) = node.resume_rt(&memory).await;
    let mut statuses = Vec::new();
    loop {
        let frame = alice.recv().await;
        if frame["type"] == "response" && frame["id"] == reopen["id"] {
            assert_eq!(frame["body"]["code"], 200, "{frame}");
            break;
        }
        statuses.push(frame["body"]["value"].clone());
    }
    status_becomes(&mut carol, &h, "live").await;
    while statuses.len() < 2 {
        statuses.push(alice.recv().await["body"]["value"].clone());
    }
    assert_eq!(statuses, [json!("disconnected"), json!("live")]);
}

#[tokio::test]
async fn registrations_follow_their_runtime_connecting_disconnecting_and_expiring() {
    let node = TestNode::spawn_with_clock(|c| {
        c.session.resume_window = Duration::from_secs(10);
        with_registry(c);
    })
    .await;
    let mut alice = Rt::open(&node, "alice").await;
    let mut bob = Rt::open(&node, "bob").await;
    let h = alice.allocate(1).await.remove(0);
    bob.subscribe(&[
        &format!("{h}/registration"),
        &format!("{}/status", alice.url),
    ])
    .await;
    let created = ask(&mut alice, "create", hyperty(&h, 3600)).await;
    assert_eq!(created["code"], 200, "{created}");
    assert_eq!(notice(&mut bob, &h).await, "live");

    // The connection drops: the node says so on <runtime>/status, the registry on
    // <url>/registration.
    let memory = alice.drop_connection();
    let status = bob.recv().await;
    assert_eq!(
        (
            &status["type"],
            &status["from"],
            &status["to"],
            &status["body"]["value"]
        ),
        (
            &json!("update"),
            &json!(format!("domain://msg-node.{DOMAIN}")),
            &json!(format!("{}/status", memory.url)),
            &json!("disconnected")
        ),
        "{status}"
    );
    assert_eq!(notice(&mut bob, &h).await, "disconnected");
    let read = ask(&mut bob, "read", json!({"resource": h})).await;
    assert_eq!(read["value"][&h]["status"], "disconnected", "{read}");

    // It resumes: live again.
    let (mut alice, reopen) = memory.resume(&node).await;
    let answer = alice.recv_response(&reopen["id"]).await;
    assert_eq!(answer["body"]["code"], 200, "{answer}");
    assert_eq!(bob.recv().await["body"]["value"], "live");
    assert_eq!(notice(&mut bob, &h).await, "live");

    // It drops again and its resume window passes: expired, and the registration is gone.
    let memory = alice.drop_connection();
    assert_eq!(bob.recv().await["body"]["value"], "disconnected");
    assert_eq!(notice(&mut bob, &h).await, "disconnected");
    node.advance(Duration::from_secs(10)).await;
    assert_eq!(bob.recv().await["body"]["value"], "expired");
    assert_eq!(notice(&mut bob, &h).await, "expired");
    // (A fresh runtime asks: on the manual clock, time also passed for the ping deadline of bob's connection.)
    let mut carol = Rt::open(&node, "carol").await;
    assert_eq!(
        ask(&mut carol, "read", json!({"resource": h})).await["code"],
        404
    );
    drop(memory);
}

#[tokio::test]
async fn the_registry_survives_a_node_restart() {
    let node = TestNode::spawn_with(with_registry).await;
    let mut alice = Rt::open(&node, "alice").await;
    let h = alice.allocate(1).await.remove(0);
    assert_eq!(
        ask(&mut alice, "create", hyperty(&h, 3600)).await["code"],
        200
    );
    drop(alice);
    let node = node.restart().await;
    let mut carol = Rt::open(&node, "carol").await;
    let found = ask(
        &mut carol,
        "read",
        json!({"resource": "user://idp.example/alice"}),
    )
    .await;
    assert_eq!(found["code"], 200, "{found}");
    assert_eq!(found["value"][&h]["hypertyURL"], h, "{found}");
}

#[tokio::test]
async fn a_connector_sends_only_from_its_namespace() {
    let probe = Path::new(env!("CARGO_MANIFEST_DIR")).join("../stubs/guests/probe/probe.wasm");
    let ns = format!("hyperty://{DOMAIN}/probe");
    let connector = RawConnector {
        component: Some(probe),
        namespaces: Some(vec![ns.clone()]),
        config: BTreeMap::from([("listen".to_owned(), ns.clone())]),
        ..RawConnector::default()
    };
    let node =
        TestNode::spawn_with(|c| with_connectors(c, BTreeMap::from([("probe".into(), connector)])))
            .await;
    let mut alice = Rt::open(&node, "alice").await;
    let me = alice.allocate(1).await.remove(0);
    let command = |id: u64, from: &str| {
        json!({"id": id, "type": "execute", "from": me, "to": ns, "body": {"op": "send",
            "message": {"id": 7, "type": "update", "from": from, "to": me, "body": {"x": id}}}})
    };
    // Inside its namespace: delivered.
    alice.send(&command(1, &format!("{ns}/sub"))).await;
    let mut got = vec![alice.recv().await, alice.recv().await];
    got.sort_by_key(|v| v["type"].as_str().unwrap_or_default().to_owned());
    assert_eq!(got[0]["body"]["code"], 200, "{got:?}");
    assert_eq!(
        (&got[1]["type"], &got[1]["body"]["x"]),
        (&json!("update"), &json!(1))
    );
    // Outside: 403, nothing delivered.
    let answer = alice
        .request(command(2, &format!("hyperty://{DOMAIN}/other")))
        .await;
    assert_eq!(answer["body"]["code"], 403, "{answer}");
    assert!(
        answer["body"]["value"]
            .as_str()
            .unwrap()
            .contains("not one of its addresses"),
        "{answer}"
    );
    alice.expect_nothing_queued().await;
}

/// Lookups per second through the bus: `RUNTIMES` runtimes each send `PER_RUNTIME` reads, at most
/// `WINDOW` outstanding each. Ignored (a measurement, not a check; run with `--ignored
/// --nocapture`); the session rate limit is lifted, since the registry's own session answers
/// every lookup.
#[tokio::test]
#[ignore = "a measurement: run it with --ignored --nocapture"]
async fn registry_lookups_per_second() {
    const RUNTIMES: usize = 4;
    const PER_RUNTIME: u64 = 2000;
    const WINDOW: u64 = 64;
    let node = TestNode::spawn_with(|c| {
        c.session.rate_per_second = 1_000_000;
        c.session.rate_burst = 1_000_000;
        with_registry(c);
    })
    .await;
    let mut owner = Rt::open(&node, "owner").await;
    let h = owner.allocate(1).await.remove(0);
    assert_eq!(
        ask(&mut owner, "create", hyperty(&h, 3600)).await["code"],
        200
    );
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..RUNTIMES {
        let mut rt = Rt::open(&node, &format!("reader{i}")).await;
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            let from = format!("{}/registry", rt.url);
            let (mut sent, mut got) = (0u64, 0u64);
            while got < PER_RUNTIME {
                while sent < PER_RUNTIME && sent - got < WINDOW {
                    sent += 1;
                    rt.send(&json!({"id": sent, "type": "read", "from": from,
                        "to": registry(), "body": {"resource": h}}))
                        .await;
                }
                let r = rt.recv().await;
                assert_eq!(r["body"]["code"], 200, "{r}");
                got += 1;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let total = RUNTIMES as u64 * PER_RUNTIME;
    let rate = total as f64 / started.elapsed().as_secs_f64();
    println!(
        "registry: {total} lookups in {:?}: {rate:.0}/s",
        started.elapsed()
    );
}
