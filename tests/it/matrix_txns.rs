//! Matrix transaction idempotency (issue 10, defect 1): a retried `PUT .../send/{type}/{txnId}`
//! returns its first event and creates none, however many events the room got meanwhile, across
//! a graceful restart and a SIGKILL; transaction IDs are scoped per device.

use serde_json::{Value, json};
use tempfile::TempDir;

use crate::support::keepalive::KeepAlive;
use crate::support::{NodeProcess, TestNode};

/// More sends than the room engine's memory cache holds per room (2,048).
const BUSY: usize = 2_100;

/// The event ID of a 200 answer to a send.
fn event_id(answer: &(u16, Value)) -> String {
    assert_eq!(answer.0, 200, "{}", answer.1);
    answer.1["event_id"].as_str().expect("event_id").to_owned()
}

/// Sends `first`, then [`BUSY`] more to the same room (alternating between two users): the ID of
/// `first`'s event.
async fn busy_room(http: &mut KeepAlive, alice: &str, bob: &str, room: &str) -> String {
    let first = event_id(&http.send_text(alice, room, "first", "first").await);
    for i in 0..BUSY {
        let sender = if i % 2 == 0 { alice } else { bob };
        event_id(&http.send_text(sender, room, &format!("n{i}"), "more").await);
    }
    first
}

/// The room's last two events, newest first, as (event ID, body).
async fn last_two(http: &mut KeepAlive, token: &str, room: &str) -> Vec<(String, String)> {
    let (status, page) = http
        .get(&format!("/rooms/{room}/messages?dir=b&limit=2"), token)
        .await;
    assert_eq!(status, 200, "{page}");
    page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["event_id"].as_str().unwrap().to_owned(),
                e["content"]["body"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Retries `first` (expecting `first_id`), then sends a marker: the retry must be answered with
/// the original event, and the marker must follow the room's last event before the retry
/// directly (no second event of `first` between them).
async fn retry_creates_nothing(
    http: &mut KeepAlive,
    alice: &str,
    room: &str,
    first_id: &str,
    marker: &str,
) {
    let before = last_two(http, alice, room).await;
    let retry = event_id(&http.send_text(alice, room, "first", "first").await);
    assert_eq!(retry, first_id, "a retry returns the first event");
    event_id(&http.send_text(alice, room, marker, marker).await);
    let after = last_two(http, alice, room).await;
    assert_eq!(after[0].1, marker);
    assert_eq!(
        after[1], before[0],
        "the retry created no event between the last one and the marker"
    );
}

/// Two users of a public room: (alice's token, bob's token, room).
async fn two_in_a_room(http: &mut KeepAlive) -> (String, String, String) {
    let (alice, _) = http.register("alice").await;
    let (bob, _) = http.register("bob").await;
    let room = http
        .create_room(&alice, &json!({"preset": "public_chat"}))
        .await;
    let (status, joined) = http
        .post(&format!("/rooms/{room}/join"), Some(&bob), &json!({}))
        .await;
    assert_eq!(status, 200, "{joined}");
    (alice, bob, room)
}

#[tokio::test]
async fn a_retry_after_a_busy_room_and_a_restart_returns_the_first_event() {
    let node = TestNode::spawn().await;
    let mut http = KeepAlive::connect(node.addr()).await;
    let (alice, bob, room) = two_in_a_room(&mut http).await;
    let first = busy_room(&mut http, &alice, &bob, &room).await;
    retry_creates_nothing(&mut http, &alice, &room, &first, "marker-1").await;

    // The same transaction ID from another device of the same user is another transaction.
    let other_device = http.login("alice").await;
    let other = event_id(&http.send_text(&other_device, &room, "first", "first").await);
    assert_ne!(other, first, "transaction IDs are scoped per device");
    // ... and from another user too.
    let bobs = event_id(&http.send_text(&bob, &room, "first", "first").await);
    assert_ne!(bobs, first);
    assert_ne!(bobs, other);

    drop(http);
    let node = node.restart().await;
    let mut http = KeepAlive::connect(node.addr()).await;
    retry_creates_nothing(&mut http, &alice, &room, &first, "marker-2").await;
    let again = event_id(&http.send_text(&other_device, &room, "first", "first").await);
    assert_eq!(
        again, other,
        "the other device's transaction survives the restart too"
    );
}

#[tokio::test]
async fn a_retry_after_a_sigkill_returns_the_first_event() {
    let dir = TempDir::new().unwrap();
    let mut node = NodeProcess::spawn(dir.path(), &[]).await;
    let mut http = KeepAlive::connect(node.addr()).await;
    let (alice, bob, room) = two_in_a_room(&mut http).await;
    let first = busy_room(&mut http, &alice, &bob, &room).await;
    // Answered, so committed: a kill right after loses none of it.
    node.kill().await;
    drop(http);
    let node = node.restart().await;
    let mut http = KeepAlive::connect(node.addr()).await;
    retry_creates_nothing(&mut http, &alice, &room, &first, "marker").await;
}
