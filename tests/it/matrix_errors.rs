//! Matrix rooms over raw HTTP/1.1: every error path answers its exact status and `errcode`,
//! and a refused request changes nothing (history and state are compared before and after).
//! Also the `/sync` long-poll, `/sync` tokens as `/messages` tokens, transaction IDs, and the
//! durability of every acknowledged send across a kill.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::TestNode;
use crate::support::matrix::{
    V3, assert_error, bodies, call, create_room, get, messages, ok, post, put, register, send_text,
    urlencode, user_id, whole_history,
};

/// Alice's private room (bob is not in it): tokens of alice and bob, and the room ID.
async fn alices_room(node: &TestNode) -> (String, String, String) {
    let alice = register(node, "alice").await;
    let bob = register(node, "bob").await;
    let room = create_room(node, &alice, &json!({"name": "Alice only"})).await;
    (alice, bob, room)
}

fn send_path(room: &str, txn: &str) -> String {
    format!("{V3}/rooms/{room}/send/m.room.message/{txn}")
}

fn text(body: &str) -> Value {
    json!({"msgtype": "m.text", "body": body})
}

/// The current state of a room as `token` sees it, sorted, for before/after comparisons.
async fn state(node: &TestNode, token: &str, room: &str) -> Vec<Value> {
    let (status, body) = get(node, &format!("{V3}/rooms/{room}/state"), token).await;
    assert_eq!(status, 200, "{body}");
    let mut events = body.as_array().expect("state is an array").clone();
    events.sort_by_key(|e| e["event_id"].as_str().unwrap_or_default().to_owned());
    events
}

async fn joined_rooms(node: &TestNode, token: &str) -> Vec<Value> {
    let body = ok(get(node, &format!("{V3}/joined_rooms"), token).await);
    body["joined_rooms"].as_array().unwrap().clone()
}

fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["event_id"].as_str().expect("event_id").to_owned())
        .collect()
}

// --- authentication -----------------------------------------------------------------------------

#[tokio::test]
async fn a_missing_token_is_401_m_missing_token() {
    let node = TestNode::spawn().await;
    let (alice, _, room) = alices_room(&node).await;
    let before = whole_history(&node, &alice, &room).await;
    let body = text("no token").to_string();
    let answer = call(
        &node,
        "PUT",
        &send_path(&room, "t1"),
        None,
        Some(body.as_bytes()),
    )
    .await;
    assert_error(&answer, 401, "M_MISSING_TOKEN");
    for path in [
        format!("{V3}/joined_rooms"),
        format!("{V3}/rooms/{room}/messages?dir=b"),
        format!("{V3}/sync"),
    ] {
        assert_error(
            &call(&node, "GET", &path, None, None).await,
            401,
            "M_MISSING_TOKEN",
        );
    }
    assert_eq!(whole_history(&node, &alice, &room).await, before);
}

