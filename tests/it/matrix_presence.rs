//! Presence: set and read through `/presence/{userId}/status`, set by `/sync`'s
//! `set_presence`, and reported by `/sync` to the users who share a room (and only to them),
//! waking their long-polls; it goes idle and offline by itself (short timeouts configured here).

use std::time::{Duration, Instant};

use rethink_node::config::PresenceConfig;
use serde_json::{Value, json};

use crate::support::TestNode;
use crate::support::matrix::{
    V3, assert_error, create_room, get, join, next_batch, ok, put, register, sync, user_id,
};

fn presence_path(name: &str) -> String {
    format!("{V3}/presence/{}/status", user_id(name))
}

/// The `m.presence` events of a sync answer, by sender.
fn presence_of(sync: &Value, name: &str) -> Option<Value> {
    sync["presence"]["events"]
        .as_array()?
        .iter()
        .find(|e| e["sender"] == user_id(name))
        .map(|e| e["content"].clone())
}

#[tokio::test]
async fn presence_is_set_read_and_reported_to_room_members_only() {
    let node = TestNode::spawn().await;
    let alice = register(&node, "alice").await;
    let bob = register(&node, "bob").await;
    let carol = register(&node, "carol").await;
    let room = create_room(&node, &alice, &json!({"preset": "public_chat"})).await;
    join(&node, &bob, &room).await;

    // Nobody set anything yet: 404. Another user's presence cannot be set.
    assert_error(
        &get(&node, &presence_path("alice"), &bob).await,
        404,
        "M_NOT_FOUND",
    );
    let other = put(
        &node,
        &presence_path("alice"),
        &bob,
        &json!({"presence": "online"}),
    )
    .await;
    assert_error(&other, 403, "M_FORBIDDEN");

    // Bob's first sync marks him online (the default set_presence), and reports it to him.
    let bob_first = sync(&node, &bob, None).await;
    assert_eq!(
        presence_of(&bob_first, "bob").unwrap()["presence"],
        "online"
    );
    let carol_first = sync(&node, &carol, None).await;

    let set = json!({"presence": "unavailable", "status_msg": "at lunch"});
    ok(put(&node, &presence_path("alice"), &alice, &set).await);
    let read = ok(get(&node, &presence_path("alice"), &carol).await);
    assert_eq!(read["presence"], "unavailable");
    assert_eq!(read["status_msg"], "at lunch");
    assert_eq!(read["currently_active"], false);

    let bob_next = sync(&node, &bob, Some(&next_batch(&bob_first))).await;
    let seen = presence_of(&bob_next, "alice").expect("alice's presence reaches bob");
    assert_eq!(seen["presence"], "unavailable");
    assert_eq!(seen["status_msg"], "at lunch");
    assert!(
        presence_of(&bob_next, "bob").is_none(),
        "bob's own did not change"
    );
    let carol_next = sync(&node, &carol, Some(&next_batch(&carol_first))).await;
    assert!(
        presence_of(&carol_next, "alice").is_none(),
        "carol shares no room with alice"
    );

    // set_presence=offline on a sync stores offline, keeping the status message.
    ok(get(
        &node,
        &format!("{V3}/sync?timeout=0&set_presence=offline"),
        &alice,
    )
    .await);
    let read = ok(get(&node, &presence_path("alice"), &bob).await);
    assert_eq!(
        (read["presence"].clone(), read["status_msg"].clone()),
        (json!("offline"), json!("at lunch"))
    );
}

#[tokio::test]
async fn a_presence_change_wakes_a_long_poll() {
    let node = TestNode::spawn().await;
    let alice = register(&node, "alice").await;
    let bob = register(&node, "bob").await;
    let room = create_room(&node, &alice, &json!({"preset": "public_chat"})).await;
    join(&node, &bob, &room).await;
    let first = sync(&node, &bob, None).await;
    let since = next_batch(&first);
    let long_poll = async {
        let started = Instant::now();
        let answer = get(
            &node,
            &format!("{V3}/sync?timeout=10000&since={since}"),
            &bob,
        )
        .await;
        (answer, started.elapsed())
    };
    let change = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        ok(put(
            &node,
            &presence_path("alice"),
            &alice,
            &json!({"presence": "unavailable"}),
        )
        .await);
    };
    let (((status, answer), waited), ()) = tokio::join!(long_poll, change);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        presence_of(&answer, "alice").unwrap()["presence"],
        "unavailable"
    );
    assert!(
        waited < Duration::from_secs(5),
        "woken by the change, not the timeout: {waited:?}"
    );
}

/// `name`'s presence state, read by `token`.
async fn state_of(node: &TestNode, token: &str, name: &str) -> String {
    let read = ok(get(node, &presence_path(name), token).await);
    read["presence"].as_str().expect("presence").to_owned()
}

