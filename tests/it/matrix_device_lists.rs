//! Device lists from memberships, over raw HTTP: an incremental `/sync` names in
//! `device_lists.changed` the users who now share an encrypted room with the caller (they joined
//! it, the caller joined it, or it became encrypted), and in `device_lists.left` those who share
//! none any more (they left, were kicked or banned, or the caller left), never in both;
//! `GET /keys/changes` between two `/sync` tokens answers the same; rooms without
//! `m.room.encryption` count for neither; a long-poll wakes with such a change.

use serde_json::{Value, json};

use crate::support::matrix::woken;
use crate::support::matrix::{
    Session, V3, get, join, next_batch, ok, post, put, register_session, room_path, sync,
    urlencode, user_id,
};
use crate::support::{TestNode, wait_for_metric};

/// Registers alice, bob and carol.
async fn three(node: &TestNode) -> (Session, Session, Session) {
    (
        register_session(node, "alice").await,
        register_session(node, "bob").await,
        register_session(node, "carol").await,
    )
}

/// A public room of `creator`'s, with `m.room.encryption` state if `encrypted`.
async fn room(node: &TestNode, creator: &Session, encrypted: bool) -> String {
    let mut body = json!({"preset": "public_chat"});
    if encrypted {
        body["initial_state"] = json!([{
            "type": "m.room.encryption",
            "state_key": "",
            "content": {"algorithm": "m.megolm.v1.aes-sha2"},
        }]);
    }
    let created = ok(creator.post(node, "/createRoom", &body).await);
    created["room_id"].as_str().unwrap().to_owned()
}

/// `POST /rooms/{room}/{action}` (`leave`, `kick`, `ban`) by `who`, naming `target` if any.
async fn membership(
    node: &TestNode,
    who: &Session,
    room: &str,
    action: &str,
    target: Option<&str>,
) {
    let body = match target {
        Some(target) => json!({"user_id": user_id(target)}),
        None => json!({}),
    };
    ok(post(node, &room_path(room, action), &who.token, &body).await);
}