#[tokio::test]
async fn an_unknown_token_is_401_m_unknown_token() {
    let node = TestNode::spawn().await;
    let (alice, _, room) = alices_room(&node).await;
    let before = whole_history(&node, &alice, &room).await;
    let answer = put(
        &node,
        &send_path(&room, "t1"),
        "rtm_forged",
        &text("forged"),
    )
    .await;
    assert_error(&answer, 401, "M_UNKNOWN_TOKEN");
    assert_error(
        &post(&node, &format!("{V3}/createRoom"), "rtm_forged", &json!({})).await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    assert_eq!(whole_history(&node, &alice, &room).await, before);
}

// --- malformed requests ---------------------------------------------------------------------------

#[tokio::test]
async fn malformed_json_is_400_m_not_json_and_stores_nothing() {
    let node = TestNode::spawn().await;
    let (alice, _, room) = alices_room(&node).await;
    let before = whole_history(&node, &alice, &room).await;
    for bad in [
        &b"{\"msgtype\": \"m.text\", \"body\": "[..],
        b"not json",
        b"{'a': 1}",
    ] {
        let answer = call(
            &node,
            "PUT",
            &send_path(&room, "t1"),
            Some(&alice),
            Some(bad),
        )
        .await;
        assert_error(&answer, 400, "M_NOT_JSON");
    }
    let answer = call(
        &node,
        "POST",
        &format!("{V3}/createRoom"),
        Some(&alice),
        Some(b"{\"name\":"),
    )
    .await;
    assert_error(&answer, 400, "M_NOT_JSON");
    assert_eq!(whole_history(&node, &alice, &room).await, before);
    assert_eq!(joined_rooms(&node, &alice).await.len(), 1);
}

#[tokio::test]
async fn wrong_field_types_are_400_m_bad_json() {
    let node = TestNode::spawn().await;
    let (alice, _, room) = alices_room(&node).await;
    let rooms_before = joined_rooms(&node, &alice).await;
    let answer = post(
        &node,
        &format!("{V3}/createRoom"),
        &alice,
        &json!({"name": 5}),
    )
    .await;
    assert_error(&answer, 400, "M_BAD_JSON");
    let answer = post(
        &node,
        &format!("{V3}/createRoom"),
        &alice,
        &json!({"invite": "@bob:example.com"}),
    )
    .await;
    assert_error(&answer, 400, "M_BAD_JSON");
    assert_eq!(joined_rooms(&node, &alice).await, rooms_before);

    let state_before = state(&node, &alice, &room).await;
    let answer = post(
        &node,
        &format!("{V3}/rooms/{room}/invite"),
        &alice,
        &json!({"user_id": 42}),
    )
    .await;
    assert_error(&answer, 400, "M_BAD_JSON");
    assert_eq!(state(&node, &alice, &room).await, state_before);
}

#[tokio::test]
async fn event_content_that_is_not_an_object_is_400_m_bad_json_and_stores_nothing() {
    let node = TestNode::spawn().await;
    let (alice, _, room) = alices_room(&node).await;
    let before = whole_history(&node, &alice, &room).await;
    for content in [json!([1, 2]), json!("text"), json!(7)] {
        let answer = put(&node, &send_path(&room, "t-array"), &alice, &content).await;
        assert_error(&answer, 400, "M_BAD_JSON");
    }
    assert_eq!(whole_history(&node, &alice, &room).await, before);
}

#[tokio::test]
async fn an_unknown_endpoint_is_404_m_unrecognized() {
    let node = TestNode::spawn().await;
    let (alice, _, room) = alices_room(&node).await;
    for path in [
        format!("{V3}/rooms/{room}/no_such_thing"),
        format!("{V3}/no/such/endpoint"),
        "/_matrix/client/v9/sync".to_owned(),
    ] {
        assert_error(&get(&node, &path, &alice).await, 404, "M_UNRECOGNIZED");
    }
}

// --- membership and power -----------------------------------------------------------------------

#[tokio::test]
async fn sending_to_a_room_you_are_not_in_is_403_and_stores_nothing() {
    let node = TestNode::spawn().await;
    let (alice, bob, room) = alices_room(&node).await;
    let before = whole_history(&node, &alice, &room).await;
    let answer = put(&node, &send_path(&room, "t1"), &bob, &text("let me in")).await;
    assert_error(&answer, 403, "M_FORBIDDEN");
    let answer = put(
        &node,
        &format!("{V3}/rooms/{room}/state/m.room.topic/"),
        &bob,
        &json!({"topic": "bob was here"}),
    )
    .await;
    assert_error(&answer, 403, "M_FORBIDDEN");
    // Nor may a stranger read the room.
    for path in [
        format!("{V3}/rooms/{room}/messages?dir=b"),
        format!("{V3}/rooms/{room}/state"),
        format!("{V3}/rooms/{room}/state/m.room.name/"),
    ] {
        assert_error(&get(&node, &path, &bob).await, 403, "M_FORBIDDEN");
    }
    assert_eq!(whole_history(&node, &alice, &room).await, before);
}

#[tokio::test]
async fn joining_an_invite_only_room_uninvited_is_403_and_changes_nothing() {
    let node = TestNode::spawn().await;
    let (alice, bob, room) = alices_room(&node).await;
    let before = state(&node, &alice, &room).await;
    let answer = post(&node, &format!("{V3}/rooms/{room}/join"), &bob, &json!({})).await;
    assert_error(&answer, 403, "M_FORBIDDEN");
    let answer = post(&node, &format!("{V3}/join/{room}"), &bob, &json!({})).await;
    assert_error(&answer, 403, "M_FORBIDDEN");
    assert_eq!(state(&node, &alice, &room).await, before);
    assert!(joined_rooms(&node, &bob).await.is_empty());
}

#[tokio::test]
async fn kicking_without_power_is_403_and_changes_nothing() {
    let node = TestNode::spawn().await;
    let (alice, bob, room) = alices_room(&node).await;
    ok(post(
        &node,
        &format!("{V3}/rooms/{room}/invite"),
        &alice,
        &json!({"user_id": user_id("bob")}),
    )
    .await);
    ok(post(&node, &format!("{V3}/rooms/{room}/join"), &bob, &json!({})).await);
    let before = state(&node, &alice, &room).await;
    let answer = post(
        &node,
        &format!("{V3}/rooms/{room}/kick"),
        &bob,
        &json!({"user_id": user_id("alice"), "reason": "coup"}),
    )
    .await;
    assert_error(&answer, 403, "M_FORBIDDEN");
    let answer = post(
        &node,
        &format!("{V3}/rooms/{room}/ban"),
        &bob,
        &json!({"user_id": user_id("alice")}),
    )
    .await;
    assert_error(&answer, 403, "M_FORBIDDEN");
    // Nor may bob (power 0) change the room's name (needs 50).
    let answer = put(
        &node,
        &format!("{V3}/rooms/{room}/state/m.room.name/"),
        &bob,
        &json!({"name": "Bob's now"}),
    )
    .await;
    assert_error(&answer, 403, "M_FORBIDDEN");
    assert_eq!(state(&node, &alice, &room).await, before);
    assert_eq!(state(&node, &bob, &room).await, before);
}

// --- state ----------------------------------------------------------------------------------------

#[tokio::test]
async fn state_of_an_unknown_room_is_404_m_not_found() {
    let node = TestNode::spawn().await;
    let alice = register(&node, "alice").await;
    for path in [
        format!("{V3}/rooms/!nosuchroom:example.com/state"),
        format!("{V3}/rooms/!nosuchroom:example.com/state/m.room.name/"),
    ] {
        assert_error(&get(&node, &path, &alice).await, 404, "M_NOT_FOUND");
    }
}

#[tokio::test]
async fn a_state_event_the_room_does_not_have_is_404_m_not_found() {
    let node = TestNode::spawn().await;
    let (alice, _, room) = alices_room(&node).await;
    let answer = get(
        &node,
        &format!("{V3}/rooms/{room}/state/m.room.encryption/"),
        &alice,
    )
    .await;
    assert_error(&answer, 404, "M_NOT_FOUND");
    let answer = get(
        &node,
        &format!("{V3}/rooms/{room}/state/m.room.member/@nobody:example.com"),
        &alice,
    )
    .await;
    assert_error(&answer, 404, "M_NOT_FOUND");
}

#[tokio::test]
async fn the_empty_state_key_works_with_and_without_the_trailing_slash() {
    let node = TestNode::spawn().await;
    let (alice, _, room) = alices_room(&node).await;
    let with_slash = format!("{V3}/rooms/{room}/state/m.room.name/");
    let without = format!("{V3}/rooms/{room}/state/m.room.name");

    assert_eq!(
        ok(get(&node, &with_slash, &alice).await),
        json!({"name": "Alice only"})
    );
    assert_eq!(
        ok(get(&node, &without, &alice).await),
        json!({"name": "Alice only"})
    );

    let first = ok(put(&node, &without, &alice, &json!({"name": "One"})).await);
    assert!(first["event_id"].is_string(), "{first}");
    assert_eq!(
        ok(get(&node, &with_slash, &alice).await),
        json!({"name": "One"})
    );
    let second = ok(put(&node, &with_slash, &alice, &json!({"name": "Two"})).await);
    assert_ne!(first["event_id"], second["event_id"]);
    assert_eq!(
        ok(get(&node, &without, &alice).await),
        json!({"name": "Two"})
    );

    // Both writes are state events with the empty key.
    let names: Vec<Value> = state(&node, &alice, &room)
        .await
        .into_iter()
        .filter(|e| e["type"] == "m.room.name")
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    assert_eq!(names[0]["state_key"], "");
    assert_eq!(names[0]["event_id"], second["event_id"]);
}

// --- aliases and reserved names ---------------------------------------------------------------------

#[tokio::test]
async fn an_alias_already_taken_by_create_room_is_400_m_room_in_use() {
    let node = TestNode::spawn().await;
    let alice = register(&node, "alice").await;
    let bob = register(&node, "bob").await;
    let first = create_room(&node, &alice, &json!({"room_alias_name": "lobby"})).await;
    let answer = post(
        &node,
        &format!("{V3}/createRoom"),
        &bob,
        &json!({"room_alias_name": "lobby", "name": "Second lobby"}),
    )
    .await;
    assert_error(&answer, 400, "M_ROOM_IN_USE");
    assert!(
        joined_rooms(&node, &bob).await.is_empty(),
        "no room was made"
    );
    let alias = urlencode("#lobby:example.com");
    let resolved = ok(get(&node, &format!("{V3}/directory/room/{alias}"), &bob).await);
    assert_eq!(
        resolved["room_id"],
        first.as_str(),
        "the alias still names the first room"
    );
}

#[tokio::test]
async fn registering_in_the_reserved_hyperty_namespace_is_m_exclusive() {
    let node = TestNode::spawn().await;
    let req = json!({
        "username": "_hyperty_abc",
        "password": "pw",
        "auth": {"type": "m.login.dummy"},
    })
    .to_string();
    let answer = call(
        &node,
        "POST",
        &format!("{V3}/register"),
        None,
        Some(req.as_bytes()),
    )
    .await;
    assert_error(&answer, 400, "M_EXCLUSIVE");
}

#[tokio::test]
async fn room_aliases_in_the_reserved_hyperty_namespace_are_m_exclusive() {
    let node = TestNode::spawn().await;
    let alice = register(&node, "alice").await;
    let answer = post(
        &node,
        &format!("{V3}/createRoom"),
        &alice,
        &json!({"room_alias_name": "_hyperty_abc"}),
    )
    .await;
    assert_error(&answer, 400, "M_EXCLUSIVE");
    assert!(
        joined_rooms(&node, &alice).await.is_empty(),
        "no room was made"
    );

    let room = create_room(&node, &alice, &json!({})).await;
    let alias = urlencode("#_hyperty_abc:example.com");
    let answer = put(
        &node,
        &format!("{V3}/directory/room/{alias}"),
        &alice,
        &json!({"room_id": room}),
    )
    .await;
    assert_error(&answer, 400, "M_EXCLUSIVE");
}

// --- size -------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_event_over_65536_bytes_is_413_m_too_large_and_not_stored() {
    let node = TestNode::spawn().await;
    let (alice, _, room) = alices_room(&node).await;
    let before = whole_history(&node, &alice, &room).await;
    // The content alone over the limit, and content under it whose event is over it.
    for len in [70_000, 65_400] {
        let answer = put(
            &node,
            &send_path(&room, &format!("big{len}")),
            &alice,
            &text(&"x".repeat(len)),
        )
        .await;
        assert_error(&answer, 413, "M_TOO_LARGE");
    }
    assert_eq!(whole_history(&node, &alice, &room).await, before);
    // A large event under the limit is fine.
    let id = send_text(&node, &alice, &room, "fits", &"y".repeat(60_000)).await;
    let after = whole_history(&node, &alice, &room).await;
    assert_eq!(after.len(), before.len() + 1);
    assert_eq!(after.last().unwrap()["event_id"], id.as_str());
}

