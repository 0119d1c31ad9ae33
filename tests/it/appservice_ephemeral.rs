//! Ephemeral data in application-service transactions (`receive_ephemeral`, MSC2409 / MSC4203)
//! against the real node and a service written in the test: typing and receipts of a room
//! where one of its users is joined (and not of another room), threaded and private receipts
//! (a private one only of its own users), presence of its users and of users sharing a room
//! with them (not of others), and to-device messages for its users' devices; a service that did
//! not ask gets none of it.

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
        if let Some(p) = eph
            .iter()
            .find(|e| e["type"] == "m.presence" && e["sender"] == bob.as_str())
        {
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

/// The `m.receipt` events of transactions, until one has a receipt by `user` of `kind`; all
/// of them are returned.
async fn receipts_until(service: &mut Service, kind: &str, user: &str) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        let (eph, _) = next_ephemeral(service).await;
        let receipts: Vec<Value> = eph
            .into_iter()
            .filter(|e| e["type"] == "m.receipt")
            .collect();
        let done = receipts.iter().any(|r| {
            r["content"]
                .as_object()
                .into_iter()
                .flat_map(|c| c.values())
                .any(|by_kind| by_kind[kind].get(user).is_some())
        });
        seen.extend(receipts);
        if done {
            return seen;
        }
    }
}

#[tokio::test]
async fn threaded_receipts_and_private_receipts_of_its_own_users_only() {
    let port = free_port();
    let (node, _dir) = node_with(port, true).await;
    let mut service = Service::start(port, node.addr()).await;
    let (alice, shared, _private, _device) = rooms(&node).await;
    let alice_id = user_id("alice");
    let bob = user_id("bridge_bob");
    let event = send_text(&node, &alice, &shared, "t1", "hello").await;
    let receipt = |kind: &str| room_path(&shared, &format!("receipt/{kind}/{}", urlencode(&event)));

    // Alice's private receipt first (hers only), then a threaded one, then bob's private one:
    // everything before bob's has arrived once bob's has.
    ok(post(&node, &receipt("m.read.private"), &alice, &json!({})).await);
    ok(post(
        &node,
        &receipt("m.read"),
        &alice,
        &json!({"thread_id": "main"}),
    )
    .await);
    ok(post(
        &node,
        &as_user(&receipt("m.read.private"), &bob),
        AS_TOKEN,
        &json!({}),
    )
    .await);
    let seen = receipts_until(&mut service, "m.read.private", &bob).await;
    let for_event: Vec<&Value> = seen.iter().map(|r| &r["content"][&event]).collect();
    assert!(
        for_event
            .iter()
            .any(|c| c["m.read"][&alice_id]["thread_id"] == "main"),
        "the threaded receipt with its thread: {seen:?}"
    );
    assert!(
        for_event
            .iter()
            .all(|c| c["m.read.private"].get(&alice_id).is_none()),
        "alice's private receipt is not the service's: {seen:?}"
    );
    assert!(
        for_event
            .iter()
            .any(|c| c["m.read.private"][&bob]["ts"].is_u64()),
        "{seen:?}"
    );
}

#[tokio::test]
async fn presence_of_users_sharing_a_room_with_its_users_and_not_of_others() {
    let port = free_port();
    let (node, _dir) = node_with(port, true).await;
    let mut service = Service::start(port, node.addr()).await;
    let (alice, _shared, _private, _device) = rooms(&node).await;
    let carol = register(&node, "carol").await;
    let presence = |user: &str| format!("{V3}/presence/{}/status", urlencode(&user_id(user)));

    // Carol shares no room with the service's users; alice does (the shared room). Carol's
    // change comes first: it would be in the transaction holding alice's, or an earlier one.
    ok(put(
        &node,
        &presence("carol"),
        &carol,
        &json!({"presence": "online", "status_msg": "carol here"}),
    )
    .await);
    ok(put(
        &node,
        &presence("alice"),
        &alice,
        &json!({"presence": "unavailable", "status_msg": "alice here"}),
    )
    .await);
    let mut seen: Vec<Value> = Vec::new();
    let alice_presence = loop {
        let (eph, _) = next_ephemeral(&mut service).await;
        let mut found = None;
        for e in eph.into_iter().filter(|e| e["type"] == "m.presence") {
            if e["content"]["status_msg"] == "alice here" {
                found = Some(e.clone());
            }
            seen.push(e);
        }
        if let Some(p) = found {
            break p;
        }
    };
    assert_eq!(alice_presence["sender"], user_id("alice").as_str());
    assert_eq!(alice_presence["content"]["presence"], "unavailable");
    assert!(
        seen.iter()
            .all(|p| p["sender"] != user_id("carol").as_str()),
        "carol shares no room with its users: {seen:?}"
    );
}
