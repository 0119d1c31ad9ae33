//! Matrix rooms (issue 3), driven by a real client library: matrix-sdk creates a room, invites,
//! joins, sends, receives through `/sync` (responses and event handlers), paginates history,
//! redacts, reads room state, kicks, bans and leaves; an incremental `/sync` over a gap carries
//! the state changed in it; `/sync` continues from the same `since` token across a graceful
//! restart and a kill (a SIGKILL of the node program). What the client library hides is checked over raw HTTP in
//! `matrix_history` and `matrix_redaction`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use matrix_sdk::config::SyncSettings;
use matrix_sdk::deserialized_responses::TimelineEvent;
use matrix_sdk::room::MessagesOptions;
use matrix_sdk::ruma::api::client::room::create_room;
use matrix_sdk::ruma::events::room::message::{MessageType, OriginalSyncRoomMessageEvent};
use matrix_sdk::ruma::events::room::power_levels::UserPowerLevel;
use matrix_sdk::ruma::events::{AnySyncMessageLikeEvent, AnySyncTimelineEvent};
use matrix_sdk::ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, UInt};
use matrix_sdk::sync::SyncResponse;
use matrix_sdk::{Client, Room, RoomMemberships, RoomState};
use serde_json::{Value, json};

use crate::support::matrix::{
    Served, bodies, register, sdk_login, sdk_say as say, sdk_sync, sdk_user_id, user_id,
    whole_history,
};
use crate::support::{NodeProcess, TestNode};

// --- helpers ------------------------------------------------------------------------------------

/// Registers alice and bob and logs both in with matrix-sdk.
async fn alice_and_bob(node: &impl Served) -> (Client, Client) {
    register(node, "alice").await;
    register(node, "bob").await;
    (sdk_login(node, "alice").await, sdk_login(node, "bob").await)
}

fn uid(name: &str) -> OwnedUserId {
    sdk_user_id(name)
}

/// One `/sync` from the client's last token (long-poll up to 5 s).
async fn sync(client: &Client) -> SyncResponse {
    sdk_sync(client, Duration::from_secs(5)).await
}

/// Alice creates a private room named "Tea" with a topic, inviting bob.
async fn create_tea_room(alice: &Client) -> Room {
    let mut req = create_room::v3::Request::new();
    req.name = Some("Tea".to_owned());
    req.topic = Some("Darjeeling or Assam".to_owned());
    req.invite = vec![uid("bob")];
    alice.create_room(req).await.expect("createRoom")
}

/// A node where alice and bob are logged in with matrix-sdk and share [`joined_room`].
async fn tea_party() -> (TestNode, Client, Client, OwnedRoomId) {
    tea_party_on(TestNode::spawn().await).await
}

/// [`tea_party`] on `node`.
async fn tea_party_on<N: Served>(node: N) -> (N, Client, Client, OwnedRoomId) {
    let (alice, bob) = alice_and_bob(&node).await;
    let room = joined_room(&alice, &bob).await;
    (node, alice, bob, room)
}

/// A room alice created with bob invited and joined, both clients synced.
async fn joined_room(alice: &Client, bob: &Client) -> OwnedRoomId {
    let room = create_tea_room(alice).await;
    sync(alice).await;
    let invited = sync(bob).await;
    assert!(
        invited.rooms.invited.contains_key(room.room_id()),
        "bob's sync shows no invitation: {:?}",
        invited.rooms.invited.keys()
    );
    bob.join_room_by_id(room.room_id())
        .await
        .expect("bob joins");
    sync(bob).await;
    sync(alice).await;
    room.room_id().to_owned()
}

/// The timeline events of `room` in a sync response (none if the room is not in it).
fn synced<'a>(response: &'a SyncResponse, room: &OwnedRoomId) -> &'a [TimelineEvent] {
    response
        .rooms
        .joined
        .get(room)
        .map_or(&[], |r| &r.timeline.events)
}

/// The text bodies of the `m.room.message` events of `room` in a sync response, in order.
fn synced_texts(response: &SyncResponse, room: &OwnedRoomId) -> Vec<String> {
    synced(response, room)
        .iter()
        .filter_map(|e| text_of(e.raw().deserialize().ok()?))
        .collect()
}