/// The localparts in a device list (`changed` or `left`) of a `/sync` or `/keys/changes` answer,
/// sorted.
fn names(list: &Value) -> Vec<String> {
    let mut names: Vec<String> = list
        .as_array()
        .map(|users| {
            users
                .iter()
                .map(|u| {
                    let u = u.as_str().unwrap();
                    u[1..u.find(':').unwrap()].to_owned()
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// `changed` and `left` of a `/sync` answer, by localpart.
fn device_lists(sync: &Value) -> (Vec<String>, Vec<String>) {
    let lists = &sync["device_lists"];
    (names(&lists["changed"]), names(&lists["left"]))
}

/// `session`'s sync from `since`: its device lists and its `next_batch`.
async fn lists_since(
    node: &TestNode,
    session: &Session,
    since: &str,
) -> ((Vec<String>, Vec<String>), String) {
    let answer = sync(node, &session.token, Some(since)).await;
    (device_lists(&answer), next_batch(&answer))
}

/// `session`'s initial sync token.
async fn start(node: &TestNode, session: &Session) -> String {
    let initial = sync(node, &session.token, None).await;
    assert!(
        device_lists(&initial) == (none(), none()),
        "an initial sync has no device lists: {initial}"
    );
    next_batch(&initial)
}

fn none() -> Vec<String> {
    Vec::new()
}

fn only(name: &str) -> Vec<String> {
    vec![name.to_owned()]
}

#[tokio::test]
async fn joining_a_shared_encrypted_room_is_a_change_on_both_sides() {
    let node = TestNode::spawn().await;
    let (alice, bob, _) = three(&node).await;
    let room = room(&node, &alice, true).await;
    let alice_since = start(&node, &alice).await;
    let bob_since = start(&node, &bob).await;

    join(&node, &bob.token, &room).await;
    // Bob joined a room Alice is in; for Bob, Alice is in the room he joined. Neither is told
    // about themselves.
    let (alice_lists, alice_next) = lists_since(&node, &alice, &alice_since).await;
    assert_eq!(alice_lists, (only("bob"), none()));
    let (bob_lists, _) = lists_since(&node, &bob, &bob_since).await;
    assert_eq!(bob_lists, (only("alice"), none()));

    // Reported once.
    let (again, _) = lists_since(&node, &alice, &alice_next).await;
    assert_eq!(again, (none(), none()));
}

#[tokio::test]
async fn leaving_the_only_shared_encrypted_room_is_left_and_not_changed() {
    let node = TestNode::spawn().await;
    let (alice, bob, _) = three(&node).await;
    let encrypted = room(&node, &alice, true).await;
    let plain = room(&node, &alice, false).await;
    join(&node, &bob.token, &encrypted).await;
    join(&node, &bob.token, &plain).await;
    let alice_since = start(&node, &alice).await;
    let bob_since = start(&node, &bob).await;

    // Bob's new device keys alone would name him in `changed` (they still share the plain room).
    let keys = json!({"device_keys": {
        "user_id": bob.user_id,
        "device_id": bob.device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {format!("curve25519:{}", bob.device_id): "c", format!("ed25519:{}", bob.device_id): "e"},
        "signatures": {},
    }});
    ok(bob.post(&node, "/keys/upload", &keys).await);
    membership(&node, &bob, &encrypted, "leave", None).await;

    let (alice_lists, _) = lists_since(&node, &alice, &alice_since).await;
    assert_eq!(alice_lists, (none(), only("bob")));
    let (bob_lists, _) = lists_since(&node, &bob, &bob_since).await;
    assert_eq!(
        bob_lists,
        (only("bob"), only("alice")),
        "his own keys changed"
    );
}

#[tokio::test]
async fn kicked_and_banned_users_are_left() {
    let node = TestNode::spawn().await;
    let (alice, bob, carol) = three(&node).await;
    let (one, two) = (
        room(&node, &alice, true).await,
        room(&node, &alice, true).await,
    );
    join(&node, &bob.token, &one).await;
    join(&node, &carol.token, &two).await;
    let since = start(&node, &alice).await;

    membership(&node, &alice, &one, "kick", Some("bob")).await;
    membership(&node, &alice, &two, "ban", Some("carol")).await;
    let (lists, _) = lists_since(&node, &alice, &since).await;
    assert_eq!(lists, (none(), vec!["bob".to_owned(), "carol".to_owned()]));
}

#[tokio::test]
async fn leaving_one_of_two_shared_encrypted_rooms_is_not_left() {
    let node = TestNode::spawn().await;
    let (alice, bob, carol) = three(&node).await;
    let (one, two) = (
        room(&node, &alice, true).await,
        room(&node, &alice, true).await,
    );
    for room in [&one, &two] {
        join(&node, &bob.token, room).await;
    }
    let since = start(&node, &alice).await;

    membership(&node, &bob, &one, "leave", None).await;
    let (lists, next) = lists_since(&node, &alice, &since).await;
    assert_eq!(lists, (none(), none()));

    // Alice leaves the other one: now they share nothing, for both of them. Carol, who was
    // never in it, is in neither list.
    let bob_since = start(&node, &bob).await;
    join(&node, &carol.token, &one).await;
    let next = lists_since(&node, &alice, &next).await.1;
    membership(&node, &alice, &two, "leave", None).await;
    let (lists, _) = lists_since(&node, &alice, &next).await;
    assert_eq!(lists, (none(), only("bob")));
    let (bob_lists, _) = lists_since(&node, &bob, &bob_since).await;
    assert_eq!(bob_lists, (none(), only("alice")));
}

#[tokio::test]
async fn memberships_of_rooms_without_encryption_are_no_device_list_change() {
    let node = TestNode::spawn().await;
    let (alice, bob, _) = three(&node).await;
    let plain = room(&node, &alice, false).await;
    let since = start(&node, &alice).await;

    join(&node, &bob.token, &plain).await;
    let (lists, next) = lists_since(&node, &alice, &since).await;
    assert_eq!(lists, (none(), none()));
    membership(&node, &bob, &plain, "leave", None).await;
    let (lists, _) = lists_since(&node, &alice, &next).await;
    assert_eq!(lists, (none(), none()));
}

#[tokio::test]
async fn a_room_that_becomes_encrypted_lists_its_members() {
    let node = TestNode::spawn().await;
    let (alice, bob, _) = three(&node).await;
    let plain = room(&node, &alice, false).await;
    join(&node, &bob.token, &plain).await;
    let since = start(&node, &alice).await;

    let encryption = json!({"algorithm": "m.megolm.v1.aes-sha2"});
    ok(put(
        &node,
        &room_path(&plain, "state/m.room.encryption/"),
        &alice.token,
        &encryption,
    )
    .await);
    let (lists, _) = lists_since(&node, &alice, &since).await;
    assert_eq!(lists, (only("bob"), none()));
}

#[tokio::test]
async fn keys_changes_between_two_sync_tokens_answers_what_the_sync_did() {
    let node = TestNode::spawn().await;
    let (alice, bob, carol) = three(&node).await;
    let (one, two) = (
        room(&node, &alice, true).await,
        room(&node, &alice, true).await,
    );
    join(&node, &carol.token, &two).await;
    let from = start(&node, &alice).await;

    join(&node, &bob.token, &one).await;
    membership(&node, &carol, &two, "leave", None).await;
    let (lists, to) = lists_since(&node, &alice, &from).await;
    assert_eq!(lists, (only("bob"), only("carol")));
    let changes = ok(alice
        .get(&node, &format!("/keys/changes?from={from}&to={to}"))
        .await);
    assert_eq!((names(&changes["changed"]), names(&changes["left"])), lists);

    // Nothing after `to`.
    let (after, later) = lists_since(&node, &alice, &to).await;
    assert_eq!(after, (none(), none()));
    let changes = ok(alice
        .get(&node, &format!("/keys/changes?from={to}&to={later}"))
        .await);
    assert_eq!(changes, json!({"changed": [], "left": []}));
}

#[tokio::test]
async fn a_long_poll_wakes_with_the_device_lists_of_a_join() {
    // On a manual clock the long-poll's timeout never comes.
    let node = TestNode::spawn_with_clock(|_| {}).await;
    let (alice, bob, _) = three(&node).await;
    let room = room(&node, &alice, true).await;
    let since = start(&node, &alice).await;

    // No room and no presence in the answer: only the device lists can end the wait.
    let filter = json!({"room": {"rooms": []}, "presence": {"not_types": ["*"]}});
    let path = format!(
        "{V3}/sync?timeout=20000&since={since}&filter={}",
        urlencode(&filter.to_string())
    );
    let poll = woken(get(&node, &path, &alice.token));
    let act = async {
        wait_for_metric(&node, "rethink_matrix_syncs_waiting", 1.0).await;
        join(&node, &bob.token, &room).await;
    };
    let ((status, answer), ()) = tokio::join!(poll, act);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(device_lists(&answer), (only("bob"), none()), "{answer}");
}
