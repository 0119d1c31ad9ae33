//! Matrix redactions and transaction IDs over raw HTTP/1.1: a transaction ID is scoped to its
//! room and its endpoint, a redacted event keeps no content and names its redaction in
//! `unsigned`, and a redacted state event leaves redacted current state, across a restart.

use serde_json::{Value, json};

use crate::support::TestNode;
use crate::support::matrix::{
    bodies, create_room, get, get_event, ok, put, room_of_alice, room_path, send_text, user_id,
    whole_history,
};

/// `PUT /rooms/{room}/redact/{event}/{txn}` with `body`: the 200 answer's body.
async fn redact(
    node: &TestNode,
    token: &str,
    room: &str,
    event: &str,
    txn: &str,
    body: &Value,
) -> Value {
    ok(put(
        node,
        &room_path(room, &format!("redact/{event}/{txn}")),
        token,
        body,
    )
    .await)
}

#[tokio::test]
async fn a_transaction_id_reused_in_another_room_sends_to_that_room() {
    let node = TestNode::spawn().await;
    let (alice, one) = room_of_alice(&node, &json!({})).await;
    let two = create_room(&node, &alice, &json!({})).await;
    let in_one = send_text(&node, &alice, &one, "1", "to room one").await;
    let in_two = send_text(&node, &alice, &two, "1", "to room two").await;
    assert_ne!(
        in_one, in_two,
        "room two's send was answered with room one's event"
    );
    assert_eq!(
        bodies(&whole_history(&node, &alice, &two).await),
        ["to room two"]
    );
}

#[tokio::test]
async fn a_redaction_reusing_a_sends_transaction_id_is_still_a_redaction() {
    let node = TestNode::spawn().await;
    let (alice, room) = room_of_alice(&node, &json!({})).await;
    let sent = send_text(&node, &alice, &room, "1", "to redact").await;
    // Transaction IDs are scoped to one endpoint: `send` and `redact` are two.
    let redaction = redact(&node, &alice, &room, &sent, "1", &json!({})).await;
    let redaction = redaction["event_id"].as_str().unwrap();
    assert_ne!(
        redaction, sent,
        "the redaction was answered with the send's event"
    );
    let event = ok(get_event(&node, &alice, &room, redaction).await);
    assert_eq!(event["type"], "m.room.redaction", "{event}");
    let target = ok(get_event(&node, &alice, &room, &sent).await);
    assert_eq!(target["content"], json!({}), "{target}");
}

#[tokio::test]
async fn a_redacted_state_event_leaves_redacted_state() {
    let node = TestNode::spawn().await;
    let (alice, room) = room_of_alice(&node, &json!({"topic": "to be redacted"})).await;
    let path = room_path(&room, "state/m.room.topic/");
    let topic = ok(get(&node, &format!("{path}?format=event"), &alice).await);
    let topic_id = topic["event_id"]
        .as_str()
        .expect("format=event gives the event");
    let spoiler = json!({"reason": "spoiler"});
    redact(&node, &alice, &room, topic_id, "r1", &spoiler).await;
    let now = ok(get(&node, &path, &alice).await);
    assert_eq!(now, json!({}), "current state after the redaction");
    let node = node.restart().await;
    let after_restart = ok(get(&node, &path, &alice).await);
    assert_eq!(after_restart, now, "the same after a restart");
}

#[tokio::test]
async fn a_redacted_event_names_its_redaction_event_in_unsigned() {
    let node = TestNode::spawn().await;
    let (alice, room) = room_of_alice(&node, &json!({})).await;
    let id = send_text(&node, &alice, &room, "m", "redact me").await;
    let why_not = json!({"reason": "why not"});
    let redaction = redact(&node, &alice, &room, &id, "r", &why_not).await;
    let event = ok(get_event(&node, &alice, &room, &id).await);
    let because = &event["unsigned"]["redacted_because"];
    assert_eq!(because["event_id"], redaction["event_id"], "{event}");
    // The spec's `redacted_because` is the redaction event itself (a ClientEvent).
    assert_eq!(because["type"], "m.room.redaction", "{event}");
    assert_eq!(because["sender"], user_id("alice"), "{event}");
    assert_eq!(because["content"]["reason"], "why not", "{event}");
}