/// The event IDs of every timeline event of `room` in a sync response.
fn synced_ids(response: &SyncResponse, room: &OwnedRoomId) -> Vec<OwnedEventId> {
    synced(response, room)
        .iter()
        .filter_map(TimelineEvent::event_id)
        .collect()
}

fn text_of(event: AnySyncTimelineEvent) -> Option<String> {
    match event {
        AnySyncTimelineEvent::MessageLike(AnySyncMessageLikeEvent::RoomMessage(m)) => {
            match &m.as_original()?.content.msgtype {
                MessageType::Text(t) => Some(t.body.clone()),
                _ => None,
            }
        }
        _ => None,
    }
}

fn texts(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix} {i}")).collect()
}

// --- invite, join, send, receive ---------------------------------------------------------------

#[tokio::test]
async fn an_invitee_sees_the_invite_through_sync_and_joins() {
    let node = TestNode::spawn().await;
    let (alice, bob) = alice_and_bob(&node).await;
    let room = create_tea_room(&alice).await;

    let response = sync(&bob).await;
    let invite = response
        .rooms
        .invited
        .get(room.room_id())
        .expect("the invitation is in bob's sync");
    let stripped: Vec<Value> = invite
        .invite_state
        .events
        .iter()
        .map(|e| serde_json::from_str(e.json().get()).unwrap())
        .collect();
    assert!(
        stripped
            .iter()
            .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Tea"),
        "{stripped:?}"
    );
    assert!(
        stripped.iter().any(|e| e["type"] == "m.room.member"
            && e["state_key"] == user_id("bob")
            && e["content"]["membership"] == "invite"),
        "{stripped:?}"
    );
    let bobs_view = bob.get_room(room.room_id()).expect("bob knows the room");
    assert_eq!(bobs_view.state(), RoomState::Invited);
    assert_eq!(bobs_view.name().as_deref(), Some("Tea"));

    bobs_view.join().await.expect("bob accepts");
    let response = sync(&bob).await;
    assert!(
        response.rooms.joined.contains_key(room.room_id()),
        "bob's next sync shows the room as joined"
    );
    assert_eq!(bobs_view.state(), RoomState::Joined);
    assert_eq!(bob.joined_rooms().len(), 1);
}

#[tokio::test]
async fn messages_reach_the_other_member_through_sync_and_event_handlers_in_order() {
    let (_node, alice, bob, room) = tea_party().await;

    let seen: Arc<Mutex<Vec<(OwnedRoomId, String)>>> = Arc::default();
    let sink = Arc::clone(&seen);
    bob.add_event_handler(move |ev: OriginalSyncRoomMessageEvent, room: Room| {
        let sink = Arc::clone(&sink);
        async move {
            if let MessageType::Text(t) = ev.content.msgtype {
                sink.lock()
                    .unwrap()
                    .push((room.room_id().to_owned(), t.body));
            }
        }
    });

    let sent = texts("hello bob", 5);
    let mut ids = Vec::new();
    for text in &sent {
        ids.push(say(&alice, &room, text).await);
    }
    let mut received = Vec::new();
    let mut received_ids = Vec::new();
    for _ in 0..5 {
        let response = sync(&bob).await;
        received.extend(synced_texts(&response, &room));
        received_ids.extend(synced_ids(&response, &room));
        if received.len() >= sent.len() {
            break;
        }
    }
    assert_eq!(received, sent, "sync timeline");
    assert_eq!(received_ids, ids, "event IDs as acknowledged to alice");
    let handled: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(r, body)| {
            assert_eq!(r, &room);
            body.clone()
        })
        .collect();
    assert_eq!(handled, sent, "event handler");
}

// --- history --------------------------------------------------------------------------------------

