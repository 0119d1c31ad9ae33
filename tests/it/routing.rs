//! Routing between runtimes: direct messages with a response back, fan-out to subscribers,
//! multi-recipient messages, unknown addresses and other domains. "Nothing arrived" is shown by
//! a marker ([`Rt::drain`]), never by waiting.

use serde_json::json;

use crate::support::{Rt, TestNode, sm_endpoint};

#[tokio::test]
async fn two_runtimes_exchange_a_message_and_its_response() {
    let node = TestNode::spawn().await;
    let mut alice = Rt::open(&node, "rt-alice").await;
    let mut bob = Rt::open(&node, "rt-bob").await;
    let a = alice.allocate(1).await.remove(0);
    let b = bob.allocate(1).await.remove(0);

    let msg = json!({"id": 7, "type": "PING", "from": a, "to": b,
        "body": {"message": "hello", "nested": {"k": [1, 2]}}, "x-extra": true});
    alice.send(&msg).await;
    let got = bob.recv().await;
    assert!(got["seq"].as_u64().unwrap() > 0);
    for field in ["id", "type", "from", "to", "body", "x-extra"] {
        assert_eq!(got[field], msg[field], "field {field} kept: {got}");
    }

    bob.send(&json!({"id": 7, "type": "response", "from": b, "to": a,
        "body": {"code": 200, "value": "pong"}}))
        .await;
    let resp = alice.recv().await;
    assert_eq!(resp["type"], "response");
    assert_eq!(resp["id"], 7);
    assert_eq!(resp["body"]["value"], "pong");
    // Neither of them got anything else: no echo, no answer to the response.
    alice.expect_nothing_queued().await;
    bob.expect_nothing_queued().await;
}

#[tokio::test]
async fn messages_to_the_runtime_url_reach_its_session() {
    let node = TestNode::spawn().await;
    let mut a = Rt::open(&node, "rt-1").await;
    let mut b = Rt::open(&node, "rt-2").await;
    let from = a.allocate(1).await.remove(0);
    let to = format!("{}/registry", b.url);
    a.send(&json!({"id": 1, "type": "read", "from": from, "to": to}))
        .await;
    assert_eq!(b.recv().await["to"], json!(to));
}

#[tokio::test]
async fn subscribers_get_every_update_until_they_unsubscribe() {
    let node = TestNode::spawn().await;
    let mut reporter = Rt::open(&node, "rt-reporter").await;
    let mut s1 = Rt::open(&node, "rt-sub1").await;
    let mut s2 = Rt::open(&node, "rt-sub2").await;
    let from = format!("{}/registry/allocation", reporter.url);
    let obj = reporter
        .request(json!({"type": "create", "from": from,
            "to": crate::support::allocation_endpoint(),
            "body": {"scheme": "comm", "value": {"number": 1}}}))
        .await["body"]["value"]["allocated"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let changes = format!("{obj}/changes");
    s1.subscribe(&[&changes]).await;
    s2.subscribe(&[&changes]).await;

    let update = json!({"id": 3, "type": "update", "from": obj, "to": changes,
        "body": {"attribute": "participants.alice", "value": {"status": "online"}}});
    reporter.send(&update).await;
    for s in [&mut s1, &mut s2] {
        let got = s.recv().await;
        assert_eq!(got["body"], update["body"]);
        assert_eq!(got["from"], json!(obj));
    }
    // The publisher is not sent its own update.
    reporter.expect_nothing_queued().await;

    let unsub = s2
        .request(
            json!({"type": "unsubscribe", "from": format!("{}/sm", s2.url),
            "to": sm_endpoint(), "body": {"resources": [changes]}}),
        )
        .await;
    assert_eq!(unsub["body"]["code"], 200);
    reporter
        .send(&json!({"id": 4, "type": "update", "from": obj, "to": changes, "body": {"n": 2}}))
        .await;
    // A marker from the same sender straight to s2: it comes after update 4 had it been sent.
    reporter
        .send(&json!({"id": 5, "type": "PING", "from": obj, "to": s2.url}))
        .await;
    assert_eq!(s1.recv().await["id"], 4);
    assert_eq!(
        s2.recv().await["id"],
        5,
        "the unsubscribed s2 got no update 4"
    );
}

#[tokio::test]
async fn legacy_subscribe_field_is_understood() {
    let node = TestNode::spawn().await;
    let mut pubr = Rt::open(&node, "rt-p").await;
    let mut sub = Rt::open(&node, "rt-s").await;
    let obj = pubr.allocate(1).await.remove(0);
    let changes = format!("{obj}/changes");
    let resp = sub
        .request(
            json!({"type": "subscribe", "from": format!("{}/sm", sub.url),
            "to": sm_endpoint(), "body": {"subscribe": [changes]}}),
        )
        .await;
    assert_eq!(resp["body"]["code"], 200, "{resp}");
    pubr.send(&json!({"id": 1, "type": "update", "from": obj, "to": changes}))
        .await;
    assert_eq!(sub.recv().await["to"], json!(changes));
}

#[tokio::test]
async fn multi_recipient_messages_fan_out_and_report_unknown_ones() {
    let node = TestNode::spawn().await;
    let mut a = Rt::open(&node, "rt-multi-a").await;
    let mut b = Rt::open(&node, "rt-multi-b").await;
    let mut c = Rt::open(&node, "rt-multi-c").await;
    let from = a.allocate(1).await.remove(0);
    let tb = b.allocate(1).await.remove(0);
    let tc = c.allocate(1).await.remove(0);
    let ghost = "hyperty://example.com/no-such-hyperty";
    a.send(
        &json!({"id": 11, "type": "update", "from": from, "to": [tb, tc, ghost],
        "body": {"value": {"n": 1}}}),
    )
    .await;
    assert_eq!(b.recv().await["id"], 11);
    assert_eq!(c.recv().await["id"], 11);
    let err = a.recv().await;
    assert_eq!(err["body"]["code"], 404, "{err}");
    assert_eq!(err["from"], ghost);
    assert_eq!(err["id"], 11);
}

#[tokio::test]
async fn unknown_local_address_and_other_domains_get_404() {
    let node = TestNode::spawn().await;
    let mut a = Rt::open(&node, "rt-404").await;
    let from = a.allocate(1).await.remove(0);
    let local = a
        .request(json!({"type": "PING", "from": from, "to": "hyperty://example.com/nobody"}))
        .await;
    assert_eq!(local["body"]["code"], 404);
    let remote = a
        .request(json!({"type": "PING", "from": from, "to": "hyperty://other.org/somebody"}))
        .await;
    assert_eq!(remote["body"]["code"], 404);
    let desc = remote["body"]["description"].as_str().unwrap();
    assert!(desc.contains("no route to domain other.org"), "{desc}");
    let registry = a
        .request(json!({"type": "create", "from": from, "to": "domain://registry.example.com"}))
        .await;
    assert_eq!(registry["body"]["code"], 404, "{registry}");
}

#[tokio::test]
async fn a_batch_frame_routes_each_message_in_order() {
    let node = TestNode::spawn().await;
    let mut a = Rt::open(&node, "rt-batch-a").await;
    let mut b = Rt::open(&node, "rt-batch-b").await;
    let from = a.allocate(1).await.remove(0);
    let to = b.allocate(1).await.remove(0);
    let batch: Vec<_> = (1..=5)
        .map(|i| json!({"id": i, "type": "PING", "from": from, "to": to}))
        .collect();
    a.send(&json!(batch)).await;
    for i in 1..=5 {
        assert_eq!(b.recv().await["id"], i);
    }
}
