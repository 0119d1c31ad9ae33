//! Presence: set and read through `/presence/{userId}/status`, set by `/sync`'s
//! `set_presence`, and reported by `/sync` to the users who share a room (and only to them),
//! waking their long-polls.

use std::time::{Duration, Instant};

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
