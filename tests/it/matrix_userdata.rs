//! The per-user Matrix endpoints over raw HTTP/1.1: filters, profiles, account data, push
//! rules, devices (with password user-interactive authentication), end-to-end keys,
//! sendToDevice, typing, receipts and read markers; each with its success and its error paths
//! (exact status and `errcode`).

use serde_json::{Value, json};

use crate::support::matrix::{
    Session, V3, anon_get, assert_error, call, create_room, get, join, login, next_batch, ok,
    register_session, send_text, sync, user_id,
};
use crate::support::{DOMAIN, TestNode};

#[tokio::test]
async fn filters_belong_to_their_uploader() {
    let node = TestNode::spawn().await;
    let alice = register_session(&node, "alice").await;
    let bob = register_session(&node, "bob").await;
    let filter = json!({"room": {"timeline": {"limit": 7}}, "event_fields": ["type"]});

    let path = format!("/user/{}/filter", alice.user_id);
    let created = ok(alice.post(&node, &path, &filter).await);
    let id = created["filter_id"].as_str().expect("filter_id").to_owned();
    let got = ok(alice.get(&node, &format!("{path}/{id}")).await);
    assert_eq!(got["room"]["timeline"]["limit"], 7);
    assert_eq!(got["event_fields"], json!(["type"]));
    // An empty body is an empty filter.
    ok(alice.post_empty(&node, &path).await);

    assert_error(
        &bob.get(&node, &format!("{path}/{id}")).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(&bob.post(&node, &path, &filter).await, 403, "M_FORBIDDEN");
    let bobs = format!("/user/{}/filter/{id}", bob.user_id);
    assert_error(&bob.get(&node, &bobs).await, 404, "M_NOT_FOUND");
    assert_error(
        &alice.get(&node, &format!("{path}/9999")).await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &anon_get(&node, &format!("{V3}{path}/{id}")).await,
        401,
        "M_MISSING_TOKEN",
    );
}

#[tokio::test]
async fn profiles_are_public_and_changed_by_their_owner() {
    let node = TestNode::spawn().await;
    let alice = register_session(&node, "alice").await;
    let bob = register_session(&node, "bob").await;
    let profile = format!("/profile/{}", alice.user_id);

    assert_eq!(ok(alice.get(&node, &profile).await), json!({}));
    let name = json!({"displayname": "Alice A."});
    ok(alice
        .put(&node, &format!("{profile}/displayname"), &name)
        .await);
    let avatar = json!({"avatar_url": "mxc://example.com/alice"});
    ok(alice
        .put(&node, &format!("{profile}/avatar_url"), &avatar)
        .await);

    // Readable without a token.
    let anonymous = ok(anon_get(&node, &format!("{V3}{profile}")).await);
    assert_eq!(
        anonymous,
        json!({"displayname": "Alice A.", "avatar_url": "mxc://example.com/alice"})
    );
    let dn = ok(anon_get(&node, &format!("{V3}{profile}/displayname")).await);
    assert_eq!(dn, name);
    let av = ok(bob.get(&node, &format!("{profile}/avatar_url")).await);
    assert_eq!(av, avatar);

    let theft = json!({"displayname": "Not Alice"});
    assert_error(
        &bob.put(&node, &format!("{profile}/displayname"), &theft)
            .await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &bob.put(&node, &format!("{profile}/avatar_url"), &avatar)
            .await,
        403,
        "M_FORBIDDEN",
    );
    let nobody = format!("/profile/{}", user_id("nobody"));
    assert_error(&alice.get(&node, &nobody).await, 404, "M_NOT_FOUND");
    assert_error(
        &alice.get(&node, &format!("{nobody}/displayname")).await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &alice.get(&node, &format!("{nobody}/avatar_url")).await,
        404,
        "M_NOT_FOUND",
    );
    // Removing the display name leaves the avatar.
    ok(alice
        .put(&node, &format!("{profile}/displayname"), &json!({}))
        .await);
    assert_eq!(ok(alice.get(&node, &profile).await), avatar);
}

#[tokio::test]
async fn account_data_is_private_and_survives_a_restart() {
    let node = TestNode::spawn().await;
    let alice = register_session(&node, "alice").await;
    let bob = register_session(&node, "bob").await;
    let global = format!("/user/{}/account_data/org.example.settings", alice.user_id);
    let room = format!(
        "/user/{}/rooms/!somewhere:{DOMAIN}/account_data/org.example.tag",
        alice.user_id
    );

    assert_error(&alice.get(&node, &global).await, 404, "M_NOT_FOUND");
    ok(alice.put(&node, &global, &json!({"theme": "dark"})).await);
    ok(alice.put(&node, &global, &json!({"theme": "light"})).await);
    ok(alice.put(&node, &room, &json!({"order": 1})).await);

    assert_error(&bob.get(&node, &global).await, 403, "M_FORBIDDEN");
    assert_error(
        &bob.put(&node, &global, &json!({})).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(&bob.get(&node, &room).await, 403, "M_FORBIDDEN");
    assert_error(&bob.put(&node, &room, &json!({})).await, 403, "M_FORBIDDEN");
    let unset = format!("/user/{}/account_data/org.example.other", alice.user_id);
    assert_error(&alice.get(&node, &unset).await, 404, "M_NOT_FOUND");
    let push_rules = format!("/user/{}/account_data/m.push_rules", alice.user_id);
    assert_error(
        &alice.put(&node, &push_rules, &json!({})).await,
        405,
        "M_BAD_JSON",
    );
    assert_error(
        &alice.put(&node, &global, &json!([1])).await,
        400,
        "M_BAD_JSON",
    );

    let node = node.restart().await;
    assert_eq!(
        ok(alice.get(&node, &global).await),
        json!({"theme": "light"})
    );
    assert_eq!(ok(alice.get(&node, &room).await), json!({"order": 1}));
}

#[tokio::test]
async fn push_rules_are_the_server_defaults() {
    let node = TestNode::spawn().await;
    let alice = register_session(&node, "alice").await;
    let all = ok(alice.get(&node, "/pushrules/").await);
    let overrides = all["global"]["override"].as_array().expect("override");
    assert!(
        overrides.iter().any(|r| r["rule_id"] == ".m.rule.master"),
        "{}",
        all
    );
    let global = ok(alice.get(&node, "/pushrules/global/").await);
    assert_eq!(global, all["global"]);
    assert_error(
        &anon_get(&node, &format!("{V3}/pushrules/")).await,
        401,
        "M_MISSING_TOKEN",
    );
}

#[tokio::test]
async fn devices_are_listed_renamed_and_deleted_with_the_password() {
    let node = TestNode::spawn().await;
    let alice = register_session(&node, "alice").await;
    let other = login(&node, "alice").await;
    let bob = register_session(&node, "bob").await;

    let list = ok(alice.get(&node, "/devices").await);
    let ids: Vec<&str> = list["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .filter_map(|d| d["device_id"].as_str())
        .collect();
    assert_eq!(ids.len(), 2, "{}", list);
    assert!(ids.contains(&alice.device_id.as_str()) && ids.contains(&other.device_id.as_str()));

    let path = format!("/devices/{}", other.device_id);
    ok(alice
        .put(&node, &path, &json!({"display_name": "phone"}))
        .await);
    let got = ok(alice.get(&node, &path).await);
    assert_eq!(got["display_name"], "phone");
    assert_error(
        &alice.get(&node, "/devices/NOSUCH").await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &alice.put(&node, "/devices/NOSUCH", &json!({})).await,
        404,
        "M_NOT_FOUND",
    );
    // Another user's device is not yours.
    let bobs = format!("/devices/{}", bob.device_id);
    assert_error(&alice.get(&node, &bobs).await, 404, "M_NOT_FOUND");

    // The device to delete has used its token (the node has it cached): the deletion revokes
    // it all the same.
    ok(other.get(&node, "/devices").await);
    // Deleting asks for the password first.
    let challenge = alice.delete(&node, &path, &json!({})).await;
    assert_eq!(challenge.0, 401, "{}", challenge.1);
    assert_eq!(
        challenge.1["flows"],
        json!([{"stages": ["m.login.password"]}])
    );
    let session = challenge.1["session"].as_str().expect("session").to_owned();
    let auth = |password: &str| {
        json!({"auth": {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": "alice"},
            "password": password,
            "session": session,
        }})
    };
    let wrong = alice.delete(&node, &path, &auth("wrong")).await;
    assert_error(&wrong, 401, "M_FORBIDDEN");
    assert_eq!(wrong.1["session"], session.as_str());
    assert_eq!(wrong.1["flows"], challenge.1["flows"]);
    // Bob's password does not delete Alice's device.
    let bob_auth = json!({"auth": {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": "bob"},
        "password": "pw-bob",
    }});
    assert_error(
        &alice.delete(&node, &path, &bob_auth).await,
        401,
        "M_FORBIDDEN",
    );
    ok(alice.delete(&node, &path, &auth("pw-alice")).await);
    assert_error(&other.get(&node, "/devices").await, 401, "M_UNKNOWN_TOKEN");
    assert_error(
        &alice.delete(&node, &path, &auth("pw-alice")).await,
        404,
        "M_NOT_FOUND",
    );

    // POST /delete_devices: the same flow, several devices at once.
    let third = login(&node, "alice").await;
    let fourth = login(&node, "alice").await;
    let devices = json!({"devices": [third.device_id, fourth.device_id]});
    let challenge = alice.post(&node, "/delete_devices", &devices).await;
    assert_eq!(challenge.0, 401, "{}", challenge.1);
    assert_eq!(
        challenge.1["flows"],
        json!([{"stages": ["m.login.password"]}])
    );
    let mut with_auth = auth("pw-alice");
    with_auth["devices"] = devices["devices"].clone();
    ok(alice.post(&node, "/delete_devices", &with_auth).await);
    assert_error(&third.get(&node, "/devices").await, 401, "M_UNKNOWN_TOKEN");
    assert_error(&fourth.get(&node, "/devices").await, 401, "M_UNKNOWN_TOKEN");
    let left = ok(alice.get(&node, "/devices").await);
    assert_eq!(left["devices"].as_array().map(Vec::len), Some(1));
}

fn device_keys(s: &Session, key: &str) -> Value {
    json!({
        "user_id": s.user_id,
        "device_id": s.device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {
            format!("curve25519:{}", s.device_id): key,
            format!("ed25519:{}", s.device_id): key,
        },
        "signatures": {s.user_id.clone(): {format!("ed25519:{}", s.device_id): "sig"}},
    })
}

#[tokio::test]
async fn keys_are_uploaded_queried_and_claimed_once() {
    let node = TestNode::spawn().await;
    let alice = register_session(&node, "alice").await;
    let bob = register_session(&node, "bob").await;

    let upload = json!({
        "device_keys": device_keys(&alice, "aliceKey"),
        "one_time_keys": {
            "signed_curve25519:AAAA": {"key": "otk-a", "signatures": {}},
            "signed_curve25519:BBBB": {"key": "otk-b", "signatures": {}},
        },
    });
    let counts = ok(alice.post(&node, "/keys/upload", &upload).await);
    assert_eq!(counts["one_time_key_counts"]["signed_curve25519"], 2);

    let query = json!({"device_keys": {alice.user_id.clone(): []}});
    let found = ok(bob.post(&node, "/keys/query", &query).await);
    let keys = &found["device_keys"][&alice.user_id][&alice.device_id];
    assert_eq!(
        keys["keys"][format!("curve25519:{}", alice.device_id)],
        "aliceKey"
    );
    let unknown = json!({"device_keys": {alice.user_id.clone(): ["NOSUCH"]}});
    let none = ok(bob.post(&node, "/keys/query", &unknown).await);
    assert_eq!(none["device_keys"][&alice.user_id], json!({}));

    let claim = json!({"one_time_keys": {alice.user_id.clone(): {
        alice.device_id.clone(): "signed_curve25519"
    }}});
    let mut claimed = Vec::new();
    for _ in 0..3 {
        let got = ok(bob.post(&node, "/keys/claim", &claim).await);
        let keys = &got["one_time_keys"][&alice.user_id][&alice.device_id];
        claimed.push(
            keys.as_object()
                .map(|o| o.keys().cloned().collect::<Vec<_>>()),
        );
    }
    assert_eq!(
        claimed,
        [
            Some(vec!["signed_curve25519:AAAA".to_owned()]),
            Some(vec!["signed_curve25519:BBBB".to_owned()]),
            None,
        ]
    );
    // The count the device sees is down to zero (an empty body uploads nothing).
    let empty = ok(alice.post_empty(&node, "/keys/upload").await);
    assert_eq!(empty["one_time_key_counts"]["signed_curve25519"], 0);

    // Keys of someone else's device are refused.
    let forged = json!({"device_keys": device_keys(&bob, "x")});
    assert_error(
        &alice.post(&node, "/keys/upload", &forged).await,
        400,
        "M_INVALID_PARAM",
    );

    // Alice's upload is a change of her device list, between the first and a later token.
    let changes = ok(alice
        .get(&node, "/keys/changes?from=s0_0&to=s1000000_0")
        .await);
    assert_eq!(changes["changed"], json!([alice.user_id]));
    let later = ok(alice
        .get(&node, "/keys/changes?from=s1000000_0&to=s1000001_0")
        .await);
    assert_eq!(later["changed"], json!([]));
    assert_error(
        &alice.get(&node, "/keys/changes?from=bogus&to=s1_0").await,
        400,
        "M_INVALID_PARAM",
    );
}

#[tokio::test]
async fn send_to_device_accepts_a_transaction_and_its_repetition() {
    let node = TestNode::spawn().await;
    let alice = register_session(&node, "alice").await;
    let bob = register_session(&node, "bob").await;
    let messages = json!({"messages": {bob.user_id.clone(): {"*": {"hello": "bob"}}}});
    let path = "/sendToDevice/org.example.ping/txn1";
    ok(alice.put(&node, path, &messages).await);
    ok(alice.put(&node, path, &messages).await);
    assert_error(
        &call(
            &node,
            "PUT",
            &format!("{V3}{path}"),
            None,
            Some(messages.to_string().as_bytes()),
        )
        .await,
        401,
        "M_MISSING_TOKEN",
    );
    assert_error(&alice.put(&node, path, &json!({})).await, 400, "M_BAD_JSON");
}

/// To-device messages waiting for a device come 100 a `/sync` at most, the rest in the syncs
/// that follow (a long-poll returns at once while some wait): each once, in send order.
#[tokio::test]
async fn many_to_device_messages_come_in_bounded_syncs_each_once_in_order() {
    let node = TestNode::spawn().await;
    let alice = register_session(&node, "alice").await;
    let bob = register_session(&node, "bob").await;
    for i in 0..250 {
        let messages = json!({"messages": {bob.user_id.clone(): {"*": {"n": i}}}});
        ok(alice
            .put(
                &node,
                &format!("/sendToDevice/org.example.n/t{i}"),
                &messages,
            )
            .await);
    }
    let mut seen = Vec::new();
    let mut since: Option<String> = None;
    let mut syncs = 0;
    while seen.len() < 250 {
        syncs += 1;
        assert!(syncs <= 4, "only {} of 250 after {syncs} syncs", seen.len());
        // A long-poll: it must not wait while messages wait.
        let path = match &since {
            Some(s) => format!("{V3}/sync?timeout=30000&since={s}"),
            None => format!("{V3}/sync?timeout=30000"),
        };
        let body = ok(get(&node, &path, &bob.token).await);
        let events = body["to_device"]["events"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(events.len() <= 100, "{} in one sync", events.len());
        seen.extend(events.iter().map(|e| e["content"]["n"].as_u64().unwrap()));
        since = Some(body["next_batch"].as_str().unwrap().to_owned());
    }
    assert_eq!(seen, (0..250).collect::<Vec<u64>>());
    assert_eq!(syncs, 3);
}

#[tokio::test]
async fn typing_and_receipts_need_a_joined_room_and_your_own_user() {
    let node = TestNode::spawn().await;
    let alice = register_session(&node, "alice").await;
    let bob = register_session(&node, "bob").await;
    let room = create_room(&node, &alice.token, &json!({})).await;

    let typing = format!("/rooms/{room}/typing/{}", alice.user_id);
    let start = json!({"typing": true, "timeout": 30000});
    ok(alice.put(&node, &typing, &start).await);
    ok(alice.put(&node, &typing, &json!({"typing": false})).await);
    assert_error(&bob.put(&node, &typing, &start).await, 403, "M_FORBIDDEN");
    let bobs_typing = format!("/rooms/{room}/typing/{}", bob.user_id);
    assert_error(
        &bob.put(&node, &bobs_typing, &start).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &alice.put(&node, &typing, &json!({"typing": true})).await,
        400,
        "M_BAD_JSON",
    );

    let event = "$someevent";
    for kind in ["m.read", "m.read.private"] {
        let receipt = format!("/rooms/{room}/receipt/{kind}/{event}");
        ok(alice.post(&node, &receipt, &json!({})).await);
        assert_error(
            &bob.post(&node, &receipt, &json!({})).await,
            403,
            "M_FORBIDDEN",
        );
    }
    let receipt = format!("/rooms/{room}/receipt/m.fully_read/{event}");
    ok(alice.post(&node, &receipt, &json!({})).await);
    let fully_read = format!(
        "/user/{}/rooms/{room}/account_data/m.fully_read",
        alice.user_id
    );
    assert_eq!(ok(alice.get(&node, &fully_read).await)["event_id"], event);
    let markers = format!("/rooms/{room}/read_markers");
    let body = json!({"m.fully_read": "$later", "m.read": "$later"});
    ok(alice.post(&node, &markers, &body).await);
    assert_eq!(
        ok(alice.get(&node, &fully_read).await)["event_id"],
        "$later"
    );
    assert_error(&bob.post(&node, &markers, &body).await, 403, "M_FORBIDDEN");
    // Clients cannot set the marker as plain account data.
    assert_error(
        &alice
            .put(&node, &fully_read, &json!({"event_id": "$x"}))
            .await,
        405,
        "M_BAD_JSON",
    );
}

#[tokio::test]
async fn sync_delivers_to_device_once_account_data_typing_and_receipts() {
    let node = TestNode::spawn().await;
    let alice = register_session(&node, "alice").await;
    let bob = register_session(&node, "bob").await;
    let start = next_batch(&sync(&node, &bob.token, None).await);

    let messages = json!({"messages": {bob.user_id.clone(): {"*": {"hello": "bob"}}}});
    let path = "/sendToDevice/org.example.ping/txn1";
    ok(alice.put(&node, path, &messages).await);
    ok(alice.put(&node, path, &messages).await);
    let first = sync(&node, &bob.token, Some(&start)).await;
    let events = first["to_device"]["events"].as_array().expect("to_device");
    assert_eq!(events.len(), 1, "{first}");
    assert_eq!(events[0]["type"], "org.example.ping");
    assert_eq!(events[0]["sender"], alice.user_id);
    assert_eq!(events[0]["content"], json!({"hello": "bob"}));
    // Syncing past them acknowledges them: they are gone, even for a retried older token.
    let second = sync(&node, &bob.token, Some(&next_batch(&first))).await;
    assert!(
        second["to_device"]["events"]
            .as_array()
            .is_none_or(Vec::is_empty)
    );
    let retried = sync(&node, &bob.token, Some(&start)).await;
    assert!(
        retried["to_device"]["events"]
            .as_array()
            .is_none_or(Vec::is_empty)
    );

    let room = create_room(&node, &alice.token, &json!({})).await;
    let before = next_batch(&sync(&node, &alice.token, None).await);
    let global = format!("/user/{}/account_data/org.example.settings", alice.user_id);
    ok(alice.put(&node, &global, &json!({"theme": "dark"})).await);
    let typing = format!("/rooms/{room}/typing/{}", alice.user_id);
    ok(alice
        .put(&node, &typing, &json!({"typing": true, "timeout": 30000}))
        .await);
    let receipt = format!("/rooms/{room}/receipt/m.read/$seen");
    ok(alice.post(&node, &receipt, &json!({})).await);

    let body = sync(&node, &alice.token, Some(&before)).await;
    let account_data = body["account_data"]["events"]
        .as_array()
        .expect("account_data");
    assert!(
        account_data.iter().any(
            |e| e["type"] == "org.example.settings" && e["content"] == json!({"theme": "dark"})
        ),
        "{body}"
    );
    let ephemeral = body["rooms"]["join"][&room]["ephemeral"]["events"]
        .as_array()
        .unwrap_or_else(|| panic!("ephemeral events in {body}"));
    let typing_event = ephemeral.iter().find(|e| e["type"] == "m.typing");
    assert_eq!(
        typing_event.map(|e| &e["content"]["user_ids"]),
        Some(&json!([alice.user_id])),
        "{body}"
    );
    let receipts = ephemeral.iter().find(|e| e["type"] == "m.receipt");
    assert!(
        receipts.is_some_and(|e| e["content"]["$seen"]["m.read"][&alice.user_id].is_object()),
        "{body}"
    );
}

/// The key counts a `/sync` answer gives its device: `(signed_curve25519 count, unused
/// fallback key types)`; `None` where a field is missing.
fn key_counts(body: &Value) -> (Option<u64>, Option<Value>) {
    (
        body["device_one_time_keys_count"]["signed_curve25519"].as_u64(),
        body.get("device_unused_fallback_key_types").cloned(),
    )
}

#[tokio::test]
async fn every_sync_answer_carries_the_devices_key_counts() {
    let node = TestNode::spawn().await;
    let alice = register_session(&node, "alice").await;
    let bob = register_session(&node, "bob").await;
    let room = create_room(&node, &alice.token, &json!({"preset": "public_chat"})).await;
    join(&node, &bob.token, &room).await;

    let upload = json!({
        "device_keys": device_keys(&alice, "aliceKey"),
        "one_time_keys": {
            "signed_curve25519:AAAA": {"key": "otk-a", "signatures": {}},
            "signed_curve25519:BBBB": {"key": "otk-b", "signatures": {}},
        },
        "fallback_keys": {
            "signed_curve25519:FFFF": {"key": "fb", "fallback": true, "signatures": {}},
        },
    });
    ok(alice.post(&node, "/keys/upload", &upload).await);
    let first = sync(&node, &alice.token, None).await;
    assert_eq!(
        key_counts(&first),
        (Some(2), Some(json!(["signed_curve25519"])))
    );

    // An answer that only brings a room message (nothing of alice's own data changed).
    send_text(&node, &bob.token, &room, "t1", "hello").await;
    let second = sync(&node, &alice.token, Some(&next_batch(&first))).await;
    assert!(second["rooms"]["join"][&room].is_object(), "{second}");
    assert_eq!(
        key_counts(&second),
        (Some(2), Some(json!(["signed_curve25519"])))
    );

    // Bob claims a one-time key: the next answer has the new count, and so does the one after,
    // which again only brings a message.
    let claim = json!({"one_time_keys": {alice.user_id.clone(): {
        alice.device_id.clone(): "signed_curve25519"
    }}});
    ok(bob.post(&node, "/keys/claim", &claim).await);
    let third = sync(&node, &alice.token, Some(&next_batch(&second))).await;
    assert_eq!(
        key_counts(&third),
        (Some(1), Some(json!(["signed_curve25519"])))
    );
    send_text(&node, &bob.token, &room, "t2", "again").await;
    let fourth = sync(&node, &alice.token, Some(&next_batch(&third))).await;
    assert!(fourth["rooms"]["join"][&room].is_object(), "{fourth}");
    assert_eq!(
        key_counts(&fourth),
        (Some(1), Some(json!(["signed_curve25519"])))
    );

    // The last one-time key and then the fallback key are handed out.
    ok(bob.post(&node, "/keys/claim", &claim).await);
    ok(bob.post(&node, "/keys/claim", &claim).await);
    send_text(&node, &bob.token, &room, "t3", "once more").await;
    let fifth = sync(&node, &alice.token, Some(&next_batch(&fourth))).await;
    assert_eq!(key_counts(&fifth), (Some(0), Some(json!([]))));
}
