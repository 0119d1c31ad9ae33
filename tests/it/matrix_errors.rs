//! Matrix rooms over raw HTTP/1.1: every error path answers its exact status and `errcode`,
//! and a refused request changes nothing (history and state are compared before and after).
//! Also the `/sync` long-poll, `/sync` tokens as `/messages` tokens, transaction IDs, and the
//! durability of every acknowledged send across a kill (a SIGKILL of the node program).

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::matrix::{Served, woken};
use crate::support::matrix::{
    V3, anon_post, assert_error, bodies, call, create_room, event_ids, get, invite, join, login,
    messages, next_batch, ok, post, put, register, room_path, send_path, send_text, sync, text,
    urlencode, user_id, whole_history,
};
use crate::support::{NodeProcess, TestNode, wait_for_metric};

/// Alice's private room (bob is not in it): tokens of alice and bob, and the room ID.
async fn alices_room(node: &impl Served) -> (String, String, String) {
    let alice = register(node, "alice").await;
    let bob = register(node, "bob").await;
    let room = create_room(node, &alice, &json!({"name": "Alice only"})).await;
    (alice, bob, room)
}

/// A node with [`alices_room`], and the room's history as alice saw it then: refused requests
/// must leave it as it was.
struct Refusals {
    node: TestNode,
    alice: String,
    bob: String,
    room: String,
    history: Vec<Value>,
}

impl Refusals {
    async fn new() -> Self {
        let node = TestNode::spawn().await;
        let (alice, bob, room) = alices_room(&node).await;
        let history = whole_history(&node, &alice, &room).await;
        Self {
            node,
            alice,
            bob,
            room,
            history,
        }
    }

    /// `PUT` of `content` to the room's send endpoint (transaction `txn`) with `token`.
    async fn send(&self, token: &str, txn: &str, content: &Value) -> (u16, Value) {
        put(&self.node, &send_path(&self.room, txn), token, content).await
    }

    /// Asserts that alice sees the history she saw when the room was made.
    async fn assert_history_unchanged(&self) {
        let now = whole_history(&self.node, &self.alice, &self.room).await;
        assert_eq!(now, self.history);
    }
}

/// `POST /createRoom` with `body`: the whole answer.
async fn try_create_room(node: &TestNode, token: &str, body: &Value) -> (u16, Value) {
    post(node, &format!("{V3}/createRoom"), token, body).await
}

/// The current state of a room as `token` sees it, sorted, for before/after comparisons.
async fn state(node: &TestNode, token: &str, room: &str) -> Vec<Value> {
    let body = ok(get(node, &room_path(room, "state"), token).await);
    let mut events = body.as_array().expect("state is an array").clone();
    events.sort_by_key(|e| e["event_id"].as_str().unwrap_or_default().to_owned());
    events
}

async fn joined_rooms(node: &TestNode, token: &str) -> Vec<Value> {
    let body = ok(get(node, &format!("{V3}/joined_rooms"), token).await);
    body["joined_rooms"].as_array().unwrap().clone()
}

// --- authentication -----------------------------------------------------------------------------

#[tokio::test]
async fn a_missing_token_is_401_m_missing_token() {
    let t = Refusals::new().await;
    let body = text("no token").to_string();
    let path = send_path(&t.room, "t1");
    let answer = call(&t.node, "PUT", &path, None, Some(body.as_bytes())).await;
    assert_error(&answer, 401, "M_MISSING_TOKEN");
    for path in [
        format!("{V3}/joined_rooms"),
        room_path(&t.room, "messages?dir=b"),
        format!("{V3}/sync"),
    ] {
        assert_error(
            &call(&t.node, "GET", &path, None, None).await,
            401,
            "M_MISSING_TOKEN",
        );
    }
    t.assert_history_unchanged().await;
}

