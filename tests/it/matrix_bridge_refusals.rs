//! An `update` to a data object's change feed that its room cannot take is answered to the sender
//! (issue 10, defect 6), never dropped silently: refused before routing when the bus can tell
//! (over the event size limit: 413; a string that is not Unicode: 400), answered by the bridge
//! when the room refuses it (a float, which canonical JSON forbids: 400). The room gets exactly
//! the updates nobody was told were refused.

use serde_json::{Value, json};

use crate::support::matrix::{V3, get, ok, post, register, urlencode};
use crate::support::{DOMAIN, Rt, TestNode, sm_endpoint};

/// A runtime with one hyperty subscribed to `object`'s changes (which creates the object's room).
async fn subscribed_hyperty(node: &TestNode, object: &str) -> (Rt, String) {
    let mut rt = Rt::open(node, "rt-refusals").await;
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

/// The `org.rethink.update` and `m.room.message` contents of a room, oldest first.
async fn bridged_contents(node: &TestNode, token: &str, room: &str) -> Vec<Value> {
    let (status, page) = get(
        node,
        &format!("{V3}/rooms/{room}/messages?dir=f&limit=1000"),
        token,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "org.rethink.update" || e["type"] == "m.room.message")
        .map(|e| e["content"].clone())
        .collect()
}

/// Long-polls `/sync` until the room's timeline shows the `marker` update.
async fn wait_for_marker(node: &TestNode, token: &str, room: &str) {
    let mut since: Option<String> = None;
    for _ in 0..20 {
        let path = match &since {
            Some(s) => format!("{V3}/sync?timeout=10000&since={s}"),
            None => format!("{V3}/sync?timeout=0"),
        };
        let body = ok(get(node, &path, token).await);
        since = Some(body["next_batch"].as_str().unwrap().to_owned());
        let events = &body["rooms"]["join"][room]["timeline"]["events"];
        if events
            .as_array()
            .is_some_and(|es| es.iter().any(|e| e["content"]["value"]["text"] == "marker"))
        {
            return;
        }
    }
    panic!("the marker update never reached the room");
}

#[tokio::test]
async fn updates_the_room_cannot_take_are_answered_to_their_sender() {
    let node = TestNode::spawn().await;
    let object = format!("comm://{DOMAIN}/refusals");
    let changes = format!("{object}/changes");
    let (mut rt, hyperty) = subscribed_hyperty(&node, &object).await;

    // 70 KB: over what one room event holds.
    let big = json!({"id": 20, "type": "update", "from": hyperty, "to": changes,
        "body": {"value": {"text": "x".repeat(70_000)}}});
    rt.send(&big).await;
    let answer = rt.recv_response(&json!(20)).await;
    assert_eq!(answer["body"]["code"], 413, "{answer}");
    let why = answer["body"]["description"].as_str().unwrap();
    assert!(why.contains("65,536"), "{why}");

    // A lone surrogate escape.
    let frame = format!(
        r#"{{"id":21,"type":"update","from":"{hyperty}","to":"{changes}","body":{{"value":{{"text":"\ud800"}}}}}}"#
    );
    rt.send_text(&frame).await;
    let answer = rt.recv_response(&json!(21)).await;
    assert_eq!(answer["body"]["code"], 400, "{answer}");
    assert!(
        answer["body"]["description"]
            .as_str()
            .unwrap()
            .contains("Unicode"),
        "{answer}"
    );

    // A float: routed, then refused by the room (canonical JSON has no floats); the bridge
    // answers with the update's id.
    rt.send(
        &json!({"id": "f-22", "type": "update", "from": hyperty, "to": changes,
        "body": {"value": {"ratio": 0.5}}}),
    )
    .await;
    let answer = rt.recv_response(&json!("f-22")).await;
    assert_eq!(answer["body"]["code"], 400, "{answer}");
    assert_eq!(answer["from"], json!(changes), "{answer}");
    assert!(
        answer["body"]["description"]
            .as_str()
            .unwrap()
            .contains("room refused"),
        "{answer}"
    );

    // A good update after them reaches the room, and it is the only one there.
    let good = json!({"value": {"text": "fine"}});
    rt.send(&json!({"id": 23, "type": "update", "from": hyperty, "to": changes, "body": good}))
        .await;
    let alice = register(&node, "alice").await;
    let alias = urlencode(&format!("#_hyperty_comm.refusals:{DOMAIN}"));
    let joined = ok(post(&node, &format!("{V3}/join/{alias}"), &alice, &json!({})).await);
    let room = joined["room_id"].as_str().unwrap().to_owned();
    // The bridge handles events in order: once a later marker is in the room, so is the good one.
    rt.send(
        &json!({"id": 24, "type": "update", "from": hyperty, "to": changes,
        "body": {"value": {"text": "marker"}}}),
    )
    .await;
    wait_for_marker(&node, &alice, &room).await;
    let contents = bridged_contents(&node, &alice, &room).await;
    let texts: Vec<&Value> = contents.iter().map(|c| &c["value"]).collect();
    assert_eq!(
        texts,
        [&json!({"text": "fine"}), &json!({"text": "marker"})],
        "{contents:?}"
    );
}
