//! reTHINK namespaces of application services (`rethink_namespaces`, issue 12) against the real
//! node and a service written in the test (`appservice_support`): a hyperty's message to a
//! claimed address reaches the service in a transaction (`rethink_messages`), the service's
//! answer (`POST /_rethink/app/v1/send`) reaches the hyperty; a `from` outside the namespace is
//! refused like a spoofing runtime's; the operator's policy applies in both directions; an
//! exclusive claim keeps runtimes from allocating its addresses.

use std::path::Path;

use serde_json::{Value, json};

use super::appservice_support::{AS_TOKEN, HS_TOKEN, Received, Service, free_port, registration};
use super::support::matrix::post;
use super::support::{DOMAIN, Rt, TestNode};

const SEND: &str = "/_rethink/app/v1/send";

/// The `bridge` registration at `port`, claiming `patterns` (`(pattern, exclusive)`).
fn write_registration(dir: &Path, port: u16, patterns: &[(&str, bool)]) {
    let mut text = registration(
        "bridge",
        Some(&format!("http://127.0.0.1:{port}")),
        AS_TOKEN,
        HS_TOKEN,
    );
    text.push_str("rethink_namespaces:\n");
    for (pattern, exclusive) in patterns {
        text.push_str(&format!(
            "  - pattern: \"{pattern}\"\n    exclusive: {exclusive}\n"
        ));
    }
    std::fs::write(dir.join("bridge.yaml"), text).expect("write registration");
}

/// The policies of these tests: everything is allowed but messages to `slack://team/blocked`
/// (hyperty → service) and `execute` messages sent by a service (service → hyperty).
fn write_policy(dir: &Path) {
    let schema = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../policy/examples/blocklist/schema.cedarschema");
    std::fs::copy(schema, dir.join("schema.cedarschema")).expect("copy the schema");
    std::fs::write(
        dir.join("policies.cedar"),
        r#"@id("allow-all")
permit(principal, action, resource);

@id("forbid-blocked-channel")
forbid(principal, action, resource) when { context.to == "slack://team/blocked" };

@id("forbid-service-execute")
forbid(principal, action == Rethink::Action::"execute", resource)
when { context.transport == "appservice" };
"#,
    )
    .expect("write policies");
}

/// A node with the registration in `dir` (and the policy in `policy`, if given).
async fn node_with(dir: &Path, policy: Option<&Path>) -> TestNode {
    let dir = dir.to_path_buf();
    let policy = policy.map(Path::to_path_buf);
    TestNode::spawn_with(|c| {
        c.appservices.dir = Some(dir);
        c.appservices.initial_backoff = std::time::Duration::from_millis(20);
        c.appservices.max_backoff = std::time::Duration::from_millis(100);
        c.policy.dir = policy;
    })
    .await
}

/// A runtime with one hyperty address.
async fn hyperty(node: &TestNode, name: &str) -> (Rt, String) {
    let mut rt = Rt::connect(node, name).await;
    let opened = rt.open_session(json!({})).await;
    assert_eq!(opened["body"]["code"], 200, "{opened}");
    let addr = rt.allocate(1).await.remove(0);
    (rt, addr)
}

/// The next reTHINK messages the service receives (transactions of room events only are
/// skipped).
async fn next_rethink(service: &mut Service) -> Vec<Value> {
    loop {
        if let Received::Txn { rethink, .. } = service.next().await
            && !rethink.is_empty()
        {
            return rethink;
        }
    }
}

/// The service sends `message`; the HTTP status and the answer.
async fn service_send(node: &TestNode, message: &Value) -> (u16, Value) {
    post(node, SEND, AS_TOKEN, message).await
}