#[tokio::test]
async fn an_unknown_token_is_401_m_unknown_token() {
    let t = Refusals::new().await;
    let answer = t.send("rtm_forged", "t1", &text("forged")).await;
    assert_error(&answer, 401, "M_UNKNOWN_TOKEN");
    assert_error(
        &try_create_room(&t.node, "rtm_forged", &json!({})).await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    t.assert_history_unchanged().await;
}

// --- malformed requests ---------------------------------------------------------------------------

#[tokio::test]
async fn malformed_json_is_400_m_not_json_and_stores_nothing() {
    let t = Refusals::new().await;
    let alice = Some(t.alice.as_str());
    let path = send_path(&t.room, "t1");
    for bad in [
        &b"{\"msgtype\": \"m.text\", \"body\": "[..],
        b"not json",
        b"{'a': 1}",
    ] {
        let answer = call(&t.node, "PUT", &path, alice, Some(bad)).await;
        assert_error(&answer, 400, "M_NOT_JSON");
    }
    let create = format!("{V3}/createRoom");
    let answer = call(&t.node, "POST", &create, alice, Some(b"{\"name\":")).await;
    assert_error(&answer, 400, "M_NOT_JSON");
    t.assert_history_unchanged().await;
    assert_eq!(joined_rooms(&t.node, &t.alice).await.len(), 1);
}

#[tokio::test]
async fn wrong_field_types_are_400_m_bad_json() {
    let node = TestNode::spawn().await;
    let (alice, _, room) = alices_room(&node).await;
    let rooms_before = joined_rooms(&node, &alice).await;
    for body in [json!({"name": 5}), json!({"invite": "@bob:example.com"})] {
        let answer = try_create_room(&node, &alice, &body).await;
        assert_error(&answer, 400, "M_BAD_JSON");
    }
    assert_eq!(joined_rooms(&node, &alice).await, rooms_before);

    let state_before = state(&node, &alice, &room).await;
    let invite = room_path(&room, "invite");
    let answer = post(&node, &invite, &alice, &json!({"user_id": 42})).await;
    assert_error(&answer, 400, "M_BAD_JSON");
    assert_eq!(state(&node, &alice, &room).await, state_before);
}

/// One `createRoom` invites at most 100 users and sets at most 100 `initial_state` events (each
/// is an event of its own): beyond that 400 `M_INVALID_PARAM`, and no room is made.
#[tokio::test]
async fn create_room_with_too_many_invites_or_initial_events_is_400_and_makes_nothing() {
    let node = TestNode::spawn().await;
    let (alice, _, _) = alices_room(&node).await;
    let rooms_before = joined_rooms(&node, &alice).await;
    let invites: Vec<String> = (0..101).map(|i| format!("@u{i}:example.com")).collect();
    let state: Vec<Value> = (0..101)
        .map(|i| json!({"type": "x.state", "state_key": format!("k{i}"), "content": {}}))
        .collect();
    for body in [json!({"invite": invites}), json!({"initial_state": state})] {
        let answer = try_create_room(&node, &alice, &body).await;
        assert_error(&answer, 400, "M_INVALID_PARAM");
    }
    assert_eq!(joined_rooms(&node, &alice).await, rooms_before);
    // At the bound it is accepted.
    let invites: Vec<String> = (0..100).map(|i| format!("@u{i}:example.com")).collect();
    let answer = try_create_room(&node, &alice, &json!({"invite": invites})).await;
    assert_eq!(answer.0, 200, "{:?}", answer.1);
}

#[tokio::test]
async fn event_content_that_is_not_an_object_is_400_m_bad_json_and_stores_nothing() {
    let t = Refusals::new().await;
    for content in [json!([1, 2]), json!("text"), json!(7)] {
        let answer = t.send(&t.alice, "t-array", &content).await;
        assert_error(&answer, 400, "M_BAD_JSON");
    }
    t.assert_history_unchanged().await;
}

#[tokio::test]
async fn an_unknown_endpoint_is_404_m_unrecognized() {
    let node = TestNode::spawn().await;
    let (alice, _, room) = alices_room(&node).await;
    for path in [
        room_path(&room, "no_such_thing"),
        format!("{V3}/no/such/endpoint"),
        "/_matrix/client/v9/sync".to_owned(),
    ] {
        assert_error(&get(&node, &path, &alice).await, 404, "M_UNRECOGNIZED");
    }
}

// --- membership and power -----------------------------------------------------------------------

#[tokio::test]
async fn sending_to_a_room_you_are_not_in_is_403_and_stores_nothing() {
    let t = Refusals::new().await;
    let (node, bob, room) = (&t.node, &t.bob, &t.room);
    let answer = t.send(bob, "t1", &text("let me in")).await;
    assert_error(&answer, 403, "M_FORBIDDEN");
    let topic = json!({"topic": "bob was here"});
    let answer = put(node, &room_path(room, "state/m.room.topic/"), bob, &topic).await;
    assert_error(&answer, 403, "M_FORBIDDEN");
    // Nor may a stranger read the room.
    for rest in ["messages?dir=b", "state", "state/m.room.name/"] {
        assert_error(
            &get(node, &room_path(room, rest), bob).await,
            403,
            "M_FORBIDDEN",
        );
    }
    t.assert_history_unchanged().await;
}

#[tokio::test]
async fn joining_an_invite_only_room_uninvited_is_403_and_changes_nothing() {
    let node = TestNode::spawn().await;
    let (alice, bob, room) = alices_room(&node).await;
    let before = state(&node, &alice, &room).await;
    for path in [room_path(&room, "join"), format!("{V3}/join/{room}")] {
        let answer = post(&node, &path, &bob, &json!({})).await;
        assert_error(&answer, 403, "M_FORBIDDEN");
    }
    assert_eq!(state(&node, &alice, &room).await, before);
    assert!(joined_rooms(&node, &bob).await.is_empty());
}

#[tokio::test]
async fn kicking_without_power_is_403_and_changes_nothing() {
    let node = TestNode::spawn().await;
    let (alice, bob, room) = alices_room(&node).await;
    invite(&node, &alice, &room, &user_id("bob")).await;
    join(&node, &bob, &room).await;
    let before = state(&node, &alice, &room).await;
    let kick = json!({"user_id": user_id("alice"), "reason": "coup"});
    let ban = json!({"user_id": user_id("alice")});
    for (action, body) in [("kick", kick), ("ban", ban)] {
        let answer = post(&node, &room_path(&room, action), &bob, &body).await;
        assert_error(&answer, 403, "M_FORBIDDEN");
    }
    // Nor may bob (power 0) change the room's name (needs 50).
    let name = json!({"name": "Bob's now"});
    let answer = put(&node, &room_path(&room, "state/m.room.name/"), &bob, &name).await;
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
    for rest in [
        "state/m.room.encryption/",
        "state/m.room.member/@nobody:example.com",
    ] {
        let answer = get(&node, &room_path(&room, rest), &alice).await;
        assert_error(&answer, 404, "M_NOT_FOUND");
    }
}

#[tokio::test]
async fn the_empty_state_key_works_with_and_without_the_trailing_slash() {
    let node = TestNode::spawn().await;
    let (alice, _, room) = alices_room(&node).await;
    let with_slash = room_path(&room, "state/m.room.name/");
    let without = room_path(&room, "state/m.room.name");

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
    let second = json!({"room_alias_name": "lobby", "name": "Second lobby"});
    let answer = try_create_room(&node, &bob, &second).await;
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
    });
    let answer = anon_post(&node, &format!("{V3}/register"), &req).await;
    assert_error(&answer, 400, "M_EXCLUSIVE");
}

