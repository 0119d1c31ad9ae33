//! The cost of one frame stays bounded (issue 10, defect 3): a recipient named many times gets
//! the message once, a message naming more than `session.max_recipients` distinct recipients is
//! refused whole with one 413, a multi-recipient failure is one response listing the failed
//! recipients, and the node's own answers count against the sender's outbox bound.

use serde_json::{Value, json};

use crate::support::{Rt, TestNode, get, metric, pair};

/// Sends a request to an unknown address and returns its 404: the next frame the sender gets
/// after everything before it was handled.
async fn marker(rt: &mut Rt, from: &str) -> Value {
    let resp = rt
        .request(json!({"type": "PING", "from": from, "to": "hyperty://example.com/marker-nobody"}))
        .await;
    assert_eq!(resp["body"]["code"], 404, "{resp}");
    resp
}

#[tokio::test]
async fn a_recipient_named_many_times_gets_the_message_once() {
    let node = TestNode::spawn().await;
    let (mut a, mut b, fa, fb) = pair(&node, "rt-dup-a", "rt-dup-b").await;
    let to = vec![fb.clone(); 5_000];
    a.send(&json!({"id": 1, "type": "PING", "from": fa, "to": to}))
        .await;
    // Nothing refused: the sender's next frame answers the marker.
    marker(&mut a, &fa).await;
    assert_eq!(b.recv().await["id"], 1);
    a.send(&json!({"id": "after", "type": "PING", "from": fa, "to": fb}))
        .await;
    assert_eq!(b.recv().await["id"], "after", "one copy only");
}

#[tokio::test]
async fn too_many_recipients_get_one_413_and_nothing_is_delivered() {
    let node = TestNode::spawn_with(|c| c.session.max_recipients = 10).await;
    let (mut a, mut b, fa, fb) = pair(&node, "rt-many-a", "rt-many-b").await;
    let mut to: Vec<String> = (0..10)
        .map(|i| format!("hyperty://example.com/unknown-{i}"))
        .collect();
    to.push(fb.clone());
    let resp = a
        .request(json!({"type": "PING", "from": fa, "to": to}))
        .await;
    assert_eq!(resp["body"]["code"], 413, "{resp}");
    let desc = resp["body"]["description"].as_str().unwrap();
    assert!(desc.contains("11 recipients"), "{desc}");
    // One answer only: the next frame answers the marker.
    marker(&mut a, &fa).await;
    // Nothing was delivered: b's next frame is a later message.
    a.send(&json!({"id": "after", "type": "PING", "from": fa, "to": fb}))
        .await;
    assert_eq!(b.recv().await["id"], "after");

    // Exactly at the bound (duplicates counted once) is accepted.
    let mut to: Vec<String> = (0..9)
        .map(|i| format!("hyperty://example.com/unknown-{i}"))
        .collect();
    to.push(fb.clone());
    to.push(fb.clone());
    let resp = a
        .request(json!({"type": "PING", "from": fa, "to": to}))
        .await;
    assert_eq!(resp["body"]["code"], 404, "{resp}");
    assert_eq!(resp["body"]["description"], "9 of 10 recipients failed");
    let failed = resp["body"]["value"]["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 9);
    for (i, f) in failed.iter().enumerate() {
        assert_eq!(f["to"], format!("hyperty://example.com/unknown-{i}"));
        assert_eq!(f["code"], 404);
    }
    assert_eq!(b.recv().await["type"], "PING");
    marker(&mut a, &fa).await;
}

#[tokio::test]
async fn a_session_that_never_acknowledges_cannot_grow_its_outbox() {
    const MAX: usize = 20;
    // Fewer than the 50 refused frames in a row that close a connection.
    const REQUESTS: usize = 45;
    let node = TestNode::spawn_with(|c| c.session.outbox_max_messages = MAX).await;
    let mut a = Rt::open(&node, "rt-noack").await;
    let from = a.url.clone();
    // Each request is refused (unknown address): one answer each, owed to a.
    for i in 0..REQUESTS {
        a.send(&json!({"id": i, "type": "PING", "from": from,
            "to": format!("hyperty://example.com/nobody-{i}")}))
            .await;
    }
    let outbox = |text: &str| metric(text, "rethink_outbox_messages") as usize;
    // The open answer and MAX - 1 refusals fill the outbox; they all arrive.
    let mut answered = Vec::new();
    for _ in 1..MAX {
        let v = a.recv().await;
        assert_eq!(v["body"]["code"], 404, "{v}");
        answered.push(v["id"].as_u64().unwrap());
    }
    let (_, text) = get(&node, "/metrics").await;
    assert_eq!(outbox(&text), MAX, "the outbox is full, not beyond");
    // Acknowledging makes room; the rest of the answers follow, none lost, none beyond MAX.
    while answered.len() < REQUESTS {
        a.ack().await;
        let v = a.recv().await;
        assert_eq!(v["body"]["code"], 404, "{v}");
        answered.push(v["id"].as_u64().unwrap());
        let (_, text) = get(&node, "/metrics").await;
        assert!(
            outbox(&text) <= MAX,
            "outbox gauge {} > {MAX}",
            outbox(&text)
        );
    }
    assert_eq!(answered, (0..REQUESTS as u64).collect::<Vec<_>>());
}

/// A session's subscriptions are bounded (`session.max_subscriptions`): a subscribe that would
/// go beyond the bound is refused whole with 403 and changes nothing; one already held, or named
/// twice, counts once; an unsubscribe makes room again.
#[tokio::test]
async fn subscriptions_beyond_the_bound_are_refused_whole() {
    let node = TestNode::spawn_with(|c| c.session.max_subscriptions = 3).await;
    let mut rt = crate::support::Rt::open(&node, "rt-subs").await;
    let sm = crate::support::sm_endpoint();
    let from = format!("{}/sm", rt.url);
    let addr = |i: u32| format!("hyperty://example.com/watched-{i}");
    let subscribe = |kind: &'static str, resources: Vec<String>| json!({"type": kind, "from": from.clone(), "to": sm.clone(), "body": {"resources": resources}});
    let ok = rt
        .request(subscribe("subscribe", vec![addr(0), addr(1), addr(1)]))
        .await;
    assert_eq!(ok["body"]["code"], 200, "{ok}");
    // Two held; three new would make five: refused whole.
    let refused = rt
        .request(subscribe(
            "subscribe",
            vec![addr(0), addr(2), addr(3), addr(4)],
        ))
        .await;
    assert_eq!(refused["body"]["code"], 403, "{refused}");
    assert_eq!(
        refused["body"]["description"],
        "forbidden: a runtime subscribes to at most 3 addresses"
    );
    // Nothing of it was taken: one more still fits (addr 0 is held already).
    let ok = rt
        .request(subscribe("subscribe", vec![addr(0), addr(2)]))
        .await;
    assert_eq!(ok["body"]["code"], 200, "{ok}");
    let full = rt.request(subscribe("subscribe", vec![addr(3)])).await;
    assert_eq!(full["body"]["code"], 403, "{full}");
    let ok = rt.request(subscribe("unsubscribe", vec![addr(1)])).await;
    assert_eq!(ok["body"]["code"], 200, "{ok}");
    let ok = rt.request(subscribe("subscribe", vec![addr(3)])).await;
    assert_eq!(ok["body"]["code"], 200, "{ok}");
}