#[tokio::test]
async fn a_hyperty_and_a_service_exchange_messages_through_a_claimed_address() {
    let port = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    write_registration(dir.path(), port, &[("slack://*", true)]);
    let node = node_with(dir.path(), None).await;
    let mut service = Service::start(port, node.addr()).await;
    let (mut rt, h) = hyperty(&node, "rt-1").await;

    let ask = json!({"id": 7, "type": "execute", "from": h, "to": "slack://team/alice",
        "body": {"method": "say", "params": ["hello"]}});
    rt.send(&ask).await;
    let got = next_rethink(&mut service).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["id"], 7);
    assert_eq!(got[0]["from"], h.as_str());
    assert_eq!(got[0]["to"], "slack://team/alice");
    assert_eq!(got[0]["body"]["params"][0], "hello");
    assert!(got[0].get("seq").is_none(), "no outbox seq: {}", got[0]);

    // The service answers from the claimed address; the hyperty receives it.
    let answer = json!({"id": 7, "type": "response", "from": "slack://team/alice", "to": h,
        "body": {"code": 200, "value": {"said": "hello"}}});
    let (status, body) = service_send(&node, &answer).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["code"], 200, "{body}");
    let frame = rt.recv().await;
    assert_eq!(frame["type"], "response", "{frame}");
    assert_eq!(frame["from"], "slack://team/alice");
    assert_eq!(frame["body"]["value"]["said"], "hello");

    // The service asks the hyperty; the hyperty's response comes back in a transaction.
    let (status, body) = service_send(
        &node,
        &json!({"id": 8, "type": "read", "from": "slack://team/bob", "to": h}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let asked = rt.recv().await;
    assert_eq!(asked["from"], "slack://team/bob", "{asked}");
    rt.send(
        &json!({"id": 8, "type": "response", "from": h, "to": "slack://team/bob",
        "body": {"code": 200, "value": {"name": "h"}}}),
    )
    .await;
    let back = next_rethink(&mut service).await;
    assert_eq!(back[0]["type"], "response", "{back:?}");
    assert_eq!(back[0]["to"], "slack://team/bob");
    assert_eq!(back[0]["body"]["value"]["name"], "h");

    // The node's own endpoints answer the service in its transactions too.
    let (status, body) = service_send(
        &node,
        &json!({"id": 9, "type": "subscribe", "from": "slack://team/bob/sm",
            "to": super::support::sm_endpoint(), "body": {"resources": [format!("{h}/changes")]}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let answer = next_rethink(&mut service).await;
    assert_eq!(answer[0]["id"], 9, "{answer:?}");
    assert_eq!(answer[0]["type"], "response");
    assert_eq!(answer[0]["body"]["code"], 200, "{answer:?}");
}

#[tokio::test]
async fn a_service_sends_only_from_its_namespace_and_with_its_token() {
    let port = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    write_registration(dir.path(), port, &[("slack://*", false)]);
    let node = node_with(dir.path(), None).await;
    let (_rt, h) = hyperty(&node, "rt-1").await;

    // Outside its namespace, and a hyperty's address: refused like a spoofing runtime.
    for from in ["irc://net/alice", h.as_str()] {
        let (status, body) = service_send(
            &node,
            &json!({"id": 1, "type": "execute", "from": from, "to": h}),
        )
        .await;
        assert_eq!(status, 403, "{from}: {body}");
        assert_eq!(body["type"], "response", "{body}");
        assert_eq!(body["body"]["code"], 403);
        assert_eq!(
            body["body"]["description"],
            format!("sender {from} is not an address of this runtime")
        );
    }
    // A wrong token is a Matrix error; a message that does not parse a reTHINK 400.
    let (status, body) = post(
        &node,
        SEND,
        "wrong-token",
        &json!({"id": 1, "type": "read", "from": "slack://a", "to": h}),
    )
    .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (401, Some("M_UNKNOWN_TOKEN"))
    );
    let (status, body) = service_send(&node, &json!({"id": 1, "type": "read"})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], 400, "{body}");
    // A message larger than a frame may be: 413, read no further than the bound.
    let big = "x".repeat(2 << 20);
    let (status, body) = service_send(
        &node,
        &json!({"id": 3, "type": "read", "from": "slack://a", "to": h, "body": {"big": big}}),
    )
    .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["code"], 413, "{body}");
    // A recipient nobody holds: 404, as for a runtime.
    let (status, body) = service_send(
        &node,
        &json!({"id": 2, "type": "read", "from": "slack://a",
            "to": format!("hyperty://{DOMAIN}/nobody")}),
    )
    .await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test]
async fn the_policy_applies_in_both_directions() {
    let port = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = tempfile::tempdir().expect("tempdir");
    write_registration(dir.path(), port, &[("slack://*", true)]);
    write_policy(policy.path());
    let node = node_with(dir.path(), Some(policy.path())).await;
    let mut service = Service::start(port, node.addr()).await;
    let (mut rt, h) = hyperty(&node, "rt-1").await;

    // Hyperty → service: denied to the blocked channel, naming the policy.
    let refused = rt
        .request(
            json!({"type": "execute", "from": h, "to": "slack://team/blocked",
            "body": {"method": "say"}}),
        )
        .await;
    assert_eq!(refused["body"]["code"], 403, "{refused}");
    let desc = refused["body"]["description"].as_str().unwrap_or_default();
    assert!(desc.contains("forbid-blocked-channel"), "{desc}");

    // Service → hyperty: an execute is denied, naming the policy.
    let (status, body) = service_send(
        &node,
        &json!({"id": 3, "type": "execute", "from": "slack://team/alice", "to": h,
            "body": {"method": "ring"}}),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let desc = body["body"]["description"].as_str().unwrap_or_default();
    assert!(desc.contains("forbid-service-execute"), "{desc}");

    // What the policy allows still passes, and the denied message never reached the service.
    rt.send(&json!({"id": 4, "type": "execute", "from": h, "to": "slack://team/alice"}))
        .await;
    let got = next_rethink(&mut service).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["id"], 4, "only the allowed message: {got:?}");
}

#[tokio::test]
async fn an_exclusive_claim_keeps_runtimes_from_allocating_its_addresses() {
    let port = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    write_registration(
        dir.path(),
        port,
        &[(&format!("hyperty://{DOMAIN}/*"), true)],
    );
    let node = node_with(dir.path(), None).await;
    let mut rt = Rt::connect(&node, "rt-1").await;
    let opened = rt.open_session(json!({})).await;
    assert_eq!(opened["body"]["code"], 200, "{opened}");
    let from = format!("{}/registry/allocation", rt.url);
    let resp = rt
        .request(json!({"type": "create", "from": from,
            "to": super::support::allocation_endpoint(),
            "body": {"scheme": "hyperty", "value": {"number": 1}}}))
        .await;
    assert_eq!(resp["body"]["code"], 403, "{resp}");
    let desc = resp["body"]["description"].as_str().unwrap_or_default();
    assert!(
        desc.contains("claimed exclusively by application service bridge"),
        "{desc}"
    );
}
