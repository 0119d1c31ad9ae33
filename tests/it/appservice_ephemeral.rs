//! Ephemeral data in application-service transactions (`receive_ephemeral`, MSC2409 / MSC4203)
//! against the real node and a service written in the test: typing and receipts of a room
//! where one of its users is joined (and not of another room), presence of its users, and
//! to-device messages for its users' devices; a service that did not ask gets none of it.

use serde_json::{Value, json};

use super::appservice_support::{AS_TOKEN, HS_TOKEN, Received, Service, free_port, registration};
use super::support::TestNode;
use super::support::matrix::{
    V3, create_room, invite, ok, post, put, register, room_path, send_text, urlencode, user_id,
};

/// A node with the `bridge` service at `port`, asking for ephemeral data when `ephemeral`.
async fn node_with(port: u16, ephemeral: bool) -> (TestNode, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut text = registration(
        "bridge",
        Some(&format!("http://127.0.0.1:{port}")),
        AS_TOKEN,
        HS_TOKEN,
    );
    text.push_str(&format!("receive_ephemeral: {ephemeral}\n"));
    std::fs::write(dir.path().join("bridge.yaml"), text).expect("write registration");
    let path = dir.path().to_path_buf();
    let node = TestNode::spawn_with(|c| {
        c.appservices.dir = Some(path);
        c.appservices.initial_backoff = std::time::Duration::from_millis(20);
    })
    .await;
    (node, dir)
}

fn as_user(path: &str, user: &str) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}user_id={}", urlencode(user))
}

/// The next transaction's ephemeral data and to-device messages (transactions holding neither
/// are skipped; their events are checked by other tests).
async fn next_ephemeral(service: &mut Service) -> (Vec<Value>, Vec<Value>) {
    loop {
        if let Received::Txn {
            ephemeral,
            to_device,
            ..
        } = service.next().await
            && !(ephemeral.is_empty() && to_device.is_empty())
        {
            return (ephemeral, to_device);
        }
    }
}

/// Alice's room shared with `@bridge_bob` (joined); alice's private room; bob's device.
async fn rooms(node: &TestNode) -> (String, String, String, String) {
    let alice = register(node, "alice").await;
    let bob = ok(post(
        node,
        &format!("{V3}/register"),
        AS_TOKEN,
        &json!({"type": "m.login.application_service", "username": "bridge_bob"}),
    )
    .await);
    let device = bob["device_id"].as_str().expect("a device").to_owned();
    let shared = create_room(node, &alice, &json!({})).await;
    invite(node, &alice, &shared, &user_id("bridge_bob")).await;
    ok(post(
        node,
        &as_user(
            &format!("{V3}/join/{}", urlencode(&shared)),
            &user_id("bridge_bob"),
        ),
        AS_TOKEN,
        &json!({}),
    )
    .await);
    let private = create_room(node, &alice, &json!({})).await;
    (alice, shared, private, device)
}

#[tokio::test]
async fn typing_receipts_presence_and_to_device_reach_a_service_that_asks() {
    let port = free_port();
    let (node, _dir) = node_with(port, true).await;
    let mut service = Service::start(port, node.addr()).await;
    let (alice, shared, private, device) = rooms(&node).await;
    let alice_id = user_id("alice");
    let bob = user_id("bridge_bob");

    // Typing in the private room is none of its business; in the shared room it is.
    let typing = |room: &str| room_path(room, &format!("typing/{}", urlencode(&alice_id)));
    ok(put(
        &node,
        &typing(&private),
        &alice,
        &json!({"typing": true, "timeout": 30000}),
    )
    .await);
    ok(put(
        &node,
        &typing(&shared),
        &alice,
        &json!({"typing": true, "timeout": 30000}),
    )
    .await);
    let (eph, _) = next_ephemeral(&mut service).await;
    let typed: Vec<&Value> = eph.iter().filter(|e| e["type"] == "m.typing").collect();
    assert!(!typed.is_empty(), "{eph:?}");
    for t in &typed {
        assert_eq!(
            t["room_id"],
            shared.as_str(),
            "only the shared room: {eph:?}"
        );
    }
    assert_eq!(
        typed.last().unwrap()["content"]["user_ids"],
        json!([alice_id])
    );

    // A read receipt in the shared room.
    let event = send_text(&node, &alice, &shared, "t1", "hello").await;
    ok(post(
        &node,
        &room_path(&shared, &format!("receipt/m.read/{}", urlencode(&event))),
        &alice,
        &json!({}),
    )
    .await);
    let receipt = loop {
        let (eph, _) = next_ephemeral(&mut service).await;
        if let Some(r) = eph.iter().find(|e| e["type"] == "m.receipt") {
            break r.clone();
        }
    };
    assert_eq!(receipt["room_id"], shared.as_str());
    assert!(
        receipt["content"][&event]["m.read"][&alice_id]["ts"].is_u64(),
        "{receipt}"
    );

    // Presence of its user (set by the service as bob).
    ok(put(
        &node,
        &as_user(&format!("{V3}/presence/{}/status", urlencode(&bob)), &bob),
        AS_TOKEN,
        &json!({"presence": "online", "status_msg": "bridging"}),
    )
    .await);
    let presence = loop {
        let (eph, _) = next_ephemeral(&mut service).await;
        if let Some(p) = eph.iter().find(|e| e["type"] == "m.presence") {
            break p.clone();
        }
    };
    assert_eq!(presence["sender"], bob.as_str());
    assert_eq!(presence["content"]["presence"], "online");
    assert_eq!(presence["content"]["status_msg"], "bridging");

    // A to-device message for bob's device.
    ok(put(
        &node,
        &format!("{V3}/sendToDevice/m.test/txn-1"),
        &alice,
        &json!({"messages": {bob.as_str(): {device.as_str(): {"secret": 42}}}}),
    )
    .await);
    let to_device = loop {
        let (_, td) = next_ephemeral(&mut service).await;
        if let Some(m) = td.first() {
            break m.clone();
        }
    };
    assert_eq!(to_device["type"], "m.test");
    assert_eq!(to_device["sender"], alice_id.as_str());
    assert_eq!(to_device["content"]["secret"], 42);
    assert_eq!(to_device["to_user_id"], bob.as_str());
    assert_eq!(to_device["to_device_id"], device.as_str());
}

#[tokio::test]
async fn a_service_that_does_not_ask_gets_no_ephemeral_data() {
    let port = free_port();
    let (node, _dir) = node_with(port, false).await;
    let mut service = Service::start(port, node.addr()).await;
    let (alice, shared, _private, _device) = rooms(&node).await;
    let alice_id = user_id("alice");
    let typing = room_path(&shared, &format!("typing/{}", urlencode(&alice_id)));
    ok(put(
        &node,
        &typing,
        &alice,
        &json!({"typing": true, "timeout": 30000}),
    )
    .await);
    // A message after the typing: its transaction comes, and none before or with it holds
    // ephemeral data.
    send_text(&node, &alice, &shared, "t1", "marker").await;
    loop {
        let Received::Txn {
            events,
            ephemeral,
            to_device,
            ..
        } = service.next().await
        else {
            continue;
        };
        assert!(
            ephemeral.is_empty() && to_device.is_empty(),
            "{ephemeral:?}"
        );
        if events.iter().any(|e| e["content"]["body"] == "marker") {
            break;
        }
    }
}