#[tokio::test]
async fn room_aliases_in_the_reserved_hyperty_namespace_are_m_exclusive() {
    let node = TestNode::spawn().await;
    let alice = register(&node, "alice").await;
    let reserved = json!({"room_alias_name": "_hyperty_abc"});
    let answer = try_create_room(&node, &alice, &reserved).await;
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
    let t = Refusals::new().await;
    let (node, alice, room) = (&t.node, &t.alice, &t.room);
    // The content alone over the limit, and content under it whose event is over it.
    for len in [70_000, 65_400] {
        let answer = t
            .send(alice, &format!("big{len}"), &text(&"x".repeat(len)))
            .await;
        assert_error(&answer, 413, "M_TOO_LARGE");
    }
    t.assert_history_unchanged().await;
    // A large event under the limit is fine.
    let id = send_text(node, alice, room, "fits", &"y".repeat(60_000)).await;
    let after = whole_history(node, alice, room).await;
    assert_eq!(after.len(), t.history.len() + 1);
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
    let token2 = login(&node, "alice").await.token;
    let from_other_device = send_text(&node, &token2, &room, "txn-1", "once").await;
    assert_ne!(from_other_device, first);
    assert_eq!(whole_history(&node, &alice, &room).await.len(), before + 2);
}

#[tokio::test]
async fn a_repeated_transaction_id_is_recognised_after_a_kill() {
    let dir = tempfile::TempDir::new().unwrap();
    let mut node = NodeProcess::spawn(dir.path(), &[]).await;
    let (alice, _, room) = alices_room(&node).await;
    let first = send_text(&node, &alice, &room, "txn-k", "durable once").await;
    // Answered, so committed: a SIGKILL of the node's process right after loses none of it.
    node.kill().await;
    let node = node.restart().await;
    let again = send_text(&node, &alice, &room, "txn-k", "durable once").await;
    assert_eq!(again, first);
    assert_eq!(
        bodies(&whole_history(&node, &alice, &room).await),
        ["durable once"]
    );
}

// --- /sync --------------------------------------------------------------------------------------------

/// The `next_batch` of an immediate `/sync`.
async fn sync_now(node: &TestNode, token: &str) -> String {
    next_batch(&sync(node, token, None).await)
}

#[tokio::test]
async fn a_sync_long_poll_wakes_as_soon_as_a_message_is_sent() {
    // On a manual clock the long-poll's timeout never comes: only the message can end it.
    let node = TestNode::spawn_with_clock(|_| {}).await;
    let (alice, bob, room) = alices_room(&node).await;
    invite(&node, &alice, &room, &user_id("bob")).await;
    join(&node, &bob, &room).await;
    let since = sync_now(&node, &bob).await;

    let poll = {
        let path = format!("{V3}/sync?since={since}&timeout=10000");
        let addr_node = &node;
        let bob = bob.clone();
        async move { woken(get(addr_node, &path, &bob)).await }
    };
    let send = async {
        wait_for_metric(&node, "rethink_matrix_syncs_waiting", 1.0).await;
        send_text(&node, &alice, &room, "wake", "wake up bob").await
    };
    let ((status, body), sent) = tokio::join!(poll, send);
    assert_eq!(status, 200, "{body}");
    let events = body["rooms"]["join"][&room]["timeline"]["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no timeline for the room: {body}"));
    assert_eq!(event_ids(events), [sent], "{body}");
    assert_eq!(events[0]["content"]["body"], "wake up bob");
    assert_ne!(body["next_batch"], since.as_str());
}

