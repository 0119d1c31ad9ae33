//! End-to-end encryption with a real client library: matrix-sdk with its `e2e-encryption`
//! feature (in-memory crypto store) logs in, syncs and uploads its device and one-time keys;
//! another user finds that device with its identity keys; in a room with `m.room.encryption`,
//! Alice's message reaches Bob as `m.room.encrypted` and Bob decrypts it (the room key arrives
//! olm-encrypted through `sendToDevice`, after `keys/query` and `keys/claim`), and the other way
//! round; a device Bob adds later is learned by Alice through `device_lists.changed` and
//! decrypts her next message; with Bob's one-time keys used up, Alice's client gets his fallback
//! key (then reported used) and he still decrypts; a room without encryption is seen as such after the node answers
//! 404 `M_NOT_FOUND` for its `m.room.encryption` state.
//!
//! Cross-signing is in `matrix_cross_signing.rs`, with the helpers of this file.

use std::time::Duration;

use matrix_sdk::deserialized_responses::{ProcessedToDeviceEvent, TimelineEventKind};
use matrix_sdk::ruma::api::client::room::create_room;
use matrix_sdk::ruma::events::room::encryption::RoomEncryptionEventContent;
use matrix_sdk::ruma::events::room::message::MessageType;
use matrix_sdk::ruma::events::{
    AnyMessageLikeEvent, AnyTimelineEvent, AnyToDeviceEvent, InitialStateEvent,
};
use matrix_sdk::ruma::{OwnedEventId, OwnedRoomId, OwnedUserId};
use matrix_sdk::sync::SyncResponse;
use matrix_sdk::{Client, EncryptionState};
use serde_json::{Value, json};

use crate::support::TestNode;
use crate::support::matrix::{
    V3, call, get, ok, register, register_session, room_path, sdk_login, sdk_say as say, sdk_sync,
    sdk_user_id, user_id,
};

// --- helpers ------------------------------------------------------------------------------------

pub(crate) fn uid(name: &str) -> OwnedUserId {
    sdk_user_id(name)
}

/// One `/sync` from the client's last token (long-poll up to 2 s). matrix-sdk sends its pending
/// E2EE requests (keys/upload, keys/query, keys/claim, sendToDevice) before and after it.
pub(crate) async fn sync(client: &Client) -> SyncResponse {
    sdk_sync(client, Duration::from_secs(2)).await
}

/// Registers `name` and logs in with an encryption-enabled matrix-sdk client that has synced
/// once (so its device keys and one-time keys went up).
pub(crate) async fn e2ee_client(node: &TestNode, name: &str) -> Client {
    register(node, name).await;
    let client = sdk_login(node, name).await;
    sync(&client).await;
    client
}

/// The access token of a logged-in client, for raw requests.
fn token(client: &Client) -> String {
    client.access_token().expect("logged in")
}

/// A raw `POST {V3}{path}` with the client's token.
pub(crate) async fn post_as(node: &TestNode, client: &Client, path: &str, body: &Value) -> Value {
    let body = body.to_string();
    ok(call(
        node,
        "POST",
        &format!("{V3}{path}"),
        Some(&token(client)),
        Some(body.as_bytes()),
    )
    .await)
}

/// Alice creates a room with `m.room.encryption` (megolm) in its initial state, inviting Bob;
/// Bob joins; both sync until each knows the other joined.
async fn encrypted_room(alice: &Client, bob: &Client) -> OwnedRoomId {
    let mut req = create_room::v3::Request::new();
    req.name = Some("Secrets".to_owned());
    req.invite = vec![bob.user_id().unwrap().to_owned()];
    req.initial_state = vec![
        InitialStateEvent::with_empty_state_key(
            RoomEncryptionEventContent::with_recommended_defaults(),
        )
        .to_raw_any(),
    ];
    let room = alice.create_room(req).await.expect("createRoom");
    let room_id = room.room_id().to_owned();
    sync(bob).await;
    bob.join_room_by_id(&room_id).await.expect("bob joins");
    sync(bob).await;
    sync(alice).await;
    for client in [alice, bob] {
        let room = client.get_room(&room_id).expect("room known");
        let state = room
            .latest_encryption_state()
            .await
            .expect("encryption state");
        assert!(
            state.is_encrypted(),
            "{} sees the room as {state:?}",
            client.user_id().unwrap()
        );
    }
    room_id
}