#[tokio::test]
async fn backward_pagination_returns_every_message_once_in_order() {
    let (_node, alice, bob, room) = tea_party().await;
    let sent = texts("history", 23);
    for text in &sent {
        say(&alice, &room, text).await;
    }

    let bobs_room = bob.get_room(&room).unwrap();
    let mut from: Option<String> = None;
    let mut newest_first = Vec::new();
    let mut ids = HashSet::new();
    let mut pages = 0;
    loop {
        let mut options = MessagesOptions::backward().from(from.as_deref());
        options.limit = UInt::from(7u32);
        let page = bobs_room.messages(options).await.expect("/messages");
        pages += 1;
        assert!(page.chunk.len() <= 7, "page larger than the limit");
        for event in &page.chunk {
            let id = event.event_id().expect("event ID");
            assert!(ids.insert(id.clone()), "{id} returned twice");
            if let Some(text) = text_of(event.raw().deserialize().expect("event parses")) {
                newest_first.push(text);
            }
        }
        match page.end {
            Some(end) => from = Some(end),
            None => break,
        }
        assert!(pages < 20, "pagination does not end");
    }
    newest_first.reverse();
    assert_eq!(newest_first, sent);
    // 23 messages and the room's creation events (create, members, power levels, rules, ...).
    assert!(pages >= 4, "{pages} pages");
}

// --- redaction ------------------------------------------------------------------------------------

#[tokio::test]
async fn a_redacted_message_shows_as_redacted() {
    let (_node, alice, bob, room) = tea_party().await;
    let secret = say(&alice, &room, "the secret is 42").await;
    say(&alice, &room, "oops").await;
    let redaction = alice
        .get_room(&room)
        .unwrap()
        .redact(&secret, Some("too much"), None)
        .await
        .expect("redact")
        .event_id;

    // Bob sees the redaction event in his timeline.
    let response = sync(&bob).await;
    let timeline = &response
        .rooms
        .joined
        .get(&room)
        .expect("room in sync")
        .timeline;
    let redaction_event = timeline
        .events
        .iter()
        .find(|e| e.event_id().as_ref() == Some(&redaction))
        .expect("the redaction is in bob's sync");
    let json: Value = serde_json::from_str(redaction_event.raw().json().get()).unwrap();
    assert_eq!(json["type"], "m.room.redaction", "{json}");
    assert_eq!(json["content"]["redacts"], secret.as_str(), "{json}");

    // Fetched alone, and in history, the message is redacted: no body left.
    let bobs_room = bob.get_room(&room).unwrap();
    let fetched = bobs_room.event(&secret, None).await.expect("GET event");
    let parsed = fetched
        .raw()
        .deserialize()
        .expect("a redacted event parses");
    assert!(parsed.is_redacted(), "{}", fetched.raw().json());
    let json: Value = serde_json::from_str(fetched.raw().json().get()).unwrap();
    assert_eq!(json["content"], json!({}), "{json}");

    let page = bobs_room
        .messages(MessagesOptions::backward())
        .await
        .expect("/messages");
    let in_history = page
        .chunk
        .iter()
        .find(|e| e.event_id().as_ref() == Some(&secret))
        .expect("the redacted message stays in history");
    let parsed = in_history.raw().deserialize().expect("parses");
    assert!(parsed.is_redacted(), "{}", in_history.raw().json());
    assert_eq!(text_of(parsed), None);
}

// --- room state -------------------------------------------------------------------------------------

#[tokio::test]
async fn room_name_topic_and_members_as_the_client_sees_them() {
    let (_node, alice, bob, room) = tea_party().await;
    let bobs_room = bob.get_room(&room).unwrap();
    assert_eq!(bobs_room.name().as_deref(), Some("Tea"));
    assert_eq!(bobs_room.topic().as_deref(), Some("Darjeeling or Assam"));
    let members: HashSet<String> = bobs_room
        .members(RoomMemberships::JOIN)
        .await
        .expect("members")
        .iter()
        .map(|m| m.user_id().to_string())
        .collect();
    assert_eq!(
        members,
        HashSet::from([user_id("alice"), user_id("bob")]),
        "joined members"
    );
    let alice_member = bobs_room.get_member(&uid("alice")).await.unwrap().unwrap();
    assert_eq!(alice_member.power_level(), UserPowerLevel::Int(100.into()));

    let alices_room = alice.get_room(&room).unwrap();
    alices_room
        .set_name("Coffee".to_owned())
        .await
        .expect("set name");
    alices_room
        .set_room_topic("Espresso only")
        .await
        .expect("set topic");
    sync(&bob).await;
    assert_eq!(bobs_room.name().as_deref(), Some("Coffee"));
    assert_eq!(bobs_room.topic().as_deref(), Some("Espresso only"));
}