/// A node whose presence goes idle after `idle_ms` and offline after `offline_ms`.
async fn node_with_presence_timeouts(idle_ms: u64, offline_ms: u64) -> TestNode {
    TestNode::spawn_with(|c| {
        c.matrix.presence = PresenceConfig {
            idle_timeout: Duration::from_millis(idle_ms),
            offline_timeout: Duration::from_millis(offline_ms),
        }
    })
    .await
}

#[tokio::test]
async fn a_user_who_stops_syncing_goes_idle_then_offline_for_room_members() {
    const IDLE_MS: u64 = 800;
    const OFFLINE_MS: u64 = 2500;
    let node = node_with_presence_timeouts(IDLE_MS, OFFLINE_MS).await;
    let alice = register(&node, "alice").await;
    let bob = register(&node, "bob").await;
    let room = create_room(&node, &alice, &json!({"preset": "public_chat"})).await;
    join(&node, &bob, &room).await;
    let mut since = next_batch(&sync(&node, &bob, None).await);

    // Alice syncs once (set_presence defaults to online), then stops.
    sync(&node, &alice, None).await;
    let alice_stopped = Instant::now();
    let seen = sync(&node, &bob, Some(&since)).await;
    let online = presence_of(&seen, "alice").expect("bob sees alice online");
    assert_eq!(
        (
            online["presence"].clone(),
            online["currently_active"].clone()
        ),
        (json!("online"), json!(true)),
        "{online}"
    );
    since = next_batch(&seen);

    // Bob keeps long-polling: alice's presence changes reach him, idle first, then offline.
    let mut changes = Vec::new();
    let offline_at = loop {
        assert!(
            alice_stopped.elapsed() < Duration::from_secs(15),
            "alice never went offline: {changes:?}"
        );
        let answer = ok(get(
            &node,
            &format!("{V3}/sync?timeout=3000&since={since}"),
            &bob,
        )
        .await);
        since = next_batch(&answer);
        if let Some(content) = presence_of(&answer, "alice") {
            changes.push(content.clone());
            if content["presence"] == "offline" {
                break alice_stopped.elapsed();
            }
        }
    };
    assert!(
        offline_at >= Duration::from_millis(OFFLINE_MS - 100),
        "offline only after the timeout: {offline_at:?}"
    );
    let [idle, offline] = changes.as_slice() else {
        panic!("expected an idle change, then offline: {changes:?}");
    };
    assert_eq!(
        (idle["presence"].clone(), idle["currently_active"].clone()),
        (json!("online"), json!(false)),
        "{idle}"
    );
    assert_eq!(offline["currently_active"], false);
    let ago = |c: &Value| c["last_active_ago"].as_u64().expect("last_active_ago");
    assert!(ago(idle) >= IDLE_MS - 100, "{idle}");
    assert!(ago(offline) >= OFFLINE_MS - 100, "{offline}");
    assert!(
        ago(offline) > ago(idle),
        "last_active_ago grows: {changes:?}"
    );
    let read = ok(get(&node, &presence_path("alice"), &bob).await);
    assert_eq!(
        (read["presence"].clone(), read["currently_active"].clone()),
        (json!("offline"), json!(false))
    );
}

#[tokio::test]
async fn a_long_poll_in_progress_keeps_its_user_online() {
    const OFFLINE_MS: u64 = 1000;
    let node = node_with_presence_timeouts(60_000, OFFLINE_MS).await;
    let alice = register(&node, "alice").await;
    let bob = register(&node, "bob").await;
    let since = next_batch(&sync(&node, &alice, None).await);

    // A 2.5 s long-poll: nothing happens for alice, so it runs to its end.
    let started = Instant::now();
    let long_poll = async {
        let answer = get(
            &node,
            &format!("{V3}/sync?timeout=2500&since={since}"),
            &alice,
        )
        .await;
        (answer, Instant::now())
    };
    let during = async {
        tokio::time::sleep(Duration::from_millis(1800)).await;
        state_of(&node, &bob, "alice").await
    };
    let (((status, _), ended), during) = tokio::join!(long_poll, during);
    assert_eq!(status, 200);
    assert!(
        ended - started >= Duration::from_millis(2400),
        "a full long-poll"
    );
    assert_eq!(
        during, "online",
        "still online in the middle of a long-poll"
    );

    // After it ends, the offline timeout runs from its end.
    let offline_after = loop {
        assert!(
            ended.elapsed() < Duration::from_secs(10),
            "alice never went offline"
        );
        if state_of(&node, &bob, "alice").await == "offline" {
            break ended.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        offline_after >= Duration::from_millis(OFFLINE_MS - 100),
        "offline {offline_after:?} after the long-poll ended"
    );
}
