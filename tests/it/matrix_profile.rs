//! A profile change reaches the user's member events in every joined room, re-sent by a task of
//! the node rather than in the `PUT` (`node/src/matrix/profile.rs`): once each (a room whose
//! member event has the profile already gets none), and after a crash the next start re-sends
//! what was left behind.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::Connection;
use tempfile::TempDir;

use crate::support::matrix::{
    Served, V3, create_room, next_batch, ok, put, register, sync, user_id, whole_history,
};
use crate::support::{NodeProcess, TestNode};

/// How long the member events may take to arrive.
const DEADLINE: Duration = Duration::from_secs(30);

/// Long-polls `/sync` from `since` until each of `rooms` has shown a member event of `user`
/// with `field` = `value`.
async fn until_members_show(
    node: &impl Served,
    token: &str,
    since: &str,
    user: &str,
    rooms: &[String],
    (field, value): (&str, &str),
) {
    let wait = async {
        let mut since = since.to_owned();
        let mut seen = vec![false; rooms.len()];
        while seen.contains(&false) {
            let path = format!("{V3}/sync?timeout=10000&since={since}");
            let body = ok(crate::support::matrix::get(node, &path, token).await);
            for (room, seen) in rooms.iter().zip(seen.iter_mut()) {
                let events = body["rooms"]["join"][room]["timeline"]["events"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                *seen |= events.iter().any(|e| {
                    e["type"] == "m.room.member"
                        && e["state_key"] == user
                        && e["content"][field] == value
                });
            }
            since = next_batch(&body);
        }
    };
    tokio::time::timeout(DEADLINE, wait)
        .await
        .unwrap_or_else(|_| panic!("{field} = {value} did not reach every room of {user}"));
}

/// `user`'s member events in `room`, oldest first.
async fn member_events(node: &impl Served, token: &str, room: &str, user: &str) -> Vec<Value> {
    whole_history(node, token, room)
        .await
        .into_iter()
        .filter(|e| e["type"] == "m.room.member" && e["state_key"] == user)
        .collect()
}

#[tokio::test]
async fn a_profile_change_reaches_every_joined_room_once() {
    let node = TestNode::spawn().await;
    let alice = register(&node, "alice").await;
    let me = user_id("alice");
    let rooms: Vec<String> = {
        let mut rooms = Vec::new();
        for _ in 0..3 {
            rooms.push(create_room(&node, &alice, &json!({})).await);
        }
        rooms
    };
    let since = next_batch(&sync(&node, &alice, None).await);
    let name = format!("{V3}/profile/{me}/displayname");
    ok(put(&node, &name, &alice, &json!({"displayname": "Alice A."})).await);
    until_members_show(
        &node,
        &alice,
        &since,
        &me,
        &rooms,
        ("displayname", "Alice A."),
    )
    .await;

    // The same name again writes no member event; the avatar then writes one per room.
    let since = next_batch(&sync(&node, &alice, None).await);
    ok(put(&node, &name, &alice, &json!({"displayname": "Alice A."})).await);
    let avatar = format!("{V3}/profile/{me}/avatar_url");
    let url = "mxc://example.com/alice";
    ok(put(&node, &avatar, &alice, &json!({"avatar_url": url})).await);
    until_members_show(&node, &alice, &since, &me, &rooms, ("avatar_url", url)).await;
    for room in &rooms {
        let members = member_events(&node, &alice, room, &me).await;
        let contents: Vec<&Value> = members.iter().map(|e| &e["content"]).collect();
        assert_eq!(
            contents,
            [
                &json!({"membership": "join"}),
                &json!({"membership": "join", "displayname": "Alice A."}),
                &json!({"membership": "join", "displayname": "Alice A.", "avatar_url": url}),
            ],
            "{room}"
        );
    }
}

/// A change whose member events a crash left behind (its version ahead of the one re-sent, as
/// the database holds it when the node dies between the `PUT` and the end of the re-send) is
/// re-sent by the next start.
#[tokio::test]
async fn a_change_the_node_died_before_re_sending_is_re_sent_at_the_next_start() {
    let dir = TempDir::new().unwrap();
    let mut node = NodeProcess::spawn(dir.path(), &[]).await;
    let alice = register(&node, "alice").await;
    let me = user_id("alice");
    let room = create_room(&node, &alice, &json!({})).await;
    let rooms = [room.clone()];
    let since = next_batch(&sync(&node, &alice, None).await);
    let name = format!("{V3}/profile/{me}/displayname");
    ok(put(&node, &name, &alice, &json!({"displayname": "First"})).await);
    until_members_show(&node, &alice, &since, &me, &rooms, ("displayname", "First")).await;
    node.kill().await;

    // What a PUT commits before the node re-sends it: the profile and its version.
    let db = dir.path().join("rethink.db");
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let changed = sqlx::query(
        "UPDATE profiles SET displayname = 'Later', members_version = members_version + 1 \
         WHERE user_id = ?",
    )
    .bind(&me)
    .execute(&mut conn)
    .await
    .unwrap();
    assert_eq!(changed.rows_affected(), 1);
    conn.close().await.unwrap();

    let node = node.restart().await;
    until_members_show(&node, &alice, &since, &me, &rooms, ("displayname", "Later")).await;
    let names: Vec<Value> = member_events(&node, &alice, &room, &me)
        .await
        .iter()
        .map(|e| e["content"]["displayname"].clone())
        .collect();
    assert_eq!(names, [Value::Null, json!("First"), json!("Later")]);
}