// --- leave, kick, ban ----------------------------------------------------------------------------

#[tokio::test]
async fn a_member_who_leaves_sees_the_room_as_left_and_stops_receiving() {
    let (_node, alice, bob, room) = tea_party().await;
    bob.get_room(&room).unwrap().leave().await.expect("leave");
    let response = sync(&bob).await;
    assert!(response.rooms.left.contains_key(&room), "left in sync");
    assert_eq!(bob.get_room(&room).unwrap().state(), RoomState::Left);

    say(&alice, &room, "are you there?").await;
    let alices = sync(&alice).await;
    assert!(
        alices.rooms.joined.contains_key(&room),
        "alice sees bob's leave and her message"
    );
    let bobs = bob
        .sync_once(SyncSettings::default().timeout(Duration::ZERO))
        .await
        .unwrap();
    assert!(
        synced_texts(&bobs, &room).is_empty() && !bobs.rooms.left.contains_key(&room),
        "a former member receives nothing more: {:?}",
        bobs.rooms
    );
    let members: Vec<OwnedUserId> = alice
        .get_room(&room)
        .unwrap()
        .members(RoomMemberships::JOIN)
        .await
        .unwrap()
        .iter()
        .map(|m| m.user_id().to_owned())
        .collect();
    assert_eq!(members, vec![uid("alice")]);
}

#[tokio::test]
async fn a_kicked_member_cannot_rejoin_an_invite_only_room_until_invited_again() {
    let (_node, alice, bob, room) = tea_party().await;
    alice
        .get_room(&room)
        .unwrap()
        .kick_user(&uid("bob"), Some("tea time is over"))
        .await
        .expect("kick");
    let response = sync(&bob).await;
    assert!(
        response.rooms.left.contains_key(&room),
        "kick shows as left"
    );
    assert_eq!(bob.get_room(&room).unwrap().state(), RoomState::Left);

    let err = bob
        .join_room_by_id(&room)
        .await
        .expect_err("a private room needs an invitation");
    let api = err.as_client_api_error().expect("an API error");
    assert_eq!(api.status_code.as_u16(), 403, "{err:?}");

    alice
        .get_room(&room)
        .unwrap()
        .invite_user_by_id(&uid("bob"))
        .await
        .expect("invite again");
    bob.join_room_by_id(&room)
        .await
        .expect("join after the new invitation");
    sync(&bob).await;
    assert_eq!(bob.get_room(&room).unwrap().state(), RoomState::Joined);
}

#[tokio::test]
async fn a_banned_member_cannot_rejoin_until_unbanned() {
    let (_node, alice, bob, room) = tea_party().await;
    let alices_room = alice.get_room(&room).unwrap();
    alices_room
        .ban_user(&uid("bob"), Some("spilled the tea"))
        .await
        .expect("ban");
    // matrix-sdk marks rooms from `/sync` v3's `leave` section as Left (Banned only with
    // sliding sync); the ban itself is the member event in the left room's timeline.
    let response = sync(&bob).await;
    let left = response
        .rooms
        .left
        .get(&room)
        .expect("the ban shows as left");
    let ban = left
        .timeline
        .events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e.raw().json().get()).ok())
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == user_id("bob"))
        .expect("bob's member event in the left room's timeline");
    assert_eq!(ban["content"]["membership"], "ban", "{ban}");
    assert_eq!(ban["content"]["reason"], "spilled the tea", "{ban}");
    assert_eq!(bob.get_room(&room).unwrap().state(), RoomState::Left);
    let err = bob
        .join_room_by_id(&room)
        .await
        .expect_err("a banned user cannot join");
    assert_eq!(err.as_client_api_error().unwrap().status_code.as_u16(), 403);

    let err = alices_room
        .invite_user_by_id(&uid("bob"))
        .await
        .expect_err("a banned user cannot be invited");
    assert_eq!(err.as_client_api_error().unwrap().status_code.as_u16(), 403);

    alices_room
        .unban_user(&uid("bob"), None)
        .await
        .expect("unban");
    alices_room
        .invite_user_by_id(&uid("bob"))
        .await
        .expect("invite after unban");
    bob.join_room_by_id(&room).await.expect("join");
    sync(&bob).await;
    assert_eq!(bob.get_room(&room).unwrap().state(), RoomState::Joined);
}

