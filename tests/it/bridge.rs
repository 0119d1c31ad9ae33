//! The bridge between data objects and rooms (DESIGN.md section 5): a WebSocket hyperty and a
//! Matrix client exchange messages through one room, in both directions, and the history is
//! visible through `/messages`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::matrix::{
    V3, bodies, get, ok, post, register, send_text, urlencode, whole_history,
};
use crate::support::{DOMAIN, Rt, TestNode, sm_endpoint};

/// The room alias of a data object `comm://<DOMAIN>/<id>`.
fn object_alias(id: &str) -> String {
    format!("#_hyperty_comm.{id}:{DOMAIN}")
}

/// A hyperty on the bus: a runtime with one allocated address, subscribed to `object`'s changes.
async fn subscribed_hyperty(node: &TestNode, name: &str, object: &str) -> (Rt, String) {
    let mut rt = Rt::open(node, name).await;
    let hyperty = rt.allocate(1).await.remove(0);
    let answer = rt
        .request(
            json!({"type": "subscribe", "from": hyperty, "to": sm_endpoint(),
            "body": {"resources": [format!("{object}/changes")]}}),
        )
        .await;
    assert_eq!(answer["body"]["code"], 200, "{answer}");
    (rt, hyperty)
}

/// Resolves the object's room alias, waiting for the bridge to create it.
async fn room_of(node: &TestNode, token: &str, id: &str) -> String {
    let path = format!("{V3}/directory/room/{}", urlencode(&object_alias(id)));
    for _ in 0..100 {
        let (status, body) = get(node, &path, token).await;
        if status == 200 {
            return body["room_id"].as_str().unwrap().to_owned();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the bridge never created the room of {id}");
}

/// The messages of a room, oldest first, once there are at least `n` `m.room.message`s.
async fn wait_for_messages(node: &TestNode, token: &str, room: &str, n: usize) -> Vec<Value> {
    for _ in 0..100 {
        let events: Vec<Value> = whole_history(node, token, room)
            .await
            .into_iter()
            .filter(|e| e["type"] == "m.room.message")
            .collect();
        if events.len() >= n {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("fewer than {n} messages reached room {room}");
}

#[tokio::test]
async fn a_hyperty_and_a_matrix_user_talk_through_the_objects_room() {
    let node = TestNode::spawn().await;
    let object = format!("comm://{DOMAIN}/chat-1");
    let (mut rt, hyperty) = subscribed_hyperty(&node, "rt-bridge", &object).await;
    let alice = register(&node, "alice").await;
    let room = room_of(&node, &alice, "chat-1").await;

    // The hyperty's virtual user is in the room; the Matrix user joins by the object's alias.
    ok(post(
        &node,
        &format!("{V3}/join/{}", urlencode(&object_alias("chat-1"))),
        &alice,
        &json!({}),
    )
    .await);
    let (_, members) = get(&node, &format!("{V3}/rooms/{room}/joined_members"), &alice).await;
    let joined: Vec<&String> = members["joined"].as_object().unwrap().keys().collect();
    assert_eq!(joined.len(), 2, "{members}");
    assert!(
        joined.iter().any(|u| u.starts_with("@_hyperty_")),
        "{members}"
    );

    // Bus → room: an update carrying a text message becomes an m.room.message of the virtual user.
    rt.send(
        &json!({"id": 10, "type": "update", "from": hyperty, "to": format!("{object}/changes"),
        "body": {"value": {"msgtype": "m.text", "body": "hello from the bus"}}}),
    )
    .await;
    let events = wait_for_messages(&node, &alice, &room, 1).await;
    assert_eq!(bodies(&events), ["hello from the bus"]);
    assert!(
        events[0]["sender"]
            .as_str()
            .unwrap()
            .starts_with("@_hyperty_")
    );

    // Room → bus: alice's message reaches the subscribed hyperty as an update of the object.
    let event_id = send_text(&node, &alice, &room, "t1", "hello from matrix").await;
    let got = rt.recv().await;
    assert_eq!(got["type"], "update");
    assert_eq!(got["from"], json!(object));
    assert_eq!(got["to"], json!(format!("{object}/changes")));
    assert_eq!(got["body"]["value"]["body"], "hello from matrix");
    assert_eq!(got["body"]["source"], json!(format!("@alice:{DOMAIN}")));
    assert_eq!(got["body"]["eventId"], json!(event_id));

    // Both directions are in the room's history, in order.
    let events = wait_for_messages(&node, &alice, &room, 2).await;
    assert_eq!(bodies(&events), ["hello from the bus", "hello from matrix"]);
}

#[tokio::test]
async fn other_updates_are_kept_as_rethink_update_events() {
    let node = TestNode::spawn().await;
    let object = format!("comm://{DOMAIN}/doc-9");
    let (mut rt, hyperty) = subscribed_hyperty(&node, "rt-doc", &object).await;
    let alice = register(&node, "alice").await;
    let room = room_of(&node, &alice, "doc-9").await;
    ok(post(
        &node,
        &format!("{V3}/rooms/{room}/join"),
        &alice,
        &json!({}),
    )
    .await);
    let body = json!({"attribute": "participants.bob", "value": {"status": "away"}});
    rt.send(&json!({"id": 11, "type": "update", "from": hyperty,
        "to": format!("{object}/changes"), "body": body}))
        .await;
    for _ in 0..100 {
        let updates: Vec<Value> = whole_history(&node, &alice, &room)
            .await
            .into_iter()
            .filter(|e| e["type"] == "org.rethink.update")
            .collect();
        if let Some(update) = updates.first() {
            assert_eq!(update["content"], body);
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the update never reached the room");
}

#[tokio::test]
async fn the_reserved_namespace_is_closed_to_clients() {
    let node = TestNode::spawn().await;
    let alice = register(&node, "alice").await;
    let room = crate::support::matrix::create_room(&node, &alice, &json!({})).await;
    let answer = crate::support::matrix::put(
        &node,
        &format!("{V3}/directory/room/{}", urlencode(&object_alias("mine"))),
        &alice,
        &json!({"room_id": room}),
    )
    .await;
    crate::support::matrix::assert_error(&answer, 400, "M_EXCLUSIVE");
}