// --- transactions -------------------------------------------------------------------------------

#[tokio::test]
async fn a_repeated_transaction_id_returns_the_first_event_and_creates_nothing() {
    let node = TestNode::spawn().await;
    let (alice, _, room) = alices_room(&node).await;
    let before = whole_history(&node, &alice, &room).await.len();
    let first = send_text(&node, &alice, &room, "txn-1", "once").await;
    let again = send_text(&node, &alice, &room, "txn-1", "once").await;
    assert_eq!(again, first);
    // Even with other content: the transaction ID decides.
    let other = send_text(&node, &alice, &room, "txn-1", "twice?").await;
    assert_eq!(other, first);
    let history = whole_history(&node, &alice, &room).await;
    assert_eq!(history.len(), before + 1);
    assert_eq!(bodies(&history), ["once"]);

    // The same transaction ID from another device is another transaction.
    let login = json!({
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": "alice"},
        "password": "pw-alice",
    })
    .to_string();
    let (status, second_device) = call(
        &node,
        "POST",
        &format!("{V3}/login"),
        None,
        Some(login.as_bytes()),
    )
    .await;
    assert_eq!(status, 200, "{second_device}");
    let token2 = second_device["access_token"].as_str().unwrap();
    let from_other_device = send_text(&node, token2, &room, "txn-1", "once").await;
    assert_ne!(from_other_device, first);
    assert_eq!(whole_history(&node, &alice, &room).await.len(), before + 2);
}