/// What a client made of one timeline event: decrypted (with the text body), still encrypted,
/// or plain text.
#[derive(Debug, PartialEq)]
enum Seen {
    Decrypted(String),
    Undecryptable,
    Plain,
}

/// Syncs `client` until `event` shows up in `room`'s timeline (at most 5 syncs); returns what
/// the client made of it, and the to-device events the syncs carried.
async fn receive(
    client: &Client,
    room: &OwnedRoomId,
    event: &OwnedEventId,
) -> (Seen, Vec<ProcessedToDeviceEvent>) {
    let mut to_device = Vec::new();
    for _ in 0..5 {
        let response = sync(client).await;
        to_device.extend(response.to_device);
        let timeline = response
            .rooms
            .joined
            .get(room)
            .map_or(&[][..], |r| &r.timeline.events[..]);
        let Some(found) = timeline
            .iter()
            .find(|e| e.event_id().as_ref() == Some(event))
        else {
            continue;
        };
        let seen = match &found.kind {
            TimelineEventKind::Decrypted(d) => {
                match d.event.deserialize().expect("decrypted event parses") {
                    AnyTimelineEvent::MessageLike(AnyMessageLikeEvent::RoomMessage(m)) => {
                        match &m.as_original().expect("not redacted").content.msgtype {
                            MessageType::Text(t) => Seen::Decrypted(t.body.clone()),
                            other => panic!("decrypted to {other:?}"),
                        }
                    }
                    other => panic!("decrypted to {other:?}"),
                }
            }
            TimelineEventKind::UnableToDecrypt { utd_info, .. } => {
                eprintln!("unable to decrypt {event}: {utd_info:?}");
                Seen::Undecryptable
            }
            TimelineEventKind::PlainText { .. } => Seen::Plain,
        };
        return (seen, to_device);
    }
    panic!("{event} never reached {}", client.user_id().unwrap());
}

/// The event as the node stores it, fetched raw by `client`.
async fn stored_event(
    node: &TestNode,
    client: &Client,
    room: &OwnedRoomId,
    event: &OwnedEventId,
) -> Value {
    ok(get(
        node,
        &room_path(room.as_str(), &format!("event/{event}")),
        &token(client),
    )
    .await)
}

/// Asserts the node only ever saw ciphertext for `event`.
async fn assert_ciphertext(
    node: &TestNode,
    reader: &Client,
    room: &OwnedRoomId,
    event: &OwnedEventId,
) {
    let stored = stored_event(node, reader, room, event).await;
    assert_eq!(stored["type"], "m.room.encrypted", "{stored}");
    assert_eq!(
        stored["content"]["algorithm"], "m.megolm.v1.aes-sha2",
        "{stored}"
    );
    assert!(stored["content"]["ciphertext"].is_string(), "{stored}");
    assert!(stored["content"].get("body").is_none(), "{stored}");
}

/// Whether the to-device events hold a decrypted `m.room_key` for `room`.
fn got_room_key(to_device: &[ProcessedToDeviceEvent], room: &OwnedRoomId) -> bool {
    to_device.iter().any(|e| match e {
        ProcessedToDeviceEvent::Decrypted { raw, .. } => matches!(
            raw.deserialize(),
            Ok(AnyToDeviceEvent::RoomKey(k)) if k.content.room_id == *room
        ),
        _ => false,
    })
}

// --- keys ---------------------------------------------------------------------------------------

