//! The user data of a node on PostgreSQL (`store.url` pointing at a fresh database of the test
//! server, `PG_TEST_URL`): account data, receipts, presence, device keys, one-time and fallback
//! keys, to-device messages and device-list changes are rows of that database, so a node started
//! on a fresh `data_dir` with the same `store.url` answers them: `GET` of account data and
//! presence, `keys/query` and `keys/claim`, and a `/sync` with the waiting to-device message,
//! room account data, the room's receipt and the device's key counts.

use rethink_node::config::StoreBackend;
use serde_json::{Value, json};
use sqlx::Connection;
use sqlx::postgres::PgConnection;

use crate::store_postgres::fresh_database;
use crate::support::TestNode;
use crate::support::matrix::{Session, create_room, join, ok, register_session, sync};

/// A node whose `store.url` is `url` (and a data directory of its own).
async fn node_on(url: &str) -> TestNode {
    let options = url.parse().expect("a PostgreSQL URL");
    TestNode::spawn_with(|c| c.store.backend = StoreBackend::Postgres(Box::new(options))).await
}

/// `SELECT COUNT(*)` of `table` in the database at `url`.
async fn rows(url: &str, table: &str) -> i64 {
    let mut conn = PgConnection::connect(url).await.unwrap();
    let n = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    n
}

/// Device keys of `s`'s device, with `key` as both its keys (not checked by the server).
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
async fn matrix_on_postgres_user_data_needs_no_data_dir() {
    let url = fresh_database().await;
    let node = node_on(&url).await;
    let alice = register_session(&node, "alice").await;
    let bob = register_session(&node, "bob").await;
    let room = create_room(&node, &alice.token, &json!({"preset": "public_chat"})).await;
    join(&node, &bob.token, &room).await;

    let global = format!("/user/{}/account_data/org.example.settings", alice.user_id);
    ok(alice.put(&node, &global, &json!({"theme": "dark"})).await);
    let in_room = format!(
        "/user/{}/rooms/{room}/account_data/org.example.pinned",
        alice.user_id
    );
    ok(alice.put(&node, &in_room, &json!({"pinned": true})).await);
    let receipt = format!("/rooms/{room}/receipt/m.read/$seen");
    ok(bob.post(&node, &receipt, &json!({})).await);
    let presence = format!("/presence/{}/status", alice.user_id);
    ok(alice
        .put(
            &node,
            &presence,
            &json!({"presence": "unavailable", "status_msg": "lunch"}),
        )
        .await);
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
    let messages = json!({"messages": {alice.user_id.clone(): {"*": {"hello": "alice"}}}});
    ok(bob
        .put(&node, "/sendToDevice/org.example.ping/txn1", &messages)
        .await);
    for table in [
        "account_data",
        "receipts",
        "presence",
        "device_keys",
        "one_time_keys",
        "device_list_changes",
        "to_device",
        "to_device_txns",
    ] {
        assert!(
            rows(&url, table).await > 0,
            "{table} has rows in PostgreSQL"
        );
    }
    drop(node);

    // Another node, with an empty data directory.
    let node = node_on(&url).await;
    assert_eq!(
        ok(alice.get(&node, &global).await),
        json!({"theme": "dark"})
    );
    let seen = ok(bob.get(&node, &presence).await);
    assert_eq!(
        (&seen["presence"], &seen["status_msg"]),
        (&json!("unavailable"), &json!("lunch")),
        "{seen}"
    );
    let query = json!({"device_keys": {alice.user_id.clone(): []}});
    let queried = ok(bob.post(&node, "/keys/query", &query).await);
    assert_eq!(
        queried["device_keys"][&alice.user_id][&alice.device_id]["keys"]
            [format!("curve25519:{}", alice.device_id)],
        "aliceKey",
        "{queried}"
    );
    let claim = json!({"one_time_keys": {alice.user_id.clone(): {
        alice.device_id.clone(): "signed_curve25519"
    }}});
    let claimed = ok(bob.post(&node, "/keys/claim", &claim).await);
    let keys = &claimed["one_time_keys"][&alice.user_id][&alice.device_id];
    assert!(keys["signed_curve25519:AAAA"].is_object(), "{claimed}");

    let body = sync(&node, &alice.token, None).await;
    let to_device = body["to_device"]["events"].as_array().expect("to_device");
    assert_eq!(to_device.len(), 1, "{body}");
    assert_eq!(to_device[0]["content"], json!({"hello": "alice"}));
    assert_eq!(
        body["device_one_time_keys_count"]["signed_curve25519"], 1,
        "{body}"
    );
    assert_eq!(
        body["device_unused_fallback_key_types"],
        json!(["signed_curve25519"])
    );
    let joined = &body["rooms"]["join"][&room];
    let room_data = joined["account_data"]["events"]
        .as_array()
        .expect("room account data");
    assert!(
        room_data
            .iter()
            .any(|e| e["type"] == "org.example.pinned" && e["content"] == json!({"pinned": true})),
        "{body}"
    );
    let ephemeral = joined["ephemeral"]["events"]
        .as_array()
        .expect("ephemeral events");
    assert!(
        ephemeral.iter().any(|e| e["type"] == "m.receipt"
            && e["content"]["$seen"]["m.read"][&bob.user_id].is_object()),
        "{body}"
    );
}
