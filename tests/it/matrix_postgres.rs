//! The Matrix side of a node on PostgreSQL (`store.url` pointing at a fresh database of the test
//! server, `PG_TEST_URL`): a representative run of the Client-Server API with matrix-sdk and raw
//! HTTP (register, login, whoami, create a room, invite, join, send, the same transaction id
//! twice, `/sync`, `/messages`, a restart), the accounts, tokens and server key being rows of
//! that database;
//! and a database outage under the node: Matrix requests that need the database are answered
//! 503 `M_UNKNOWN` while it lasts, and succeed again by themselves once it is back.
//!
//! Rooms, their events and the Matrix stream are rows of that database too: a node started on a
//! fresh `data_dir` with the same `store.url` has the rooms and their history, and its stream
//! continues after the positions of the first.
//!
//! What is on PostgreSQL today: accounts, devices, access tokens, profiles, filters, the server
//! key, rooms, events, memberships, aliases, room transactions, the stream head and the
//! application services' queues (with the bus's store); the other Matrix stores (the user data)
//! are still SQLite in `data_dir` (README "Durability").

use matrix_sdk::ruma::api::client::account::register::v3::Request as RegistrationRequest;
use matrix_sdk::ruma::api::client::uiaa;
use rethink_node::config::StoreBackend;
use serde_json::json;
use sqlx::Connection;
use sqlx::postgres::PgConnection;

use crate::store_postgres::fresh_database;
use crate::support::TestNode;
use crate::support::matrix::{
    V3, anon_post, assert_error, create_room, invite, join, login, messages, ok, password_login,
    put, register_session, sdk_client, send_path, sync, text, user_id,
};
use crate::support::relay::Relay;

/// A node whose `store.url` is `url`.
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

#[tokio::test]
async fn matrix_on_postgres_registers_chats_syncs_and_keeps_accounts_across_a_restart() {
    let url = fresh_database().await;
    let node = node_on(&url).await;

    // matrix-sdk registers through user-interactive auth and logs in.
    let client = sdk_client(&node).await;
    let mut request = RegistrationRequest::new();
    request.username = Some("alice".to_owned());
    request.password = Some("pw-alice".to_owned());
    let err = client
        .matrix_auth()
        .register(request.clone())
        .await
        .expect_err("the first request asks for user-interactive auth");
    let mut dummy = uiaa::Dummy::new();
    dummy.session = err
        .as_uiaa_response()
        .expect("a UIAA answer")
        .session
        .clone();
    request.auth = Some(uiaa::AuthData::Dummy(dummy));
    client
        .matrix_auth()
        .register(request)
        .await
        .expect("registration");
    let sdk = sdk_client(&node).await;
    sdk.matrix_auth()
        .login_username("alice", "pw-alice")
        .send()
        .await
        .expect("password login");
    let me = sdk.whoami().await.expect("whoami");
    assert_eq!(me.user_id.as_str(), user_id("alice"));
    // The accounts and tokens are rows of the PostgreSQL database.
    assert_eq!(rows(&url, "accounts").await, 1);
    assert_eq!(rows(&url, "access_tokens").await, 2);

    // A room, an invitation, a join, messages; a transaction id used twice is one event.
    let alice = login(&node, "alice").await;
    let bob = register_session(&node, "bob").await;
    let room = create_room(&node, &alice.token, &json!({"name": "Tea"})).await;
    invite(&node, &alice.token, &room, &user_id("bob")).await;
    join(&node, &bob.token, &room).await;
    let before = sync(&node, &bob.token, None).await;
    let since = before["next_batch"]
        .as_str()
        .expect("next_batch")
        .to_owned();
    let first = ok(put(&node, &send_path(&room, "t1"), &alice.token, &text("one")).await);
    let again = ok(put(&node, &send_path(&room, "t1"), &alice.token, &text("one")).await);
    assert_eq!(first["event_id"], again["event_id"]);
    let second = ok(put(&node, &send_path(&room, "t2"), &alice.token, &text("two")).await);
    let synced = sync(&node, &bob.token, Some(&since)).await;
    let timeline = synced["rooms"]["join"][&room]["timeline"]["events"]
        .as_array()
        .expect("bob's sync has the room's timeline")
        .clone();
    let ids: Vec<&str> = timeline
        .iter()
        .filter_map(|e| e["event_id"].as_str())
        .collect();
    assert_eq!(
        ids,
        [
            first["event_id"].as_str().unwrap(),
            second["event_id"].as_str().unwrap()
        ]
    );
    let page = messages(&node, &bob.token, &room, "dir=b&limit=2").await;
    let newest: Vec<&str> = page["chunk"]
        .as_array()
        .expect("chunk")
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert_eq!(newest, ["two", "one"]);

    // After a restart the accounts, tokens and the server key are still there.
    let key_path = "/_matrix/key/v2/server";
    let key = ok(crate::support::matrix::anon_get(&node, key_path).await);
    let node = node.restart().await;
    assert_eq!(
        ok(crate::support::matrix::anon_get(&node, key_path).await)["verify_keys"],
        key["verify_keys"]
    );
    assert_eq!(rows(&url, "server_keys").await, 1);
    let who =
        ok(crate::support::matrix::get(&node, &format!("{V3}/account/whoami"), &bob.token).await);
    assert_eq!(who["user_id"], user_id("bob"));
    login(&node, "alice").await;
    assert_eq!(rows(&url, "accounts").await, 2);
}