#[tokio::test]
async fn an_encryption_enabled_client_uploads_its_device_and_one_time_keys() {
    let node = TestNode::spawn().await;
    let alice = e2ee_client(&node, "alice").await;
    let bob = e2ee_client(&node, "bob").await;
    let alice_device = alice.device_id().unwrap().to_owned();

    // Bob asks the node (keys/query) and finds Alice's device with the identity keys her
    // client holds.
    bob.encryption()
        .request_user_identity(&uid("alice"))
        .await
        .expect("keys/query");
    let device = bob
        .encryption()
        .get_device(&uid("alice"), &alice_device)
        .await
        .unwrap()
        .expect("bob knows alice's device");
    assert_eq!(
        Some(device.ed25519_key().expect("ed25519 key").to_base64()),
        alice.encryption().ed25519_key().await
    );
    assert_eq!(
        device.curve25519_key(),
        alice.encryption().curve25519_key().await
    );
    let devices = bob
        .encryption()
        .get_user_devices(&uid("alice"))
        .await
        .unwrap();
    assert_eq!(
        devices
            .devices()
            .map(|d| d.device_id().to_owned())
            .collect::<Vec<_>>(),
        std::slice::from_ref(&alice_device)
    );

    // Her one-time keys are on the node: /sync counts them, a claim hands out one signed by
    // her device and the count drops by one.
    let count = |body: &Value| body["device_one_time_keys_count"]["signed_curve25519"].as_u64();
    let initial = ok(get(&node, &format!("{V3}/sync?timeout=0"), &token(&alice)).await);
    let uploaded = count(&initial).expect("one-time key count");
    assert!(uploaded > 0, "{initial}");
    assert_eq!(
        initial["device_unused_fallback_key_types"],
        json!(["signed_curve25519"]),
        "the client uploaded a fallback key"
    );
    let claim =
        json!({"one_time_keys": {user_id("alice"): {alice_device.as_str(): "signed_curve25519"}}});
    let claimed = post_as(&node, &bob, "/keys/claim", &claim).await;
    let keys = &claimed["one_time_keys"][user_id("alice")][alice_device.as_str()];
    let (key_id, key) = keys
        .as_object()
        .and_then(|o| o.iter().next())
        .expect("one key claimed");
    assert!(key_id.starts_with("signed_curve25519:"), "{claimed}");
    assert!(key["key"].is_string(), "{claimed}");
    assert!(
        key["signatures"][user_id("alice")][format!("ed25519:{alice_device}")].is_string(),
        "signed by alice's device: {claimed}"
    );
    let after = ok(get(&node, &format!("{V3}/sync?timeout=0"), &token(&alice)).await);
    assert_eq!(count(&after), Some(uploaded - 1), "{after}");
}

// --- encrypted messages -------------------------------------------------------------------------

#[tokio::test]
async fn alice_and_bob_decrypt_each_others_messages_in_an_encrypted_room() {
    let node = TestNode::spawn().await;
    let alice = e2ee_client(&node, "alice").await;
    let bob = e2ee_client(&node, "bob").await;
    let room = encrypted_room(&alice, &bob).await;

    let sent = say(&alice, &room, "the password is swordfish").await;
    assert_ciphertext(&node, &bob, &room, &sent).await;
    let (seen, to_device) = receive(&bob, &room, &sent).await;
    assert!(
        got_room_key(&to_device, &room),
        "bob got alice's room key: {to_device:?}"
    );
    assert_eq!(
        seen,
        Seen::Decrypted("the password is swordfish".to_owned())
    );

    let reply = say(&bob, &room, "noted, burning this message").await;
    assert_ciphertext(&node, &alice, &room, &reply).await;
    let (seen, to_device) = receive(&alice, &room, &reply).await;
    assert!(
        got_room_key(&to_device, &room),
        "alice got bob's room key: {to_device:?}"
    );
    assert_eq!(
        seen,
        Seen::Decrypted("noted, burning this message".to_owned())
    );
}

#[tokio::test]
async fn a_device_bob_adds_later_decrypts_alices_next_message() {
    let node = TestNode::spawn().await;
    let alice = e2ee_client(&node, "alice").await;
    let bob = e2ee_client(&node, "bob").await;
    let room = encrypted_room(&alice, &bob).await;
    let first = say(&alice, &room, "before the new phone").await;
    assert_eq!(
        receive(&bob, &room, &first).await.0,
        Seen::Decrypted("before the new phone".to_owned())
    );
    let since = sync(&alice).await.next_batch;

    // Bob's second device uploads its keys: Alice's next sync names bob in
    // device_lists.changed, so her client queries his devices again and shares the room key
    // with the new one too.
    let phone = sdk_login(&node, "bob").await;
    sync(&phone).await;
    let phone_device = phone.device_id().unwrap().to_owned();
    let changes = ok(get(
        &node,
        &format!(
            "{V3}/keys/changes?from={since}&to={}",
            sync(&alice).await.next_batch
        ),
        &token(&alice),
    )
    .await);
    assert_eq!(changes["changed"], json!([user_id("bob")]), "{changes}");
    let second = say(&alice, &room, "after the new phone").await;
    let alice_sees = alice
        .encryption()
        .get_user_devices(&uid("bob"))
        .await
        .unwrap();
    assert!(
        alice_sees.get(&phone_device).is_some(),
        "alice's client learned bob's new device"
    );
    let (seen, to_device) = receive(&phone, &room, &second).await;
    assert!(
        got_room_key(&to_device, &room),
        "the phone got the room key: {to_device:?}"
    );
    assert_eq!(seen, Seen::Decrypted("after the new phone".to_owned()));
    assert_eq!(
        receive(&bob, &room, &second).await.0,
        Seen::Decrypted("after the new phone".to_owned())
    );
}

