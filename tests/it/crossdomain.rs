//! Routing across domains (issue 13) with two real nodes in one test: `a.test` and `b.test` on
//! loopback, each naming the other in `cross_domain.peers`. A message from a hyperty on A to one
//! on B goes through A's instance of B's own `default` stub (downloaded from B's catalogue,
//! verified, run in A's stub host), which opens a node session on B with A's signed proof; B's
//! answers come back the same way.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::relay::Relay;
use crate::support::{Rt, TestNode};

pub(crate) const A: &str = "a.test";
pub(crate) const B: &str = "b.test";
/// How long the first message may take: B's stub is downloaded, verified and compiled (an
/// unoptimised wasmtime in tests takes seconds) before it connects.
pub(crate) const FIRST: Duration = Duration::from_secs(60);

/// A free loopback address (the port is released for the node to bind).
pub(crate) fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], super::support::free_port()))
}

/// A node of `domain` on `addr`, with cross-domain routing on and `peers`.
pub(crate) async fn node(domain: &str, addr: SocketAddr, peers: &[(&str, SocketAddr)]) -> TestNode {
    node_with(domain, addr, peers, |_| {}).await
}

/// Like [`node`], the configuration changed by `edit`.
pub(crate) async fn node_with(
    domain: &str,
    addr: SocketAddr,
    peers: &[(&str, SocketAddr)],
    edit: impl FnOnce(&mut rethink_node::Config),
) -> TestNode {
    let domain = domain.to_owned();
    let peers: Vec<(String, String)> = peers
        .iter()
        .map(|(d, a)| ((*d).to_owned(), format!("http://{a}")))
        .collect();
    TestNode::spawn_with(move |c| {
        c.matrix.server_name = domain.as_str().try_into().expect("server name");
        c.domain = domain;
        c.listen = addr;
        c.cross_domain.enabled = true;
        c.cross_domain.peers = peers;
        edit(c);
    })
    .await
}

/// Nodes A and B, each knowing the other, A's stub for B reaching B through the returned
/// [`Relay`] (B's `public_url`, hence the `url` of its stub's descriptor), so that the test can
/// break that connection; B on a manual clock, its configuration changed by `edit_b`, A's by
/// `edit_a`.
pub(crate) async fn b_behind_a_relay(
    edit_a: impl FnOnce(&mut rethink_node::Config),
    edit_b: impl FnOnce(&mut rethink_node::Config),
) -> (TestNode, TestNode, Relay) {
    let (aa, ab) = (free_addr(), free_addr());
    let relay = Relay::start(ab).await;
    let public = format!("http://{}", relay.addr());
    let peers = vec![(A.to_owned(), format!("http://{aa}"))];
    let b = TestNode::spawn_with_clock(move |c| {
        c.matrix.server_name = B.try_into().expect("server name");
        c.domain = B.to_owned();
        c.listen = ab;
        c.public_url = Some(public);
        c.cross_domain.enabled = true;
        c.cross_domain.peers = peers;
        edit_b(c);
    })
    .await;
    let a = node_with(A, aa, &[(B, ab)], edit_a).await;
    (a, b, relay)
}

/// Nodes A and B, each knowing the other.
pub(crate) async fn two_nodes() -> (TestNode, TestNode) {
    let (aa, ab) = (free_addr(), free_addr());
    let b = node(B, ab, &[(A, aa)]).await;
    let a = node(A, aa, &[(B, ab)]).await;
    (a, b)
}

/// A runtime of `domain` on `node`, with one hyperty address.
pub(crate) async fn hyperty(node: &TestNode, domain: &str, name: &str) -> (Rt, String) {
    open_with_hyperty(Rt::connect(node, name).await, domain, name).await
}

/// Opens the session of `rt` (connected) as the runtime `name` of `domain` and allocates it one
/// hyperty address.
pub(crate) async fn open_with_hyperty(mut rt: Rt, domain: &str, name: &str) -> (Rt, String) {
    rt.url = format!("hyperty-runtime://{domain}/{name}");
    let resp = rt.open_session(json!({})).await;
    assert_eq!(resp["body"]["code"], 200, "open: {resp}");
    let from = format!("{}/registry/allocation", rt.url);
    let resp = rt
        .request(json!({"type": "create", "from": from,
            "to": format!("domain://msg-node.{domain}/address-allocation"),
            "body": {"scheme": "hyperty", "value": {"number": 1}}}))
        .await;
    assert_eq!(resp["body"]["code"], 200, "allocation: {resp}");
    let address = resp["body"]["value"]["allocated"][0]
        .as_str()
        .expect("address")
        .to_owned();
    (rt, address)
}