#[tokio::test]
async fn a_repeated_transaction_id_is_recognised_after_a_kill() {
    let node = TestNode::spawn().await;
    let (alice, _, room) = alices_room(&node).await;
    let first = send_text(&node, &alice, &room, "txn-k", "durable once").await;
    let node = node.kill_and_restart().await;
    let again = send_text(&node, &alice, &room, "txn-k", "durable once").await;
    assert_eq!(again, first);
    assert_eq!(
        bodies(&whole_history(&node, &alice, &room).await),
        ["durable once"]
    );
}

// --- /sync --------------------------------------------------------------------------------------------

async fn next_batch(node: &TestNode, token: &str) -> String {
    let body = ok(get(node, &format!("{V3}/sync"), token).await);
    body["next_batch"].as_str().expect("next_batch").to_owned()
}

#[tokio::test]
async fn a_sync_long_poll_wakes_as_soon_as_a_message_is_sent() {
    let node = TestNode::spawn().await;
    let (alice, bob, room) = alices_room(&node).await;
    ok(post(
        &node,
        &format!("{V3}/rooms/{room}/invite"),
        &alice,
        &json!({"user_id": user_id("bob")}),
    )
    .await);
    ok(post(&node, &format!("{V3}/rooms/{room}/join"), &bob, &json!({})).await);
    let since = next_batch(&node, &bob).await;

    let started = Instant::now();
    let poll = {
        let path = format!("{V3}/sync?since={since}&timeout=10000");
        let addr_node = &node;
        let bob = bob.clone();
        async move { get(addr_node, &path, &bob).await }
    };
    let send = async {
        // Give the long-poll time to start waiting (a head start, not an assertion).
        tokio::time::sleep(Duration::from_millis(300)).await;
        send_text(&node, &alice, &room, "wake", "wake up bob").await
    };
    let ((status, body), sent) = tokio::join!(poll, send);
    let elapsed = started.elapsed();
    assert_eq!(status, 200, "{body}");
    let events = body["rooms"]["join"][&room]["timeline"]["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no timeline for the room: {body}"));
    assert_eq!(ids(events), [sent], "{body}");
    assert_eq!(events[0]["content"]["body"], "wake up bob");
    assert!(
        elapsed < Duration::from_secs(5),
        "the long-poll took {elapsed:?} to notice a message"
    );
    assert_ne!(body["next_batch"], since.as_str());
}