#[tokio::test]
async fn with_bobs_one_time_keys_used_up_his_fallback_key_still_starts_a_session() {
    let node = TestNode::spawn().await;
    let alice = e2ee_client(&node, "alice").await;
    let bob = e2ee_client(&node, "bob").await;
    let room = encrypted_room(&alice, &bob).await;
    let bob_device = bob.device_id().unwrap().to_owned();
    let bobs_keys = || async {
        let body = ok(get(&node, &format!("{V3}/sync?timeout=0"), &token(&bob)).await);
        let count = body["device_one_time_keys_count"]["signed_curve25519"].as_u64();
        (
            count.expect("count"),
            body["device_unused_fallback_key_types"].clone(),
        )
    };
    let (count, fallback) = bobs_keys().await;
    assert_eq!(fallback, json!(["signed_curve25519"]));

    // Carol claims every one-time key of Bob's device: each once.
    let carol = register_session(&node, "carol").await;
    let claim =
        json!({"one_time_keys": {user_id("bob"): {bob_device.as_str(): "signed_curve25519"}}});
    let mut claimed = std::collections::HashSet::new();
    for _ in 0..count {
        let got = ok(carol.post(&node, "/keys/claim", &claim).await);
        let keys = got["one_time_keys"][user_id("bob")][bob_device.as_str()]
            .as_object()
            .cloned()
            .unwrap_or_default();
        assert_eq!(keys.len(), 1, "{got}");
        assert!(claimed.insert(keys.keys().next().unwrap().clone()), "{got}");
    }
    assert_eq!(bobs_keys().await, (0, json!(["signed_curve25519"])));

    // Alice's client gets the fallback key, which is then used, and Bob still decrypts.
    let sent = say(&alice, &room, "sent with the last resort").await;
    assert_eq!(
        bobs_keys().await,
        (0, json!([])),
        "the fallback key was handed out"
    );
    assert_eq!(
        receive(&bob, &room, &sent).await.0,
        Seen::Decrypted("sent with the last resort".to_owned())
    );
}

// --- a room without encryption ------------------------------------------------------------------

#[tokio::test]
async fn a_room_without_encryption_is_seen_as_such_and_its_messages_stay_plain() {
    let node = TestNode::spawn().await;
    let alice = e2ee_client(&node, "alice").await;
    let bob = e2ee_client(&node, "bob").await;
    let mut req = create_room::v3::Request::new();
    req.invite = vec![uid("bob")];
    let room = alice.create_room(req).await.expect("createRoom");
    let room_id = room.room_id().to_owned();
    sync(&bob).await;
    bob.join_room_by_id(&room_id).await.expect("bob joins");
    sync(&alice).await;

    // Nothing in /sync says "not encrypted": the client asks for the state event, and the
    // node's 404 M_NOT_FOUND is what tells it.
    let raw = get(
        &node,
        &room_path(room_id.as_str(), "state/m.room.encryption/"),
        &token(&alice),
    )
    .await;
    assert_eq!(raw.0, 404, "{}", raw.1);
    assert_eq!(raw.1["errcode"], "M_NOT_FOUND", "{}", raw.1);
    let alices_room = alice.get_room(&room_id).unwrap();
    assert!(alices_room.encryption_state().is_unknown());
    let state = alices_room.latest_encryption_state().await.expect("lookup");
    assert!(matches!(state, EncryptionState::NotEncrypted), "{state:?}");
    assert!(!alices_room.encryption_state().is_encrypted());

    let sent = say(&alice, &room_id, "nothing to hide").await;
    let stored = stored_event(&node, &bob, &room_id, &sent).await;
    assert_eq!(stored["type"], "m.room.message", "{stored}");
    assert_eq!(stored["content"]["body"], "nothing to hide", "{stored}");
    assert_eq!(receive(&bob, &room_id, &sent).await.0, Seen::Plain);
}
