//! Matrix room history over raw HTTP/1.1, where the client library would hide it: room version
//! 11 event IDs, `/messages` pages and tokens in both directions, `/sync`'s `prev_batch`,
//! `/context` around an event, an invitation waking a `/sync` long-poll, and what a former
//! member may still read (`/messages`, `/event`, `/state`).

use std::collections::HashSet;

use serde_json::json;

use crate::support::matrix::woken;
use crate::support::matrix::{
    V3, chunk_ids, create_room, event_ids, get, get_event, invite, join, messages, next_batch, ok,
    post, put, register, room_of_alice, room_path, send_text, sync, urlencode, user_id,
    whole_history,
};
use crate::support::{TestNode, wait_for_metric};

/// Sends `n` texts to `room` (transaction IDs `{prefix}0`, ...); returns their event IDs.
async fn send_many(
    node: &TestNode,
    token: &str,
    room: &str,
    prefix: &str,
    n: usize,
) -> Vec<String> {
    let mut sent = Vec::new();
    for i in 0..n {
        sent.push(
            send_text(
                node,
                token,
                room,
                &format!("{prefix}{i}"),
                &format!("{prefix} {i}"),
            )
            .await,
        );
    }
    sent
}

/// `$` and 43 characters of unpadded URL-safe base64 (a reference hash, room version 4+).
fn is_v11_event_id(id: &str) -> bool {
    id.len() == 44
        && id.starts_with('$')
        && id[1..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

// --- event IDs and /messages pages ----------------------------------------------------------------

#[tokio::test]
async fn events_have_room_version_11_ids_and_can_be_fetched_alone() {
    let node = TestNode::spawn().await;
    let (alice, room) = room_of_alice(&node, &json!({"name": "v11"})).await;
    let create = ok(get(&node, &room_path(&room, "state/m.room.create/"), &alice).await);
    assert_eq!(create["room_version"], "11", "{create}");
    let id = send_text(&node, &alice, &room, "t1", "hash me").await;
    assert!(is_v11_event_id(&id), "{id}");

    let event = ok(get_event(&node, &alice, &room, &id).await);
    assert_eq!(event["event_id"], id.as_str(), "{event}");
    assert_eq!(event["room_id"], room.as_str(), "{event}");
    assert_eq!(event["sender"], user_id("alice"), "{event}");
    assert_eq!(event["type"], "m.room.message", "{event}");
    assert_eq!(event["content"]["body"], "hash me", "{event}");
    assert!(event["origin_server_ts"].is_u64(), "{event}");
    for e in whole_history(&node, &alice, &room).await {
        let eid = e["event_id"].as_str().unwrap();
        assert!(is_v11_event_id(eid), "{e}");
    }
}

/// Every event ID of `room`, `limit` at a time in direction `dir` (`b` or `f`) from the newest
/// or the oldest, each page continuing where the previous page's `end` pointed; each page is
/// checked on the way (no larger than `limit`, a `start` token, no `end` with an empty chunk).
async fn page_through(
    node: &TestNode,
    token: &str,
    room: &str,
    dir: &str,
    limit: usize,
) -> Vec<String> {
    let mut ids = Vec::new();
    let mut query = format!("dir={dir}&limit={limit}");
    for round in 0.. {
        assert!(round < 50, "no end");
        let page = messages(node, token, room, &query).await;
        let chunk = chunk_ids(&page);
        assert!(chunk.len() <= limit, "{page}");
        assert!(page["start"].is_string(), "{page}");
        ids.extend(chunk.iter().cloned());
        match page["end"].as_str() {
            Some(end) => {
                assert!(!chunk.is_empty(), "`end` given with an empty chunk: {page}");
                query = format!("dir={dir}&limit={limit}&from={end}");
            }
            None => break,
        }
    }
    ids
}

#[tokio::test]
async fn messages_pages_have_no_duplicates_or_gaps_in_either_direction() {
    let node = TestNode::spawn().await;
    let (alice, room) = room_of_alice(&node, &json!({})).await;
    let sent = send_many(&node, &alice, &room, "p", 17).await;

    // Backwards, 4 at a time: newest first.
    let mut backwards = page_through(&node, &alice, &room, "b", 4).await;
    // Forwards, 5 at a time, from the start.
    let forwards = page_through(&node, &alice, &room, "f", 5).await;
    let unique: HashSet<&String> = forwards.iter().collect();
    assert_eq!(
        unique.len(),
        forwards.len(),
        "duplicates forwards: {forwards:?}"
    );
    backwards.reverse();
    assert_eq!(backwards, forwards, "both directions see the same timeline");
    // The messages are the tail of the timeline, in send order, nothing in between.
    assert_eq!(forwards[forwards.len() - sent.len()..], sent[..]);
    // ... and the first is the room's creation.
    let first = ok(get_event(&node, &alice, &room, &forwards[0]).await);
    assert_eq!(first["type"], "m.room.create", "{first}");
}

/// A filter that matches nothing does not make one `/messages` request read the room's whole
/// history: a page looks at 1,000 events at most, and gives an `end` to go on from (the spec
/// allows an empty chunk with an `end`); the client reaches the room's start in a few pages.
#[tokio::test]
async fn a_filter_matching_nothing_scans_a_bounded_page_and_gives_where_to_go_on() {
    let node = TestNode::spawn().await;
    let (alice, room) = room_of_alice(&node, &json!({})).await;
    send_many(&node, &alice, &room, "s", 1_050).await;
    let filter = urlencode(&json!({"types": ["x.none"]}).to_string());
    let mut query = format!("dir=b&limit=1&filter={filter}");
    let mut pages = Vec::new();
    loop {
        assert!(pages.len() < 10, "no end after {} pages", pages.len());
        let page = messages(&node, &alice, &room, &query).await;
        assert!(chunk_ids(&page).is_empty(), "{page}");
        pages.push(page["end"].clone());
        match page["end"].as_str() {
            Some(end) => query = format!("dir=b&limit=1&filter={filter}&from={end}"),
            None => break,
        }
    }
    // 1,050 texts and the room's creation events: more than one page's scan, fewer than three.
    assert_eq!(pages.len(), 2, "{pages:?}");
}

#[tokio::test]
async fn a_sync_prev_batch_continues_backwards_without_overlap() {
    let node = TestNode::spawn().await;
    let (alice, room) = room_of_alice(&node, &json!({})).await;
    let sent = send_many(&node, &alice, &room, "s", 12).await;
    let filter = json!({"room": {"timeline": {"limit": 5}}}).to_string();
    let response = ok(get(
        &node,
        &format!("{V3}/sync?filter={}", urlencode(&filter)),
        &alice,
    )
    .await);
    let timeline = &response["rooms"]["join"][&room]["timeline"];
    assert_eq!(timeline["limited"], true, "{timeline}");
    let synced = event_ids(timeline["events"].as_array().unwrap());
    assert_eq!(synced, sent[sent.len() - 5..]);
    let prev = timeline["prev_batch"].as_str().expect("prev_batch");
    let page = messages(&node, &alice, &room, &format!("dir=b&limit=3&from={prev}")).await;
    let expected: Vec<String> = sent[sent.len() - 8..sent.len() - 5]
        .iter()
        .rev()
        .cloned()
        .collect();
    assert_eq!(
        chunk_ids(&page),
        expected,
        "the three events just before the synced timeline"
    );
}

#[tokio::test]
async fn joining_by_alias_and_context_around_an_event() {
    let node = TestNode::spawn().await;
    let (alice, room) = room_of_alice(
        &node,
        &json!({"preset": "public_chat", "room_alias_name": "square"}),
    )
    .await;
    let bob = register(&node, "bob").await;
    let alias = urlencode("#square:example.com");
    let joined = ok(post(&node, &format!("{V3}/join/{alias}"), &bob, &json!({})).await);
    assert_eq!(joined["room_id"], room.as_str());

    let ids = send_many(&node, &bob, &room, "c", 5).await;
    let ctx = ok(get(
        &node,
        &room_path(&room, &format!("context/{}?limit=2", ids[2])),
        &alice,
    )
    .await);
    assert_eq!(ctx["event"]["event_id"], ids[2].as_str(), "{ctx}");
    assert_eq!(
        ctx["events_before"][0]["event_id"],
        ids[1].as_str(),
        "{ctx}"
    );
    assert_eq!(ctx["events_after"][0]["event_id"], ids[3].as_str(), "{ctx}");
    // `end` continues forwards after the last event returned.
    let end = ctx["end"].as_str().unwrap();
    let page = messages(&node, &alice, &room, &format!("dir=f&from={end}")).await;
    assert_eq!(chunk_ids(&page), [ids[4].as_str()], "{page}");
    // `start` continues backwards before the first event returned.
    let start = ctx["start"].as_str().unwrap();
    let page = messages(&node, &alice, &room, &format!("dir=b&limit=1&from={start}")).await;
    assert_eq!(page["chunk"][0]["event_id"], ids[0].as_str(), "{page}");
}

#[tokio::test]
async fn an_invitation_wakes_the_invitees_long_poll() {
    // On a manual clock the long-poll's timeout never comes: only the invitation can end it.
    let node = TestNode::spawn_with_clock(|_| {}).await;
    let (alice, room) = room_of_alice(&node, &json!({})).await;
    let bob = register(&node, "bob").await;
    let since = next_batch(&sync(&node, &bob, None).await);
    let path = format!("{V3}/sync?since={since}&timeout=10000");
    let poll = woken(get(&node, &path, &bob));
    let invite = async {
        wait_for_metric(&node, "rethink_matrix_syncs_waiting", 1.0).await;
        invite(&node, &alice, &room, &user_id("bob")).await;
    };
    let ((status, body), ()) = tokio::join!(poll, invite);
    assert_eq!(status, 200, "{body}");
    assert!(body["rooms"]["invite"][&room].is_object(), "{body}");
}

// --- what a former member may read ----------------------------------------------------------------

/// Bob, invited to alice's private room, joins and sees one message, then leaves; alice then
/// sends a message and sets the topic.
struct BobLeft {
    node: TestNode,
    bob: String,
    room: String,
    /// The message bob saw.
    before: String,
    /// The message bob must not see.
    after: String,
}

impl BobLeft {
    async fn new() -> Self {
        let node = TestNode::spawn().await;
        let alice = register(&node, "alice").await;
        let bob = register(&node, "bob").await;
        let room = create_room(&node, &alice, &json!({"invite": [user_id("bob")]})).await;
        join(&node, &bob, &room).await;
        let before = send_text(&node, &alice, &room, "t1", "while bob is here").await;
        ok(post(&node, &room_path(&room, "leave"), &bob, &json!({})).await);
        let after = send_text(&node, &alice, &room, "t2", "after bob left").await;
        let topic = json!({"topic": "bob must not read this"});
        ok(put(
            &node,
            &room_path(&room, "state/m.room.topic/"),
            &alice,
            &topic,
        )
        .await);
        Self {
            node,
            bob,
            room,
            before,
            after,
        }
    }
}

#[tokio::test]
async fn messages_do_not_show_a_former_member_what_was_sent_after_leaving() {
    let t = BobLeft::new().await;
    let history = whole_history(&t.node, &t.bob, &t.room).await;
    let seen = event_ids(&history);
    assert!(seen.contains(&t.before), "{seen:?}");
    assert!(
        !seen.contains(&t.after),
        "/messages shows a former member an event sent after they left: {history:?}"
    );
}

#[tokio::test]
async fn event_does_not_show_a_former_member_what_was_sent_after_leaving() {
    let t = BobLeft::new().await;
    ok(get_event(&t.node, &t.bob, &t.room, &t.before).await);
    let answer = get_event(&t.node, &t.bob, &t.room, &t.after).await;
    assert_ne!(answer.0, 200, "/event shows it: {}", answer.1);
}

#[tokio::test]
async fn state_does_not_show_a_former_member_what_was_set_after_leaving() {
    let t = BobLeft::new().await;
    let path = room_path(&t.room, "state/m.room.topic/");
    let (status, topic) = get(&t.node, &path, &t.bob).await;
    assert!(
        status != 200 || topic["topic"] != "bob must not read this",
        "a topic set after bob left is visible to him: {status} {topic}"
    );
    // What was set before he left he still reads, one entry at a time.
    let create = ok(get(&t.node, &room_path(&t.room, "state/m.room.create/"), &t.bob).await);
    assert_eq!(create["room_version"], "11", "{create}");
    let member = format!("state/m.room.member/{}", user_id("bob"));
    let mine = ok(get(&t.node, &room_path(&t.room, &member), &t.bob).await);
    assert_eq!(mine["membership"], "leave", "{mine}");
}