#[tokio::test]
async fn a_sync_with_nothing_new_waits_for_its_timeout_then_answers_empty() {
    let node = TestNode::spawn_with_clock(|_| {}).await;
    let (alice, _, _) = alices_room(&node).await;
    let since = sync_now(&node, &alice).await;
    let path = format!("{V3}/sync?since={since}&timeout=600");
    let poll = woken(get(&node, &path, &alice));
    let time_passes = async {
        // It waits (an answer at once would never show up here) until its timeout comes.
        wait_for_metric(&node, "rethink_matrix_syncs_waiting", 1.0).await;
        node.advance(Duration::from_millis(600)).await;
    };
    let (answer, ()) = tokio::join!(poll, time_passes);
    let body = ok(answer);
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
    let since = sync_now(&node, &alice).await;
    let page = messages(&node, &alice, &room, &format!("dir=b&limit=2&from={since}")).await;
    let chunk = page["chunk"].as_array().unwrap();
    assert_eq!(chunk[0]["event_id"], newest.as_str(), "{page}");
    assert_eq!(bodies(chunk), ["newest", "older"]);

    // And forwards from it there is nothing yet; a later message comes next.
    let page = messages(&node, &alice, &room, &format!("dir=f&from={since}")).await;
    assert_eq!(page["chunk"], json!([]), "{page}");
    let later = send_text(&node, &alice, &room, "c", "later").await;
    let page = messages(&node, &alice, &room, &format!("dir=f&from={since}")).await;
    assert_eq!(event_ids(page["chunk"].as_array().unwrap()), [later]);
}

// --- durability -------------------------------------------------------------------------------------

#[tokio::test]
async fn every_acknowledged_send_survives_a_kill() {
    let dir = tempfile::TempDir::new().unwrap();
    let mut node = NodeProcess::spawn(dir.path(), &[]).await;
    let (alice, _, room) = alices_room(&node).await;
    // Concurrent senders, so commits are grouped.
    let sends = (0..20).map(|i| {
        let (node, alice, room) = (&node, &alice, &room);
        async move { send_text(node, alice, room, &format!("d{i}"), &format!("durable {i}")).await }
    });
    let acknowledged = futures_util::future::join_all(sends).await;
    // A SIGKILL of the node's process: what was not committed is gone.
    node.kill().await;
    let node = node.restart().await;
    let history = whole_history(&node, &alice, &room).await;
    let stored = event_ids(&history);
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

#[tokio::test]
async fn sync_refuses_bad_parameters_unknown_filters_and_tokens_with_their_errcodes() {
    let node = TestNode::spawn().await;
    let alice = register(&node, "alice").await;
    let bob = register(&node, "bob").await;
    for query in ["timeout=soon", "full_state=maybe", "timeout=-5"] {
        assert_error(
            &get(&node, &format!("{V3}/sync?{query}"), &alice).await,
            400,
            "M_INVALID_PARAM",
        );
    }
    // A filter ID that does not exist, and one of another user.
    let path = format!("{V3}/user/{}/filter", urlencode(&user_id("bob")));
    let bobs = ok(post(
        &node,
        &path,
        &bob,
        &json!({"room": {"timeline": {"limit": 1}}}),
    )
    .await);
    let bobs = bobs["filter_id"].as_str().expect("filter_id");
    for filter in ["999", bobs] {
        assert_error(
            &get(&node, &format!("{V3}/sync?filter={filter}"), &alice).await,
            404,
            "M_NOT_FOUND",
        );
    }
    // A value starting with `{` is an inline filter: not JSON is a 400 (matrix_edge.rs).
    assert_error(
        &get(&node, &format!("{V3}/sync?filter=%7Bnot%20json"), &alice).await,
        400,
        "M_NOT_JSON",
    );
    assert!(
        get(&node, &format!("{V3}/sync?filter={bobs}"), &bob)
            .await
            .0
            == 200
    );
    // The token in the query string is checked like the header's.
    assert_error(
        &call(
            &node,
            "GET",
            &format!("{V3}/sync?access_token=rtm_forged"),
            None,
            None,
        )
        .await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    let by_query = format!("{V3}/sync?access_token={}", urlencode(&alice));
    assert_eq!(call(&node, "GET", &by_query, None, None).await.0, 200);
}