#[tokio::test]
async fn a_member_without_power_cannot_kick() {
    let (_node, alice, bob, room) = tea_party().await;
    let err = bob
        .get_room(&room)
        .unwrap()
        .kick_user(&uid("alice"), None)
        .await
        .expect_err("bob has power level 0");
    assert_eq!(err.as_client_api_error().unwrap().status_code.as_u16(), 403);
    sync(&alice).await;
    assert_eq!(alice.get_room(&room).unwrap().state(), RoomState::Joined);
}

// --- incremental sync -------------------------------------------------------------------------

#[tokio::test]
async fn an_incremental_sync_with_a_gap_carries_the_state_changed_in_the_gap() {
    let (_node, alice, bob, room) = tea_party().await;
    let alices_room = alice.get_room(&room).unwrap();
    alices_room
        .set_room_topic("changed in the gap")
        .await
        .expect("topic");
    for i in 0..15 {
        say(&alice, &room, &format!("filler {i}")).await;
    }
    let response = sync(&bob).await;
    let joined = response.rooms.joined.get(&room).expect("room in sync");
    assert!(
        joined.timeline.limited,
        "15 messages exceed the default limit"
    );
    assert_eq!(
        bob.get_room(&room).unwrap().topic().as_deref(),
        Some("changed in the gap"),
        "the topic change before the timeline reached bob's client"
    );
}

// --- restarts ---------------------------------------------------------------------------------------

/// On `node`, bob syncs, alice sends `before`, the node restarts (`restart`, on the same
/// address), bob syncs from the same token and must get exactly `before`; alice sends one more
/// and bob gets exactly that.
async fn sync_continues_across<N: Served>(node: N, restart: impl AsyncFnOnce(N) -> N) {
    let (node, alice, bob, room) = tea_party_on(node).await;
    say(&alice, &room, "first").await;
    let first = sync(&bob).await;
    assert_eq!(synced_texts(&first, &room), ["first"]);
    let token = first.next_batch.clone();

    let before = texts("before restart", 3);
    for text in &before {
        say(&alice, &room, text).await;
    }
    let node = restart(node).await;

    let after = bob
        .sync_once(
            SyncSettings::default()
                .token(token)
                .timeout(Duration::from_secs(5)),
        )
        .await
        .expect("sync from the token taken before the restart");
    assert_eq!(
        synced_texts(&after, &room),
        before,
        "nothing lost, nothing repeated"
    );
    let new = say(&alice, &room, "after restart").await;
    let last = sync(&bob).await;
    assert_eq!(synced_texts(&last, &room), ["after restart"]);
    assert_eq!(synced_ids(&last, &room), [new]);

    // The whole history agrees, once per message.
    let bob_token = bob.access_token().unwrap();
    let history = whole_history(&node, &bob_token, room.as_str()).await;
    let mut all = vec!["first".to_owned()];
    all.extend(before);
    all.push("after restart".to_owned());
    assert_eq!(bodies(&history), all);
}

#[tokio::test]
async fn sync_continues_from_the_same_token_after_a_graceful_restart() {
    sync_continues_across(TestNode::spawn().await, async |node: TestNode| {
        node.restart().await
    })
    .await;
}

#[tokio::test]
async fn sync_continues_from_the_same_token_after_a_kill() {
    let dir = tempfile::TempDir::new().unwrap();
    let node = NodeProcess::spawn(dir.path(), &[]).await;
    // A SIGKILL of the node's process; it comes back on the same data directory and port.
    sync_continues_across(node, async |mut node: NodeProcess| {
        node.kill().await;
        node.restart().await
    })
    .await;
}
