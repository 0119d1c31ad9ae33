//! Matrix on several nodes (issue 14): two node programs of one domain on one fresh PostgreSQL
//! database (`PG_TEST_URL`) and one NATS server (`NATS_TEST_URL`), a client on each, in one room.
//! Promises: both nodes report the room's events in one order (`/sync` and `/messages`), however
//! the sends of the two nodes interleave; a `/sync` long-polling on one node returns within 50 ms
//! of a send on the other; a transaction retried on the other node is the same event; typing
//! through one node is seen through the other.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cluster::cluster;
use crate::support::NodeProcess;
use crate::support::matrix::{
    Session, V3, create_room, event_ids, get, invite, join, login, next_batch, ok, put,
    register_session, send_path, send_text, sync, text, user_id, whole_history,
};

/// Alice (logged in through node 1) and Bob (through node 2, both registered through node 1)
/// in a room Alice created on node 1 and Bob joined on node 2 (which loads the room node 1
/// created).
pub(crate) async fn alice_and_bob(
    n1: &NodeProcess,
    n2: &NodeProcess,
) -> (Session, Session, String) {
    register_session(n1, "alice").await;
    register_session(n1, "bob").await;
    let alice = login(n1, "alice").await;
    let bob = login(n2, "bob").await;
    let room = create_room(n1, &alice.token, &json!({"name": "Tea"})).await;
    invite(n1, &alice.token, &room, &user_id("bob")).await;
    join(n2, &bob.token, &room).await;
    (alice, bob, room)
}

/// The events of `room` in a full `/sync` of `token` on `node` (timeline of up to 500 events).
async fn synced_timeline(node: &NodeProcess, token: &str, room: &str) -> Vec<String> {
    let filter = r#"{"room":{"timeline":{"limit":500}}}"#;
    let path = format!("{V3}/sync?timeout=0&filter={}", url_escape(filter));
    let body = ok(get(node, &path, token).await);
    let events = body["rooms"]["join"][room]["timeline"]["events"]
        .as_array()
        .unwrap_or_else(|| panic!("the room is in the sync: {body}"))
        .clone();
    assert_ne!(
        body["rooms"]["join"][room]["timeline"]["limited"],
        Value::Bool(true),
        "the whole room fits in the timeline"
    );
    event_ids(&events)
}

/// The room's history through `node` once it holds every event of `ids`: another node's
/// events reach this one a moment after their sender's answer, announced over NATS; until
/// then, a long-poll `/sync` waits for the next change here.
async fn history_with(node: &NodeProcess, token: &str, room: &str, ids: &[String]) -> Vec<String> {
    let mut since = next_batch(&sync(node, token, None).await);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let history = event_ids(&whole_history(node, token, room).await);
        if ids.iter().all(|id| history.contains(id)) {
            return history;
        }
        assert!(Instant::now() < deadline, "node misses events: {history:?}");
        let path = format!("{V3}/sync?timeout=1000&since={since}");
        since = next_batch(&ok(get(node, &path, token).await));
    }
}

fn url_escape(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn clients_on_two_nodes_see_one_room_in_one_order() {
    let c = cluster(2).await;
    let (n1, n2) = (&c.nodes[0], &c.nodes[1]);
    // Accounts are shared: registered on one node, used on the other.
    let (alice, bob, room) = alice_and_bob(n1, n2).await;

    // Both send at once, each on its own node.
    const EACH: usize = 15;
    let from_alice = async {
        let mut ids = Vec::new();
        for i in 0..EACH {
            ids.push(send_text(n1, &alice.token, &room, &format!("a{i}"), &format!("a{i}")).await);
        }
        ids
    };
    let from_bob = async {
        let mut ids = Vec::new();
        for i in 0..EACH {
            ids.push(send_text(n2, &bob.token, &room, &format!("b{i}"), &format!("b{i}")).await);
        }
        ids
    };
    let (sent_a, sent_b) = tokio::join!(from_alice, from_bob);

    // One history, the same through either node, with every send once and each sender's in
    // the order sent.
    let all: Vec<String> = sent_a.iter().chain(&sent_b).cloned().collect();
    let history_1 = history_with(n1, &alice.token, &room, &all).await;
    let history_2 = history_with(n2, &bob.token, &room, &all).await;
    assert_eq!(history_1, history_2, "/messages differs between the nodes");
    for sent in [&sent_a, &sent_b] {
        let positions: Vec<usize> = sent
            .iter()
            .map(|id| {
                let found: Vec<usize> = history_1
                    .iter()
                    .enumerate()
                    .filter(|(_, h)| *h == id)
                    .map(|(i, _)| i)
                    .collect();
                assert_eq!(found.len(), 1, "{id} is once in the history");
                found[0]
            })
            .collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "a sender's events in the order sent"
        );
    }
    // /sync on each node: the same events in the same order as /messages.
    assert_eq!(synced_timeline(n1, &alice.token, &room).await, history_1);
    assert_eq!(synced_timeline(n2, &bob.token, &room).await, history_1);
}