/// Sends PING `{"n": 1}` from `from` (on `alice`'s node) to `to` (on `bob`'s, another
/// domain) and returns it as `bob` gets it: the first message waits for the other domain's
/// stub (downloaded, verified, compiled, connected).
pub(crate) async fn first_ping(alice: &mut Rt, from: &str, bob: &mut Rt, to: &str) -> Value {
    alice
        .send(&json!({"id": 1, "type": "PING", "from": from, "to": to, "body": {"n": 1}}))
        .await;
    let got = bob
        .try_recv(FIRST)
        .await
        .expect("the PING through the other domain's stub");
    assert_eq!(
        (&got["type"], &got["body"]["n"]),
        (&json!("PING"), &json!(1)),
        "{got}"
    );
    got
}

#[tokio::test]
async fn a_hyperty_on_a_reaches_a_hyperty_on_b_and_gets_its_response() {
    let (a, b) = two_nodes().await;
    let (mut alice, ha) = hyperty(&a, A, "rt-alice").await;
    let (mut bob, hb) = hyperty(&b, B, "rt-bob").await;

    let got = first_ping(&mut alice, &ha, &mut bob, &hb).await;
    assert_eq!(got["from"], json!(ha));

    bob.send(&json!({"id": 1, "type": "response", "from": hb, "to": ha,
        "body": {"code": 200, "value": "pong"}}))
        .await;
    let resp = alice.recv().await;
    assert_eq!(resp["type"], "response", "{resp}");
    assert_eq!(resp["from"], json!(hb));
    assert_eq!(resp["body"]["value"], "pong");

    // The gateway is up now: a second round trip the same way.
    alice
        .send(&json!({"id": 2, "type": "PING", "from": ha, "to": hb, "body": {"n": 2}}))
        .await;
    assert_eq!(bob.recv().await["body"]["n"], 2);
}

/// A message for another domain is committed in its gateway's outbox at once: its sender's
/// next frame is read without waiting for the group-commit delay (nothing but the commit
/// settles a gateway's frames). With a one-minute delay on A, a sender that waited for it
/// would not get its next message across in time.
#[tokio::test]
async fn a_sender_to_another_domain_does_not_wait_for_the_group_commit_delay() {
    let (aa, ab) = (free_addr(), free_addr());
    let b = node(B, ab, &[(A, aa)]).await;
    let a = node_with(A, aa, &[(B, ab)], |c| {
        c.store.commit_delay = std::time::Duration::from_secs(60);
    })
    .await;
    let (mut alice, ha) = hyperty(&a, A, "rt-alice").await;
    let (mut bob, hb) = hyperty(&b, B, "rt-bob").await;
    first_ping(&mut alice, &ha, &mut bob, &hb).await;
    for n in 2..=4 {
        alice
            .send(&json!({"id": n, "type": "PING", "from": ha, "to": hb, "body": {"n": n}}))
            .await;
    }
    for n in 2..=4 {
        assert_eq!(bob.recv().await["body"]["n"], n);
    }
}

