//! What the Matrix edge refuses or ignores before any handler runs (issue 10, defects 5 and 11):
//! JSON strings that are not Unicode (a lone surrogate escape) in any body, a token sent to
//! `login` or `register`, an inline `/sync` filter that is not JSON, and `/keys/query` or
//! `/keys/claim` naming more than 1,000 users or devices.

use serde_json::{Value, json};

use crate::support::TestNode;
use crate::support::matrix::{
    V3, assert_error, call, create_room, login, ok, password_login, register, register_session,
    room_path, user_id,
};

/// A lone high surrogate escape, as JSON text (no JSON library writes it).
const LONE: &str = r"\ud800";

/// `method path` with `body` as raw bytes, as `token`.
async fn raw(node: &TestNode, method: &str, path: &str, token: &str, body: &str) -> (u16, Value) {
    call(node, method, path, Some(token), Some(body.as_bytes())).await
}

#[tokio::test]
async fn event_content_with_a_lone_surrogate_is_bad_json_and_stores_nothing() {
    let node = TestNode::spawn().await;
    let alice = register(&node, "alice").await;
    let room = create_room(&node, &alice, &json!({})).await;

    let body = format!(r#"{{"msgtype":"m.text","body":"x{LONE}"}}"#);
    let send = raw(
        &node,
        "PUT",
        &room_path(&room, "send/m.room.message/t1"),
        &alice,
        &body,
    )
    .await;
    assert_error(&send, 400, "M_BAD_JSON");

    let body = format!(r#"{{"topic":"{LONE}"}}"#);
    let state = raw(
        &node,
        "PUT",
        &room_path(&room, "state/m.room.topic/"),
        &alice,
        &body,
    )
    .await;
    assert_error(&state, 400, "M_BAD_JSON");

    let body = format!(
        r#"{{"initial_state":[{{"type":"m.room.topic","state_key":"","content":{{"topic":"{LONE}"}}}}]}}"#
    );
    let created = raw(&node, "POST", &format!("{V3}/createRoom"), &alice, &body).await;
    assert_error(&created, 400, "M_BAD_JSON");

    // Not JSON at all is the other errcode.
    let broken = raw(
        &node,
        "PUT",
        &room_path(&room, "send/m.room.message/t2"),
        &alice,
        "{",
    )
    .await;
    assert_error(&broken, 400, "M_NOT_JSON");

    // Nothing was stored: the room's history is what createRoom made, and parses strictly.
    let (status, page) =
        crate::support::matrix::get(&node, &room_path(&room, "messages?dir=b&limit=100"), &alice)
            .await;
    assert_eq!(status, 200, "{page}");
    assert!(
        page["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["type"] != "m.room.message" && e["type"] != "m.room.topic"),
        "{page}"
    );
    assert_eq!(joined_rooms(&node, &alice).await, vec![room]);
}

/// The rooms `token`'s user joined.
async fn joined_rooms(node: &TestNode, token: &str) -> Vec<String> {
    let (status, body) =
        crate::support::matrix::get(node, &format!("{V3}/joined_rooms"), token).await;
    assert_eq!(status, 200, "{body}");
    body["joined_rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect()
}

/// `/sync` of `token` with no wait: the body, which must be a JSON object (`call` gives a JSON
/// string for a body serde_json cannot parse).
async fn strict_sync(node: &TestNode, token: &str) -> Value {
    let (status, body) =
        crate::support::matrix::get(node, &format!("{V3}/sync?timeout=0"), token).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.is_object(),
        "the /sync answer parses with serde_json: {body}"
    );
    body
}

#[tokio::test]
async fn to_device_content_with_a_lone_surrogate_is_refused_and_the_victim_still_syncs() {
    let node = TestNode::spawn().await;
    let alice = register(&node, "alice").await;
    let bob = register(&node, "bob").await;
    strict_sync(&node, &bob).await;
    let body = format!(
        r#"{{"messages":{{"{}":{{"*":{{"text":"{LONE}"}}}}}}}}"#,
        user_id("bob")
    );
    let sent = raw(
        &node,
        "PUT",
        &format!("{V3}/sendToDevice/m.test/t1"),
        &alice,
        &body,
    )
    .await;
    assert_error(&sent, 400, "M_BAD_JSON");
    // A good one after it arrives, and the whole answer parses.
    let good = json!({"messages": {user_id("bob"): {"*": {"text": "hi"}}}});
    ok(crate::support::matrix::put(
        &node,
        &format!("{V3}/sendToDevice/m.test/t2"),
        &alice,
        &good,
    )
    .await);
    let synced = strict_sync(&node, &bob).await;
    let events = synced["to_device"]["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{synced}");
    assert_eq!(events[0]["content"]["text"], "hi");
}

#[tokio::test]
async fn device_keys_with_a_lone_surrogate_are_refused_and_never_served() {
    let node = TestNode::spawn().await;
    let alice = register_session(&node, "alice").await;
    let bob = register(&node, "bob").await;
    // In a field ruma's `DeviceKeys` does not name: kept raw (never decoded) by the typed
    // check of the upload, and served as stored.
    let body = format!(
        r#"{{"device_keys":{{"user_id":"{}","device_id":"{}","algorithms":["m.olm.v1.curve25519-aes-sha2"],"keys":{{"ed25519:{}":"key"}},"signatures":{{}},"org.example.note":"{LONE}"}}}}"#,
        alice.user_id, alice.device_id, alice.device_id
    );
    let uploaded = raw(
        &node,
        "POST",
        &format!("{V3}/keys/upload"),
        &alice.token,
        &body,
    )
    .await;
    assert_error(&uploaded, 400, "M_BAD_JSON");
    let query = json!({"device_keys": {alice.user_id.clone(): []}});
    let (status, keys) =
        crate::support::matrix::post(&node, &format!("{V3}/keys/query"), &bob, &query).await;
    assert_eq!(status, 200, "{keys}");
    assert!(
        keys.is_object(),
        "keys/query parses with serde_json: {keys}"
    );
    let devices = &keys["device_keys"][&alice.user_id];
    assert!(
        devices.as_object().is_none_or(|d| d.is_empty()),
        "nothing was stored: {keys}"
    );
}

#[tokio::test]
async fn login_and_register_ignore_a_token_valid_or_stale() {
    let node = TestNode::spawn().await;
    let alice = register(&node, "alice").await;
    let body = serde_json::to_vec(&password_login("alice", "pw-alice")).unwrap();
    for token in [alice.as_str(), "syt_stale_token"] {
        let (status, done) = call(
            &node,
            "POST",
            &format!("{V3}/login"),
            Some(token),
            Some(&body),
        )
        .await;
        assert_eq!(status, 200, "login with token {token}: {done}");
        assert!(done["access_token"].is_string());
    }
    // Registration: the user-interactive flow starts (401 with flows, not M_UNKNOWN_TOKEN),
    // and completes.
    let req = json!({"username": "bob", "password": "pw-bob"});
    let bytes = serde_json::to_vec(&req).unwrap();
    let path = format!("{V3}/register");
    let (status, uia) = call(&node, "POST", &path, Some("syt_stale_token"), Some(&bytes)).await;
    assert_eq!(status, 401, "{uia}");
    assert!(uia["flows"].is_array(), "{uia}");
    let mut req = req;
    req["auth"] = json!({"type": "m.login.dummy", "session": uia["session"]});
    let bytes = serde_json::to_vec(&req).unwrap();
    let (status, done) = call(&node, "POST", &path, Some(&alice), Some(&bytes)).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["user_id"], user_id("bob"));
    login(&node, "bob").await;
}

#[tokio::test]
async fn an_inline_sync_filter_that_is_not_json_is_a_400() {
    let node = TestNode::spawn().await;
    let alice = register(&node, "alice").await;
    let sync = |filter: &'static str| {
        let alice = alice.clone();
        let node = &node;
        async move {
            crate::support::matrix::get(
                node,
                &format!("{V3}/sync?timeout=0&filter={filter}"),
                &alice,
            )
            .await
        }
    };
    assert_error(&sync("{bad").await, 400, "M_NOT_JSON");
    assert_error(&sync("%7Bbad").await, 400, "M_NOT_JSON");
    assert_error(&sync("%7B%22room%22%3A5%7D").await, 400, "M_BAD_JSON");
    // An unknown ID stays a 404; a good inline filter works.
    assert_error(&sync("12345").await, 404, "M_NOT_FOUND");
    let (status, body) = sync("%7B%22room%22%3A%7B%7D%7D").await;
    assert_eq!(status, 200, "{body}");
}

/// One `/keys/query` names at most 1,000 users and devices, one `/keys/claim` at most 1,000
/// devices (each costs queries of its own): beyond that 400 `M_INVALID_PARAM`; at the bound 200.
#[tokio::test]
async fn key_queries_and_claims_naming_too_many_targets_are_400() {
    let node = TestNode::spawn().await;
    let alice = register(&node, "alice").await;
    let users = |n: usize| -> serde_json::Map<String, Value> {
        (0..n)
            .map(|i| (format!("@u{i}:example.com"), json!([])))
            .collect()
    };
    let query = format!("{V3}/keys/query");
    let answer =
        crate::support::matrix::post(&node, &query, &alice, &json!({"device_keys": users(1001)}))
            .await;
    assert_error(&answer, 400, "M_INVALID_PARAM");
    let (status, body) =
        crate::support::matrix::post(&node, &query, &alice, &json!({"device_keys": users(1000)}))
            .await;
    assert_eq!(status, 200, "{body}");
    let devices: Vec<String> = (0..1001).map(|i| format!("D{i}")).collect();
    let answer = crate::support::matrix::post(
        &node,
        &query,
        &alice,
        &json!({"device_keys": {"@bob:example.com": devices}}),
    )
    .await;
    assert_error(&answer, 400, "M_INVALID_PARAM");
    let claims: serde_json::Map<String, Value> = (0..1001)
        .map(|i| (format!("D{i}"), json!("signed_curve25519")))
        .collect();
    let answer = crate::support::matrix::post(
        &node,
        &format!("{V3}/keys/claim"),
        &alice,
        &json!({"one_time_keys": {"@bob:example.com": claims}}),
    )
    .await;
    assert_error(&answer, 400, "M_INVALID_PARAM");
}
