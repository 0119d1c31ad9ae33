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
//! Cross-signing: a client that bootstraps it on login has its identity and its device signed
//! by it served to others; Bob's signature of Alice's identity (his user-signing key) comes back
//! to him only; replacing the keys needs the password (user-interactive authentication). The
//! refusals of both upload endpoints are checked over raw HTTP with their errcodes.

use std::time::Duration;

use matrix_sdk::deserialized_responses::{ProcessedToDeviceEvent, TimelineEventKind};
use matrix_sdk::encryption::identities::UserIdentity;
use matrix_sdk::encryption::vodozemac::Ed25519SecretKey;
use matrix_sdk::ruma::CanonicalJsonValue;
use matrix_sdk::ruma::api::client::room::create_room;
use matrix_sdk::ruma::api::client::uiaa::{
    AuthData, AuthType, MatrixUserIdentifier, Password, UserIdentifier,
};
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
    V3, anon_post, assert_error, call, get, ok, password_login, register, register_session,
    room_path, sdk_login, sdk_login_cross_signing, sdk_say as say, sdk_sync, sdk_user_id, user_id,
};

// --- helpers ------------------------------------------------------------------------------------

fn uid(name: &str) -> OwnedUserId {
    sdk_user_id(name)
}

/// One `/sync` from the client's last token (long-poll up to 2 s). matrix-sdk sends its pending
/// E2EE requests (keys/upload, keys/query, keys/claim, sendToDevice) before and after it.
async fn sync(client: &Client) -> SyncResponse {
    sdk_sync(client, Duration::from_secs(2)).await
}

