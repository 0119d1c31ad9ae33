//! Every room event the node stores is a valid room version 11 PDU, checked with ruma's own
//! functions (not the node's): its content hash and its ed25519 signature verify with the key the
//! node publishes at `GET /_matrix/key/v2/server` (itself self-signed), and its event ID is `$`
//! and its reference hash. A node that stored unsigned events, or gave them random IDs, fails.

use std::collections::BTreeMap;

use ruma::canonical_json::{CanonicalJsonObject, CanonicalJsonValue};
use ruma::room_version_rules::RoomVersionRules;
use ruma::serde::Base64;
use ruma::signatures::{PublicKeyMap, Verified, reference_hash, verify_event, verify_json};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::support::keepalive::KeepAlive;
use crate::support::{DOMAIN, NodeProcess, get_at};

/// The node's published key: checked (self-signed, current) and turned into ruma's key map.
fn published_keys(body: &str) -> PublicKeyMap {
    let object: CanonicalJsonObject = serde_json::from_str(body).expect("the key is JSON");
    let doc: Value = serde_json::from_str(body).unwrap();
    assert_eq!(doc["server_name"], DOMAIN, "{doc}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    assert!(
        u128::from(doc["valid_until_ts"].as_u64().expect("valid_until_ts")) > now,
        "{doc}"
    );
    let mut keys = BTreeMap::new();
    for (key_id, key) in doc["verify_keys"].as_object().expect("verify_keys") {
        assert!(key_id.starts_with("ed25519:"), "{key_id}");
        let public = key["key"].as_str().expect("key");
        keys.insert(
            key_id.clone(),
            Base64::parse(public).expect("unpadded base64"),
        );
    }
    assert_eq!(keys.len(), 1, "{doc}");
    let map: PublicKeyMap = [(DOMAIN.to_owned(), keys)].into();
    verify_json(&map, &object).expect("the key document is signed by the key itself");
    map
}

/// A room with events of every kind the node makes: create, members (join, invite, join),
/// power levels, join rules, history visibility, name, topic, messages, a custom state event and
/// a redaction.
async fn busy_room(http: &mut KeepAlive) -> String {
    let (alice, _) = http.register("alice").await;
    let (bob, _) = http.register("bob").await;
    let room = http
        .create_room(
            &alice,
            &json!({"preset": "private_chat", "name": "signed", "topic": "t",
                    "invite": [format!("@bob:{DOMAIN}")]}),
        )
        .await;
    let (status, body) = http
        .post(&format!("/rooms/{room}/join"), Some(&bob), &json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    for (i, token) in [&alice, &bob, &alice].into_iter().enumerate() {
        let (status, body) = http
            .send_text(token, &room, &format!("t{i}"), &format!("message {i}"))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = http
        .put(
            &format!("/rooms/{room}/state/org.example.custom/key"),
            &alice,
            &json!({"n": 1}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, sent) = http.send_text(&bob, &room, "to-redact", "oops").await;
    assert_eq!(status, 200, "{sent}");
    let target = sent["event_id"].as_str().unwrap();
    let (status, body) = http
        .put(
            &format!("/rooms/{room}/redact/{target}/r1"),
            &bob,
            &json!({"reason": "typo"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    room
}

#[tokio::test]
async fn every_stored_event_is_hashed_signed_and_named_by_its_reference_hash() {
    let dir = TempDir::new().unwrap();
    let mut node = NodeProcess::spawn(dir.path(), &[]).await;
    let mut http = KeepAlive::connect(node.addr()).await;
    let room = busy_room(&mut http).await;
    let (status, key) = get_at(node.addr(), "/_matrix/key/v2/server").await;
    assert_eq!(status, 200, "{key}");
    let keys = published_keys(&key);
    drop(http);
    node.kill().await;

    // The raw PDUs, as stored (the client API strips hashes and signatures).
    let store = rethink_node::store::sqlite::SqliteStore::open(dir.path())
        .await
        .unwrap();
    let rooms = rethink_node::store::rooms::RoomStore::new(store.pool().clone());
    let events = rooms.events(&room, 0, i64::MAX, 1000, false).await.unwrap();
    let rules = RoomVersionRules::V11;
    let mut kinds = std::collections::BTreeSet::new();
    let mut redacted = 0;
    for event in &events {
        let id = event.event_id.as_str();
        let (_, _, json) = rooms.signed_event(id).await.unwrap().unwrap();
        let object: CanonicalJsonObject = serde_json::from_str(&json).unwrap();
        let CanonicalJsonValue::String(kind) = &object["type"] else {
            panic!("{json}");
        };
        kinds.insert(kind.clone());
        let verified = verify_event(&keys, &object, &rules)
            .unwrap_or_else(|e| panic!("{id} ({kind}) does not verify: {e}\n{json}"));
        if object.get("unsigned").is_some() || verified == Verified::Signatures {
            // Redacted in place: its content no longer matches the hash, its signature (over
            // the redacted form) still verifies.
            redacted += 1;
        } else {
            assert_eq!(verified, Verified::All, "{id} ({kind})");
        }
        let hash = reference_hash(&object, &rules).unwrap();
        assert_eq!(
            id,
            format!("${hash}"),
            "{kind}: the event ID is its reference hash"
        );
    }
    assert_eq!(
        redacted, 1,
        "only the redacted message lost its content hash"
    );
    for kind in [
        "m.room.create",
        "m.room.member",
        "m.room.power_levels",
        "m.room.join_rules",
        "m.room.history_visibility",
        "m.room.name",
        "m.room.topic",
        "m.room.message",
        "org.example.custom",
        "m.room.redaction",
    ] {
        assert!(kinds.contains(kind), "no {kind} event among {kinds:?}");
    }
}
