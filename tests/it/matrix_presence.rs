//! Presence: set and read through `/presence/{userId}/status`, set by `/sync`'s
//! `set_presence`, and reported by `/sync` to the users who share a room (and only to them),
//! waking their long-polls; it goes idle and offline by itself (short timeouts configured here).

use std::time::Duration;

use rethink_node::config::PresenceConfig;
use serde_json::{Value, json};

use crate::support::matrix::woken;
use crate::support::matrix::{
    V3, assert_error, create_room, get, join, next_batch, ok, put, register, sync, user_id,
};
use crate::support::{TestNode, wait_for_metric};

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
    // On a manual clock the long-poll's timeout never comes: only the change can end it.
    let node = TestNode::spawn_with_clock(|_| {}).await;
    let alice = register(&node, "alice").await;
    let bob = register(&node, "bob").await;
    let room = create_room(&node, &alice, &json!({"preset": "public_chat"})).await;
    join(&node, &bob, &room).await;
    let first = sync(&node, &bob, None).await;
    let since = next_batch(&first);
    let path = format!("{V3}/sync?timeout=10000&since={since}");
    let long_poll = woken(get(&node, &path, &bob));
    let change = async {
        // Once bob's long-poll waits, alice changes her presence.
        wait_for_metric(&node, "rethink_matrix_syncs_waiting", 1.0).await;
        ok(put(
            &node,
            &presence_path("alice"),
            &alice,
            &json!({"presence": "unavailable"}),
        )
        .await);
    };
    let ((status, answer), ()) = tokio::join!(long_poll, change);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        presence_of(&answer, "alice").unwrap()["presence"],
        "unavailable"
    );
}

/// `name`'s presence state, read by `token`.
async fn state_of(node: &TestNode, token: &str, name: &str) -> String {
    let read = ok(get(node, &presence_path(name), token).await);
    read["presence"].as_str().expect("presence").to_owned()
}

/// A node on a manual clock whose presence goes idle after `idle` and offline after `offline`.
/// The timeouts are applied by a sweep every `SWEEP` (a quarter of the shorter, at most 5 s).
async fn node_with_presence_timeouts(idle: Duration, offline: Duration) -> TestNode {
    TestNode::spawn_with_clock(|c| {
        c.matrix.presence = PresenceConfig {
            idle_timeout: idle,
            offline_timeout: offline,
        };
        assert_eq!(c.matrix.presence.sweep_interval(), SWEEP);
    })
    .await
}

const SWEEP: Duration = Duration::from_secs(5);
const MS: Duration = Duration::from_millis(1);

/// Alice's presence change in a `/sync` of bob from `since` that returns at once; the next
/// `since`.
async fn alices_change(node: &TestNode, bob: &str, since: &str) -> (Option<Value>, String) {
    let answer = ok(get(node, &format!("{V3}/sync?timeout=0&since={since}"), bob).await);
    (presence_of(&answer, "alice"), next_batch(&answer))
}

#[tokio::test]
async fn a_user_who_stops_syncing_goes_idle_then_offline_for_room_members() {
    const IDLE: Duration = Duration::from_secs(60);
    const OFFLINE: Duration = Duration::from_secs(120);
    let node = node_with_presence_timeouts(IDLE, OFFLINE).await;
    let alice = register(&node, "alice").await;
    let bob = register(&node, "bob").await;
    let room = create_room(&node, &alice, &json!({"preset": "public_chat"})).await;
    join(&node, &bob, &room).await;
    let since = next_batch(&sync(&node, &bob, None).await);

    // Alice syncs once (set_presence defaults to online), then stops; time stands still.
    sync(&node, &alice, None).await;
    let (online, since) = alices_change(&node, &bob, &since).await;
    let online = online.expect("bob sees alice online");
    assert_eq!(
        (
            online["presence"].clone(),
            online["currently_active"].clone()
        ),
        (json!("online"), json!(true)),
        "{online}"
    );
    let ago = |c: &Value| c["last_active_ago"].as_u64().expect("last_active_ago");
    assert_eq!(ago(&online), 0, "{online}");

    // A sweep just before the idle timeout changes nothing; the next one, after it, makes
    // alice idle (still online, no longer currently active), and bob sees it.
    node.advance(IDLE - MS).await;
    let (change, since) = alices_change(&node, &bob, &since).await;
    assert_eq!(change, None, "not idle yet");
    node.advance(SWEEP).await;
    let (idle, since) = alices_change(&node, &bob, &since).await;
    let idle = idle.expect("alice went idle");
    assert_eq!(
        (idle["presence"].clone(), idle["currently_active"].clone()),
        (json!("online"), json!(false)),
        "{idle}"
    );
    let idle_at = IDLE - MS + SWEEP;
    assert_eq!(ago(&idle), idle_at.as_millis() as u64, "{idle}");

    // The same for the offline timeout.
    node.advance(OFFLINE - MS - idle_at).await;
    let (change, since) = alices_change(&node, &bob, &since).await;
    assert_eq!(change, None, "not offline yet");
    node.advance(SWEEP).await;
    let (offline, _) = alices_change(&node, &bob, &since).await;
    let offline = offline.expect("alice went offline");
    assert_eq!(
        (
            offline["presence"].clone(),
            offline["currently_active"].clone()
        ),
        (json!("offline"), json!(false)),
        "{offline}"
    );
    assert_eq!(ago(&offline), (OFFLINE - MS + SWEEP).as_millis() as u64);
    let read = ok(get(&node, &presence_path("alice"), &bob).await);
    assert_eq!(
        (read["presence"].clone(), read["currently_active"].clone()),
        (json!("offline"), json!(false))
    );
}

#[tokio::test]
async fn a_long_poll_in_progress_keeps_its_user_online() {
    const OFFLINE: Duration = Duration::from_secs(20);
    let node = node_with_presence_timeouts(Duration::from_secs(3600), OFFLINE).await;
    let alice = register(&node, "alice").await;
    let bob = register(&node, "bob").await;
    let since = next_batch(&sync(&node, &alice, None).await);

    // A long-poll of 60 s (of the node's clock) for alice; while it waits, the clock passes
    // the offline timeout and a sweep runs: alice stays online.
    let path = format!("{V3}/sync?timeout=60000&since={since}");
    let long_poll = woken(get(&node, &path, &alice));
    let during = async {
        wait_for_metric(&node, "rethink_matrix_syncs_waiting", 1.0).await;
        node.advance(OFFLINE + SWEEP).await;
        let during = state_of(&node, &bob, "alice").await;
        // Then something for alice ends her long-poll.
        ok(put(
            &node,
            &format!(
                "{V3}/user/{}/account_data/org.example.wake",
                user_id("alice")
            ),
            &alice,
            &json!({"n": 1}),
        )
        .await);
        during
    };
    let ((status, answer), during) = tokio::join!(long_poll, during);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        during, "online",
        "still online in the middle of a long-poll"
    );

    // After it ends, the offline timeout runs from its end.
    node.advance(OFFLINE - MS).await;
    assert_eq!(state_of(&node, &bob, "alice").await, "online");
    node.advance(SWEEP).await;
    assert_eq!(state_of(&node, &bob, "alice").await, "offline");
}