#[tokio::test]
async fn b_decides_messages_from_a_with_its_own_policies_as_transport_node() {
    let policies = crate::support::policy_dir(
        r#"@id("allow-all")
permit(principal, action, resource);

@id("no-pings-from-other-nodes")
forbid(principal, action, resource)
when { context.transport == "node" && context.message_type == "PING" };
"#,
    );
    let (aa, ab) = (free_addr(), free_addr());
    let dir = policies.path().to_path_buf();
    let b = node_with(B, ab, &[(A, aa)], |c| c.policy.dir = Some(dir)).await;
    let a = node(A, aa, &[(B, ab)]).await;
    let (mut alice, ha) = hyperty(&a, A, "rt-alice").await;
    let (mut bob, hb) = hyperty(&b, B, "rt-bob").await;

    // Another type passes B's policies: the node session is up.
    alice
        .send(&json!({"id": 1, "type": "HELLO", "from": ha, "to": hb}))
        .await;
    let got = bob
        .try_recv(FIRST)
        .await
        .expect("the HELLO through B's stub");
    assert_eq!(got["type"], "HELLO");
    // A PING from a node is refused by B's policy; the 403 naming it reaches the sender on A.
    alice
        .send(&json!({"id": 2, "type": "PING", "from": ha, "to": hb}))
        .await;
    let resp = alice.recv().await;
    assert_eq!(resp["type"], "response", "{resp}");
    assert_eq!(resp["id"], 2);
    assert_eq!(resp["body"]["code"], 403, "{resp}");
    let desc = resp["body"]["description"].as_str().expect("description");
    assert!(desc.contains("no-pings-from-other-nodes"), "{desc}");
    // B's own runtimes are not "node": bob may PING himself.
    let resp = bob
        .request(json!({"id": 9, "type": "PING", "from": hb, "to": "hyperty://b.test/nobody"}))
        .await;
    assert_eq!(resp["body"]["code"], 404, "{resp}");
}

/// Subscriptions to another domain's addresses count against the runtime's
/// `session.max_subscriptions` (1,000) too: a subscribe past it is refused by the runtime's own
/// node, whole, before it leaves; a smaller one still goes through.
#[tokio::test]
async fn a_subscribe_to_another_domain_past_the_bound_is_refused_here() {
    let (_a, b) = two_nodes().await;
    let (mut bob, _) = hyperty(&b, B, "rt-bob-many").await;
    // A subscribe of `n` resources at A's subscription manager: A's answer, or B's refusal.
    let from = format!("{}/sm", bob.url);
    let subscribe = |n: usize| {
        let resources: Vec<String> = (0..n).map(|i| format!("comm://{A}/o{i}/changes")).collect();
        json!({"type": "subscribe", "from": from,
            "to": format!("domain://msg-node.{A}/sm"), "body": {"resources": resources}})
    };
    let resp = bob.request(subscribe(1001)).await;
    assert_eq!(resp["body"]["code"], 403, "{resp}");
    assert_eq!(
        resp["body"]["description"],
        "forbidden: a runtime subscribes to at most 1000 addresses"
    );
    let resp = bob.request(subscribe(2)).await;
    assert_eq!(resp["body"]["code"], 200, "{resp}");
}

#[tokio::test]
async fn a_hyperty_on_b_subscribes_at_a_and_receives_the_updates_of_an_object_on_a() {
    let (a, b) = two_nodes().await;
    let (mut alice, _) = hyperty(&a, A, "rt-alice").await;
    let (mut bob, _) = hyperty(&b, B, "rt-bob").await;
    // An object reported on A.
    let from = format!("{}/registry/allocation", alice.url);
    let resp = alice
        .request(json!({"type": "create", "from": from,
            "to": format!("domain://msg-node.{A}/address-allocation"),
            "body": {"scheme": "comm", "value": {"number": 1}}}))
        .await;
    let obj = resp["body"]["value"]["allocated"][0]
        .as_str()
        .expect("object")
        .to_owned();
    let changes = format!("{obj}/changes");

    // Bob subscribes at A's subscription manager, through A's stub run by B.
    bob.send(
        &json!({"id": 1, "type": "subscribe", "from": format!("{}/sm", bob.url),
        "to": format!("domain://msg-node.{A}/sm"), "body": {"resources": [changes]}}),
    )
    .await;
    let resp = bob.try_recv(FIRST).await.expect("the answer from A's sm");
    assert_eq!(resp["type"], "response", "{resp}");
    assert_eq!(resp["id"], 1);
    assert_eq!(resp["body"]["code"], 200, "{resp}");

    for n in 1..=2 {
        let update = json!({"id": 10 + n, "type": "update", "from": obj, "to": changes,
            "body": {"attribute": "n", "value": n}});
        alice.send(&update).await;
        let got = bob.recv().await;
        assert_eq!(got["type"], "update", "{got}");
        assert_eq!(got["from"], json!(obj));
        assert_eq!(got["to"], json!(changes));
        assert_eq!(got["body"]["value"], n, "{got}");
    }
}