#[tokio::test]
async fn a_long_poll_on_one_node_returns_within_50_ms_of_a_send_on_the_other() {
    let c = cluster(2).await;
    let (n1, n2) = (&c.nodes[0], &c.nodes[1]);
    let (alice, bob, room) = alice_and_bob(n1, n2).await;
    let mut since = next_batch(&sync(n2, &bob.token, None).await);
    let mut lates = Vec::new();
    for round in 0..7 {
        let poll_path = format!("{V3}/sync?timeout=20000&since={since}");
        let poll = get(n2, &poll_path, &bob.token);
        let send = async {
            let answer = put(
                n1,
                &send_path(&room, &format!("t{round}")),
                &alice.token,
                &text(&format!("round {round}")),
            )
            .await;
            (Instant::now(), ok(answer))
        };
        let wait = async {
            // Until a long-poll returns with the event (another change, presence say, may
            // return one earlier): when did node 2 report it?
            let mut answer = poll.await;
            loop {
                let returned_at = Instant::now();
                assert_eq!(answer.0, 200, "{}", answer.1);
                let body = answer.1;
                let has_room = body["rooms"]["join"][&room]["timeline"]["events"].is_array();
                if has_room {
                    return (body, returned_at);
                }
                let path = format!("{V3}/sync?timeout=20000&since={}", next_batch(&body));
                answer = get(n2, &path, &bob.token).await;
            }
        };
        let ((body, returned_at), (sent_at, sent)) = tokio::join!(wait, send);
        let events = body["rooms"]["join"][&room]["timeline"]["events"]
            .as_array()
            .expect("the timeline")
            .clone();
        assert_eq!(
            event_ids(&events),
            [sent["event_id"].as_str().unwrap().to_owned()],
            "the long-poll on node 2 returned with node 1's event: {body}"
        );
        let late = returned_at.saturating_duration_since(sent_at);
        lates.push(late);
        since = next_batch(&body);
    }
    lates.sort();
    eprintln!("wake-ups after the send's answer: {lates:?}");
    // The promise is 50 ms; a test machine busy with other tests may stretch a round or two,
    // so the median is held to it (without the NATS notice, each round waits for the writer's
    // once-a-second check: the median is then hundreds of ms), and every round to 500 ms.
    assert!(
        lates[lates.len() / 2] < Duration::from_millis(50),
        "a long-poll on node 2 returned {lates:?} after the sends on node 1"
    );
    assert!(
        lates[lates.len() - 1] < Duration::from_millis(500),
        "a long-poll on node 2 returned {lates:?} after the sends on node 1"
    );
}

#[tokio::test]
async fn a_transaction_retried_on_the_other_node_is_the_same_event() {
    let c = cluster(2).await;
    let (n1, n2) = (&c.nodes[0], &c.nodes[1]);
    register_session(n1, "alice").await;
    let alice = login(n1, "alice").await;
    let room = create_room(n1, &alice.token, &json!({})).await;
    // The same device (the same access token) sends on node 1, then retries on node 2.
    let first = ok(put(n1, &send_path(&room, "once"), &alice.token, &text("hello")).await);
    let again = ok(put(n2, &send_path(&room, "once"), &alice.token, &text("hello")).await);
    assert_eq!(first["event_id"], again["event_id"]);
    let history = whole_history(n2, &alice.token, &room).await;
    let hellos = history
        .iter()
        .filter(|e| e["content"]["body"] == "hello")
        .count();
    assert_eq!(hellos, 1, "one event for the transaction");
}

/// The `user_ids` of the room's typing event in a `/sync` answer, if it has one.
fn typing_in(body: &Value, room: &str) -> Option<Vec<String>> {
    let events = body["rooms"]["join"][room]["ephemeral"]["events"].as_array()?;
    let typing = events.iter().find(|e| e["type"] == "m.typing")?;
    Some(
        typing["content"]["user_ids"]
            .as_array()?
            .iter()
            .filter_map(|u| u.as_str().map(str::to_owned))
            .collect(),
    )
}

/// Long-polls `/sync` on `node` from `since` until the room's typing is `want`; the new token.
async fn sync_until_typing(
    node: &NodeProcess,
    token: &str,
    room: &str,
    mut since: String,
    want: &[String],
) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let path = format!("{V3}/sync?timeout=5000&since={since}");
        let body = ok(get(node, &path, token).await);
        since = next_batch(&body);
        if typing_in(&body, room).as_deref() == Some(want) {
            return since;
        }
        assert!(Instant::now() < deadline, "typing never became {want:?}");
    }
}

#[tokio::test]
async fn typing_on_one_node_is_seen_on_the_other() {
    let c = cluster(2).await;
    let (n1, n2) = (&c.nodes[0], &c.nodes[1]);
    let (alice, bob, room) = alice_and_bob(n1, n2).await;
    let since = next_batch(&sync(n2, &bob.token, None).await);
    let typing_path = format!("{V3}/rooms/{room}/typing/{}", user_id("alice"));
    ok(put(
        n1,
        &typing_path,
        &alice.token,
        &json!({"typing": true, "timeout": 30000}),
    )
    .await);
    let since = sync_until_typing(n2, &bob.token, &room, since, &[user_id("alice")]).await;
    ok(put(n1, &typing_path, &alice.token, &json!({"typing": false})).await);
    sync_until_typing(n2, &bob.token, &room, since, &[]).await;
}