/// The stream head, as stored.
async fn stream_head(url: &str) -> i64 {
    let mut conn = PgConnection::connect(url).await.unwrap();
    let n = sqlx::query_scalar("SELECT pos FROM stream_head WHERE id = 0")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    n
}

/// The bodies of the `m.room.message` events of a `/messages` page.
fn bodies(page: &serde_json::Value) -> Vec<String> {
    page["chunk"]
        .as_array()
        .expect("chunk")
        .iter()
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn matrix_on_postgres_rooms_and_history_need_no_data_dir() {
    let url = fresh_database().await;
    let node = node_on(&url).await;
    let alice = register_session(&node, "alice").await;
    let bob = register_session(&node, "bob").await;
    let room = create_room(&node, &alice.token, &json!({"name": "Tea"})).await;
    invite(&node, &alice.token, &room, &user_id("bob")).await;
    join(&node, &bob.token, &room).await;
    let alias = ok(put(
        &node,
        &format!("{V3}/directory/room/%23tea:example.com"),
        &alice.token,
        &json!({"room_id": room}),
    )
    .await);
    assert_eq!(alias, json!({}));
    ok(put(&node, &send_path(&room, "t1"), &alice.token, &text("one")).await);
    ok(put(&node, &send_path(&room, "t2"), &bob.token, &text("two")).await);
    assert!(
        rows(&url, "events").await >= 6,
        "the room's events are rows of PostgreSQL"
    );
    assert_eq!(rows(&url, "rooms").await, 1);
    assert_eq!(rows(&url, "room_txns").await, 2);
    let head = stream_head(&url).await;
    drop(node);

    // Another node, with an empty data directory: the room, its members, its alias and its
    // history come from the database; its stream goes on after the first node's positions.
    let node = node_on(&url).await;
    // The first node's sessions (devices and tokens are rows of the database too).
    let page = messages(&node, &alice.token, &room, "dir=b&limit=10").await;
    assert_eq!(bodies(&page), ["two", "one"]);
    let found = ok(crate::support::matrix::get(
        &node,
        &format!("{V3}/directory/room/%23tea:example.com"),
        &alice.token,
    )
    .await);
    assert_eq!(found["room_id"], room.as_str());
    let members = ok(crate::support::matrix::get(
        &node,
        &crate::support::matrix::room_path(&room, "joined_members"),
        &alice.token,
    )
    .await);
    let mut joined: Vec<&str> = members["joined"]
        .as_object()
        .expect("joined")
        .keys()
        .map(String::as_str)
        .collect();
    joined.sort_unstable();
    assert_eq!(joined, [user_id("alice"), user_id("bob")]);
    // The same transaction ID within its retention is the first event again, from the
    // database's transactions.
    let again = ok(put(&node, &send_path(&room, "t1"), &alice.token, &text("one")).await);
    assert_eq!(again["event_id"], page["chunk"][1]["event_id"]);
    ok(put(&node, &send_path(&room, "t3"), &bob.token, &text("three")).await);
    assert!(
        stream_head(&url).await > head,
        "positions continue after the first node's"
    );
    let page = messages(&node, &alice.token, &room, "dir=b&limit=3").await;
    assert_eq!(bodies(&page), ["three", "two", "one"]);
}

#[tokio::test]
async fn a_database_outage_answers_503_m_unknown_and_the_node_recovers_by_itself() {
    let url = fresh_database().await;
    let mut options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    let target = tokio::net::lookup_host(format!("{}:{}", options.get_host(), options.get_port()))
        .await
        .unwrap()
        .next()
        .unwrap();
    let relay = Relay::start(target).await;
    options = options.host("127.0.0.1").port(relay.addr().port());
    let node =
        TestNode::spawn_with(|c| c.store.backend = StoreBackend::Postgres(Box::new(options))).await;
    register_session(&node, "alice").await;
    // A device logged in but not used yet: its token is not in the node's cache.
    let unused = login(&node, "alice").await;
    let login_path = format!("{V3}/login");
    let whoami = format!("{V3}/account/whoami");

    relay.set_down(true);
    let refused = anon_post(&node, &login_path, &password_login("alice", "pw-alice")).await;
    assert_error(&refused, 503, "M_UNKNOWN");
    // The answer does not show the database's error.
    assert_eq!(
        refused.1["error"],
        "the database is unavailable; try again later"
    );
    assert_error(
        &unused.get(&node, "/account/whoami").await,
        503,
        "M_UNKNOWN",
    );

    relay.set_down(false);
    ok(anon_post(&node, &login_path, &password_login("alice", "pw-alice")).await);
    let me = ok(crate::support::matrix::get(&node, &whoami, &unused.token).await);
    assert_eq!(me["user_id"], user_id("alice"));
}