#[tokio::test]
async fn a_sync_with_nothing_new_waits_for_its_timeout_then_answers_empty() {
    let node = TestNode::spawn().await;
    let (alice, _, _) = alices_room(&node).await;
    let since = next_batch(&node, &alice).await;
    let started = Instant::now();
    let body = ok(get(
        &node,
        &format!("{V3}/sync?since={since}&timeout=600"),
        &alice,
    )
    .await);
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "did not wait"
    );
    assert!(
        body["rooms"]["join"]
            .as_object()
            .is_none_or(|j| j.is_empty()),
        "{body}"
    );
    assert_eq!(body["next_batch"], since.as_str());
}

#[tokio::test]
async fn a_sync_next_batch_as_messages_from_includes_the_newest_event() {
    let node = TestNode::spawn().await;
    let (alice, _, room) = alices_room(&node).await;
    send_text(&node, &alice, &room, "a", "older").await;
    let newest = send_text(&node, &alice, &room, "b", "newest").await;
    let since = next_batch(&node, &alice).await;
    let page = messages(&node, &alice, &room, &format!("dir=b&limit=2&from={since}")).await;
    let chunk = page["chunk"].as_array().unwrap();
    assert_eq!(chunk[0]["event_id"], newest.as_str(), "{page}");
    assert_eq!(bodies(chunk), ["newest", "older"]);

    // And forwards from it there is nothing yet; a later message comes next.
    let page = messages(&node, &alice, &room, &format!("dir=f&from={since}")).await;
    assert_eq!(page["chunk"], json!([]), "{page}");
    let later = send_text(&node, &alice, &room, "c", "later").await;
    let page = messages(&node, &alice, &room, &format!("dir=f&from={since}")).await;
    assert_eq!(ids(page["chunk"].as_array().unwrap()), [later]);
}

// --- durability -------------------------------------------------------------------------------------

#[tokio::test]
async fn every_acknowledged_send_survives_a_kill() {
    let node = TestNode::spawn().await;
    let (alice, _, room) = alices_room(&node).await;
    // Concurrent senders, so commits are grouped.
    let sends = (0..20).map(|i| {
        let (node, alice, room) = (&node, &alice, &room);
        async move { send_text(node, alice, room, &format!("d{i}"), &format!("durable {i}")).await }
    });
    let acknowledged = futures_util::future::join_all(sends).await;
    let node = node.kill_and_restart().await;
    let history = whole_history(&node, &alice, &room).await;
    let stored = ids(&history);
    for id in &acknowledged {
        assert!(stored.contains(id), "acknowledged {id} lost in the kill");
    }
    let mut texts = bodies(&history);
    texts.sort();
    let mut expected: Vec<String> = (0..20).map(|i| format!("durable {i}")).collect();
    expected.sort();
    assert_eq!(texts, expected);
    // The room still works.
    send_text(&node, &alice, &room, "after", "after the kill").await;
}
