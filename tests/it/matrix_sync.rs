//! `/sync` reads only what changed (the stream's change marks and the room caches): these tests
//! check that an incremental sync still reports exactly what changed, room by room, and the
//! room summary.

use serde_json::{Value, json};

use crate::support::TestNode;
use crate::support::matrix::{V3, create_room, get, ok, post, register, send_text, user_id};

async fn sync(node: &TestNode, token: &str, since: Option<&str>) -> Value {
    let path = match since {
        Some(since) => format!("{V3}/sync?timeout=0&since={since}"),
        None => format!("{V3}/sync?timeout=0"),
    };
    ok(get(node, &path, token).await)
}

fn next_batch(sync: &Value) -> String {
    sync["next_batch"].as_str().unwrap().to_owned()
}

fn joined_rooms(sync: &Value) -> Vec<String> {
    let mut rooms: Vec<String> = sync["rooms"]["join"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    rooms.sort();
    rooms
}

#[tokio::test]
async fn an_incremental_sync_reports_exactly_the_rooms_that_changed() {
    let node = TestNode::spawn().await;
    let alice = register(&node, "alice").await;
    let bob = register(&node, "bob").await;
    let room_a = create_room(&node, &alice, &json!({"preset": "public_chat"})).await;
    let room_b = create_room(&node, &alice, &json!({"preset": "public_chat"})).await;
    for room in [&room_a, &room_b] {
        ok(post(&node, &format!("{V3}/rooms/{room}/join"), &bob, &json!({})).await);
    }
    let initial = sync(&node, &bob, None).await;
    let mut expected = vec![room_a.clone(), room_b.clone()];
    expected.sort();
    assert_eq!(joined_rooms(&initial), expected);

    // Nothing new: an empty answer that moves nothing.
    let quiet = sync(&node, &bob, Some(&next_batch(&initial))).await;
    assert_eq!(joined_rooms(&quiet), Vec::<String>::new(), "{quiet}");

    // A message in room A only.
    send_text(&node, &alice, &room_a, "a1", "in a").await;
    let after_a = sync(&node, &bob, Some(&next_batch(&quiet))).await;
    assert_eq!(
        joined_rooms(&after_a),
        std::slice::from_ref(&room_a),
        "{after_a}"
    );
    let timeline = &after_a["rooms"]["join"][&room_a]["timeline"]["events"];
    assert_eq!(timeline.as_array().unwrap().len(), 1);
    assert_eq!(timeline[0]["content"]["body"], "in a");
    assert_eq!(
        after_a["rooms"]["join"][&room_a]["unread_notifications"]["notification_count"],
        1
    );

    // A receipt in room B only: room B with its ephemeral receipt, no timeline.
    let event_b = send_text(&node, &alice, &room_b, "b1", "in b").await;
    let after_b = sync(&node, &bob, Some(&next_batch(&after_a))).await;
    assert_eq!(joined_rooms(&after_b), std::slice::from_ref(&room_b));
    ok(post(
        &node,
        &format!("{V3}/rooms/{room_b}/receipt/m.read/{event_b}"),
        &alice,
        &json!({}),
    )
    .await);
    let receipt = sync(&node, &bob, Some(&next_batch(&after_b))).await;
    assert_eq!(
        joined_rooms(&receipt),
        std::slice::from_ref(&room_b),
        "{receipt}"
    );
    let room = &receipt["rooms"]["join"][&room_b];
    assert!(
        room["timeline"]["events"]
            .as_array()
            .is_none_or(Vec::is_empty)
    );
    assert_eq!(room["ephemeral"]["events"][0]["type"], "m.receipt");

    // An old token still gets everything since then.
    let replay = sync(&node, &bob, Some(&next_batch(&quiet))).await;
    assert_eq!(joined_rooms(&replay), expected);
}

#[tokio::test]
async fn the_room_summary_counts_members_and_names_heroes() {
    let node = TestNode::spawn().await;
    let alice = register(&node, "alice").await;
    let bob = register(&node, "bob").await;
    register(&node, "carol").await;
    let room = create_room(
        &node,
        &alice,
        &json!({"invite": [user_id("bob"), user_id("carol")]}),
    )
    .await;
    ok(post(&node, &format!("{V3}/rooms/{room}/join"), &bob, &json!({})).await);
    let initial = sync(&node, &bob, None).await;
    let summary = &initial["rooms"]["join"][&room]["summary"];
    assert_eq!(summary["m.joined_member_count"], 2, "{summary}");
    assert_eq!(summary["m.invited_member_count"], 1, "{summary}");
    assert_eq!(
        summary["m.heroes"],
        json!([user_id("alice"), user_id("carol")])
    );
}