/// Registers `name` and logs in with an encryption-enabled matrix-sdk client that has synced
/// once (so its device keys and one-time keys went up).
async fn e2ee_client(node: &TestNode, name: &str) -> Client {
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
async fn post_as(node: &TestNode, client: &Client, path: &str, body: &Value) -> Value {
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

// --- cross-signing ------------------------------------------------------------------------------

/// The base64 public key of an sdk identity's master key.
fn master_of(identity: &UserIdentity) -> String {
    identity
        .master_key()
        .get_first_key()
        .expect("a master key")
        .to_base64()
}

/// `POST /keys/query` for `user`'s devices, raw, as `client`.
async fn raw_query(node: &TestNode, client: &Client, user: &str) -> Value {
    post_as(
        node,
        client,
        "/keys/query",
        &json!({"device_keys": {user: []}}),
    )
    .await
}

#[tokio::test]
async fn cross_signing_a_client_bootstraps_is_served_and_bobs_signature_reaches_him_only() {
    let node = TestNode::spawn().await;
    register(&node, "alice").await;
    register(&node, "bob").await;
    let alice = sdk_login_cross_signing(&node, "alice").await;
    let bob = sdk_login_cross_signing(&node, "bob").await;
    sync(&alice).await;
    sync(&bob).await;
    let status = alice.encryption().cross_signing_status().await.unwrap();
    assert!(status.is_complete(), "{status:?}");

    // Bob asks the node: Alice's identity has the master key her client made, and her device
    // carries the signature of her self-signing key.
    let own = alice
        .encryption()
        .get_user_identity(&uid("alice"))
        .await
        .unwrap()
        .expect("alice's own identity");
    let identity = bob
        .encryption()
        .request_user_identity(&uid("alice"))
        .await
        .expect("keys/query")
        .expect("alice's identity is on the node");
    assert_eq!(master_of(&identity), master_of(&own));
    let device = bob
        .encryption()
        .get_device(&uid("alice"), alice.device_id().unwrap())
        .await
        .unwrap()
        .expect("alice's device");
    assert!(
        device.is_cross_signed_by_owner(),
        "the node serves her device signed by her self-signing key"
    );

    // Bob verifies Alice: his user-signing key signs her master key. The signature comes back
    // with her master key to him, not to her (nor her user-signing key to him).
    assert!(!identity.is_verified());
    identity.verify().await.expect("keys/signatures/upload");
    let identity = bob
        .encryption()
        .request_user_identity(&uid("alice"))
        .await
        .unwrap()
        .unwrap();
    assert!(identity.is_verified(), "bob's signature is served to bob");
    let to_bob = raw_query(&node, &bob, &user_id("alice")).await;
    let to_alice = raw_query(&node, &alice, &user_id("alice")).await;
    let signers = |answer: &Value| {
        answer["master_keys"][user_id("alice")]["signatures"]
            .as_object()
            .map(|o| o.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    assert_eq!(
        signers(&to_bob),
        [user_id("alice"), user_id("bob")],
        "{to_bob}"
    );
    assert_eq!(signers(&to_alice), [user_id("alice")], "{to_alice}");
    assert!(to_alice["user_signing_keys"][user_id("alice")].is_object());
    assert!(to_bob["user_signing_keys"].get(user_id("alice")).is_none());
    assert!(to_bob["self_signing_keys"][user_id("alice")].is_object());
}

#[tokio::test]
async fn replacing_cross_signing_keys_needs_the_password() {
    let node = TestNode::spawn().await;
    register(&node, "alice").await;
    let alice = sdk_login_cross_signing(&node, "alice").await;
    let bob = e2ee_client(&node, "bob").await;
    let alices_master = || async {
        let identity = bob
            .encryption()
            .request_user_identity(&uid("alice"))
            .await
            .unwrap()
            .expect("alice's identity");
        master_of(&identity)
    };
    let first = alices_master().await;

    // The same keys again need no authentication.
    alice
        .encryption()
        .bootstrap_cross_signing(None)
        .await
        .expect("the same keys again");
    assert_eq!(alices_master().await, first);

    // A new device of hers, without the private keys, makes new ones: 401 with the password
    // flow, then accepted with her password.
    let laptop = sdk_login(&node, "alice").await;
    let err = laptop
        .encryption()
        .bootstrap_cross_signing(None)
        .await
        .expect_err("replacing the keys without authentication");
    let uiaa = err.as_uiaa_response().expect("a 401 with the flows");
    assert!(
        uiaa.flows.iter().any(|f| f.stages == [AuthType::Password]),
        "{:?}",
        uiaa.flows
    );
    let mut password = Password::new(
        UserIdentifier::Matrix(MatrixUserIdentifier::new("alice".to_owned())),
        "pw-alice".to_owned(),
    );
    password.session = uiaa.session.clone();
    laptop
        .encryption()
        .bootstrap_cross_signing(Some(AuthData::Password(password)))
        .await
        .expect("with the password");
    let own = laptop
        .encryption()
        .get_user_identity(&uid("alice"))
        .await
        .unwrap()
        .expect("the laptop's identity");
    let replaced = alices_master().await;
    assert_ne!(replaced, first, "bob sees a new master key");
    assert_eq!(replaced, master_of(&own), "the one the laptop made");
}

/// Alice's `m.login.password` stage, in `session` if any.
fn password_auth(session: Option<&str>) -> Value {
    let mut auth = json!({
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": "alice"},
        "password": "pw-alice",
    });
    if let Some(session) = session {
        auth["session"] = json!(session);
    }
    auth
}

/// A fresh ed25519 key and its public key (unpadded base64).
fn ed25519() -> (Ed25519SecretKey, String) {
    let key = Ed25519SecretKey::new();
    let public = key.public_key().to_base64();
    (key, public)
}

/// A cross-signing key object of `user`.
fn signing_key(user: &str, usage: &str, public: &str) -> Value {
    json!({"user_id": user, "usage": [usage], "keys": {format!("ed25519:{public}"): public}})
}

/// `object` with a signature by `user`'s key `public` (`key`) added.
fn signed(mut object: Value, user: &str, key: &Ed25519SecretKey, public: &str) -> Value {
    let mut unsigned = object.clone();
    let fields = unsigned.as_object_mut().unwrap();
    fields.remove("signatures");
    fields.remove("unsigned");
    let canonical = CanonicalJsonValue::try_from(unsigned).unwrap().to_string();
    let sig = key.sign(canonical.as_bytes()).to_base64();
    object["signatures"][user][format!("ed25519:{public}")] = json!(sig);
    object
}

#[tokio::test]
async fn cross_signing_key_uploads_are_refused_with_the_spec_errcodes() {
    let node = TestNode::spawn().await;
    let alice = register_session(&node, "alice").await;
    let me = alice.user_id.as_str();
    let path = "/keys/device_signing/upload";
    let (master, master_pub) = ed25519();
    let (_, ssk_pub) = ed25519();

    let ssk_alone = json!({"self_signing_key": signing_key(me, "self_signing", &ssk_pub)});
    assert_error(
        &alice.post(&node, path, &ssk_alone).await,
        400,
        "M_MISSING_PARAM",
    );
    let of_bob = json!({"master_key": signing_key(&user_id("bob"), "master", &master_pub)});
    assert_error(
        &alice.post(&node, path, &of_bob).await,
        400,
        "M_INVALID_PARAM",
    );
    let wrong_usage = json!({"master_key": signing_key(me, "user_signing", &master_pub)});
    assert_error(
        &alice.post(&node, path, &wrong_usage).await,
        400,
        "M_INVALID_PARAM",
    );
    let not_a_key = json!({"master_key": signing_key(me, "master", "short")});
    assert_error(
        &alice.post(&node, path, &not_a_key).await,
        400,
        "M_INVALID_PARAM",
    );

    let master_key = json!({"master_key": signing_key(me, "master", &master_pub)});
    ok(alice.post(&node, path, &master_key).await);
    let unsigned = json!({"self_signing_key": signing_key(me, "self_signing", &ssk_pub)});
    assert_error(
        &alice.post(&node, path, &unsigned).await,
        400,
        "M_INVALID_SIGNATURE",
    );
    let (other, other_pub) = ed25519();
    let by_other = signed(
        signing_key(me, "self_signing", &ssk_pub),
        me,
        &other,
        &other_pub,
    );
    let mut forged = by_other.clone();
    forged["signatures"][me] = json!({format!("ed25519:{master_pub}"): "bm90IGEgc2lnbmF0dXJl"});
    for bad in [by_other, forged] {
        let body = json!({"self_signing_key": bad});
        assert_error(
            &alice.post(&node, path, &body).await,
            400,
            "M_INVALID_SIGNATURE",
        );
    }
    // A valid one, added to the stored master key: new keys, so the password is needed.
    let good = signed(
        signing_key(me, "self_signing", &ssk_pub),
        me,
        &master,
        &master_pub,
    );
    let mut body = json!({"self_signing_key": good});
    let challenge = alice.post(&node, path, &body).await;
    assert_eq!(challenge.0, 401, "{}", challenge.1);
    assert_eq!(
        challenge.1["flows"],
        json!([{"stages": ["m.login.password"]}])
    );
    body["auth"] = password_auth(challenge.1["session"].as_str());
    ok(alice.post(&node, path, &body).await);
    body.as_object_mut().unwrap().remove("auth");
    ok(alice.post(&node, path, &body).await); // The same keys again need none.

    // A key named like one of the user's devices: 403.
    let (_, device_named) = ed25519();
    let mut login = password_login("alice", "pw-alice");
    login["device_id"] = json!(device_named);
    let phone = ok(anon_post(&node, &format!("{V3}/login"), &login).await);
    assert_eq!(phone["device_id"], json!(device_named));
    let mut clash = json!({"master_key": signing_key(me, "master", &device_named)});
    clash["auth"] = password_auth(None);
    assert_error(&alice.post(&node, path, &clash).await, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn refused_signatures_are_listed_as_failures_and_good_ones_are_served() {
    let node = TestNode::spawn().await;
    let alice = register_session(&node, "alice").await;
    let bob = register_session(&node, "bob").await;
    let me = alice.user_id.as_str();
    let (device_key, device_pub) = ed25519();
    let device = alice.device_id.as_str();
    let device_keys = signed(
        json!({
            "user_id": me,
            "device_id": device,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {
                format!("curve25519:{device}"): "Y3VydmU",
                format!("ed25519:{device}"): device_pub,
            },
        }),
        me,
        &device_key,
        device,
    );
    ok(alice
        .post(&node, "/keys/upload", &json!({"device_keys": device_keys}))
        .await);
    let path = "/keys/signatures/upload";
    let failures = |answer: &Value, key: &str| answer["failures"][me][key]["errcode"].clone();

    // No self-signing key yet, an unknown key, a signature that does not verify.
    let answer = ok(alice
        .post(
            &node,
            path,
            &json!({me: {device: device_keys, "NOSUCH": device_keys}}),
        )
        .await);
    assert_eq!(failures(&answer, device), "M_INVALID_SIGNATURE", "{answer}");
    assert_eq!(failures(&answer, "NOSUCH"), "M_NOT_FOUND", "{answer}");

    let (master, master_pub) = ed25519();
    let (ssk, ssk_pub) = ed25519();
    let keys = json!({
        "master_key": signing_key(me, "master", &master_pub),
        "self_signing_key": signed(signing_key(me, "self_signing", &ssk_pub), me, &master, &master_pub),
    });
    ok(alice
        .post(&node, "/keys/device_signing/upload", &keys)
        .await);
    let mut bogus = device_keys.clone();
    bogus["signatures"][me][format!("ed25519:{ssk_pub}")] = json!("bm90IGEgc2lnbmF0dXJl");
    let mut changed = signed(device_keys.clone(), me, &ssk, &ssk_pub);
    changed["keys"][format!("curve25519:{device}")] = json!("b3RoZXI");
    for bad in [bogus, changed] {
        let answer = ok(alice.post(&node, path, &json!({me: {device: bad}})).await);
        assert_eq!(failures(&answer, device), "M_INVALID_SIGNATURE", "{answer}");
    }
    // Bob has no user-signing key: he may not sign her master key.
    let signed_by_bob = json!({me: {master_pub.clone(): signing_key(me, "master", &master_pub)}});
    let answer = ok(bob.post(&node, path, &signed_by_bob).await);
    assert_eq!(
        answer["failures"][me][&master_pub]["errcode"], "M_INVALID_SIGNATURE",
        "{answer}"
    );

    // A good one: no failures, and the device keys come with it.
    let good = signed(device_keys.clone(), me, &ssk, &ssk_pub);
    let answer = ok(alice.post(&node, path, &json!({me: {device: good}})).await);
    assert!(
        answer.get("failures").is_none_or(|f| f == &json!({})),
        "{answer}"
    );
    let found = ok(bob
        .post(&node, "/keys/query", &json!({"device_keys": {me: []}}))
        .await);
    let sigs = &found["device_keys"][me][device]["signatures"][me];
    assert!(sigs[format!("ed25519:{ssk_pub}")].is_string(), "{found}");
    assert!(sigs[format!("ed25519:{device}")].is_string(), "{found}");
    assert_eq!(
        found["master_keys"][me]["keys"][format!("ed25519:{master_pub}")],
        json!(master_pub)
    );
}
