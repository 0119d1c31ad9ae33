//! Bad input gets a precise reTHINK code and loses nothing: malformed JSON, missing fields,
//! oversized frames, spoofed senders, rate and outbox limits, authentication failures. After
//! each refusal the connection still works.

use std::time::Duration;

use rethink_node::config::StaticToken;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::client::RECV_TIMEOUT;
use crate::support::{Rt, TestNode, pair};

/// Checks that `rt` still routes: a message from `from` to `to` reaches `peer`.
async fn still_works(rt: &mut Rt, peer: &mut Rt, from: &str, to: &str) {
    let id = rt.fresh_id();
    rt.send(&json!({"id": id, "type": "PING", "from": from, "to": to}))
        .await;
    assert_eq!(peer.recv().await["id"], id, "connection still usable");
}

#[tokio::test]
async fn malformed_json_gets_400_and_the_connection_survives() {
    let node = TestNode::spawn().await;
    let (mut a, mut b, fa, fb) = pair(&node, "rt-bad-a", "rt-bad-b").await;
    a.send_text("{this is not json").await;
    let resp = a.recv().await;
    assert_eq!(resp["type"], "response");
    assert_eq!(resp["body"]["code"], 400);
    assert_eq!(resp["from"], "mn:/session");
    assert!(
        resp["body"]["description"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );
    still_works(&mut a, &mut b, &fa, &fb).await;
}

#[tokio::test]
async fn missing_or_invalid_fields_get_400_echoing_the_id() {
    let node = TestNode::spawn().await;
    let (mut a, mut b, fa, fb) = pair(&node, "rt-bad-a", "rt-bad-b").await;
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"id": 5, "type": "create", "from": fa, "body": {}}),
            "missing field `to`",
        ),
        (
            json!({"id": 6, "type": "create", "from": fa, "to": "not an address"}),
            "not an address",
        ),
        (
            json!({"id": "s7", "from": fa, "to": fb}),
            "missing field `type`",
        ),
        (
            json!({"id": 8, "type": "create", "from": fa, "to": []}),
            "empty array",
        ),
    ];
    for (msg, want) in cases {
        a.send(&msg).await;
        let resp = a.recv().await;
        assert_eq!(resp["body"]["code"], 400, "{msg} -> {resp}");
        assert_eq!(resp["id"], msg["id"], "{resp}");
        let desc = resp["body"]["description"].as_str().unwrap();
        assert!(desc.contains(want), "{desc} should mention {want}");
    }
    still_works(&mut a, &mut b, &fa, &fb).await;
}

#[tokio::test]
async fn spoofed_sender_is_refused_with_403_and_not_delivered() {
    let node = TestNode::spawn().await;
    let (mut a, mut b, fa, fb) = pair(&node, "rt-bad-a", "rt-bad-b").await;
    for from in [
        fb.as_str(),
        "hyperty://example.com/made-up",
        "hyperty-runtime://example.com/rt-bad-b",
    ] {
        let resp = a
            .request(json!({"type": "PING", "from": from, "to": fb}))
            .await;
        assert_eq!(resp["body"]["code"], 403, "{from}: {resp}");
    }
    // Refused before b's marker: had it been delivered, it would be in b's outbox.
    b.expect_nothing_queued().await;
    still_works(&mut a, &mut b, &fa, &fb).await;
}

#[tokio::test]
async fn oversized_frame_gets_413_and_the_connection_survives() {
    let node = TestNode::spawn_with(|c| c.session.max_frame_bytes = 64 * 1024).await;
    let (mut a, mut b, fa, fb) = pair(&node, "rt-bad-a", "rt-bad-b").await;
    let big = "x".repeat(100 * 1024);
    a.send(&json!({"id": 9, "type": "PING", "from": fa, "to": fb, "body": {"big": big}}))
        .await;
    let resp = a.recv().await;
    assert_eq!(resp["body"]["code"], 413, "{resp}");
    assert_eq!(resp["id"], 9);
    // Refused before b's marker: had it been delivered, it would be in b's outbox.
    b.expect_nothing_queued().await;
    still_works(&mut a, &mut b, &fa, &fb).await;
}

#[tokio::test]
async fn rate_limit_answers_429_and_delivers_the_rest() {
    let node = TestNode::spawn_with(|c| {
        c.session.rate_per_second = 1;
        c.session.rate_burst = 5;
    })
    .await;
    let mut a = Rt::open(&node, "rt-rate-a").await;
    let mut b = Rt::open(&node, "rt-rate-b").await;
    // The allocation itself takes one unit from a's bucket.
    let fa = a.allocate(1).await.remove(0);
    let fb = b.allocate(1).await.remove(0);
    for i in 0..10 {
        a.send(&json!({"id": i, "type": "PING", "from": fa, "to": fb}))
            .await;
    }
    // a's marker comes after every refusal, b's after every delivery.
    let mut refused = Vec::new();
    for v in a.drain().await {
        assert_eq!(v["body"]["code"], 429, "{v}");
        refused.push(v["id"].as_u64().unwrap());
    }
    let delivered: Vec<u64> = b
        .drain()
        .await
        .iter()
        .map(|v| v["id"].as_u64().unwrap())
        .collect();
    assert_eq!(
        delivered.len(),
        4,
        "burst of 5 minus the allocation: {delivered:?}"
    );
    assert_eq!(
        delivered.len() + refused.len(),
        10,
        "every message delivered or refused"
    );
    let mut all: Vec<u64> = delivered.iter().chain(&refused).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..10).collect::<Vec<_>>());
}

#[tokio::test]
async fn full_outbox_answers_503_and_keeps_what_it_holds() {
    let node = TestNode::spawn_with(|c| c.session.outbox_max_messages = 3).await;
    let (mut a, b, fa, fb) = pair(&node, "rt-bad-a", "rt-bad-b").await;
    // b stops reading and acking; its outbox holds the allocation answer and the open answer
    // until acknowledged (acked by nothing), so only one more message fits.
    drop(b.drop_connection());
    // a's own answers count against the same bound: it acknowledges what it has, and sends no
    // more than its outbox can answer (two refusals and the drain marker's answer).
    a.ack().await;
    for i in 0..3 {
        a.send(&json!({"id": i, "type": "PING", "from": fa, "to": fb}))
            .await;
    }
    let codes: Vec<(u64, u64)> = a
        .drain()
        .await
        .iter()
        .map(|v| {
            (
                v["id"].as_u64().unwrap(),
                v["body"]["code"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(!codes.is_empty(), "the full outbox is reported");
    assert!(codes.iter().all(|(_, c)| *c == 503), "{codes:?}");
    let accepted = 3 - codes.len();
    assert!(accepted >= 1, "what fits is accepted: {codes:?}");
}

#[tokio::test]
async fn binary_frames_get_400() {
    let node = TestNode::spawn().await;
    let (mut a, mut b, fa, fb) = pair(&node, "rt-bad-a", "rt-bad-b").await;
    a.send_raw(Message::binary(vec![1u8, 2, 3])).await;
    assert_eq!(a.recv().await["body"]["code"], 400);
    still_works(&mut a, &mut b, &fa, &fb).await;
}

#[tokio::test]
async fn messages_before_open_get_401_and_open_still_works() {
    let node = TestNode::spawn().await;
    let mut rt = Rt::connect(&node, "rt-early").await;
    rt.send(
        &json!({"id": 1, "type": "PING", "from": "hyperty://example.com/x",
        "to": "hyperty://example.com/y"}),
    )
    .await;
    let resp = rt.recv().await;
    assert_eq!(resp["body"]["code"], 401, "{resp}");
    assert_eq!(resp["seq"], 0, "no session yet");
    let open = rt.open_session(json!({})).await;
    assert_eq!(open["body"]["code"], 200);
}

#[tokio::test]
async fn a_runtime_url_cannot_be_opened_twice_or_outside_the_domain() {
    let node = TestNode::spawn().await;
    let _first = Rt::open(&node, "rt-dup").await;
    let mut second = Rt::connect(&node, "rt-dup").await;
    assert_eq!(second.open_session(json!({})).await["body"]["code"], 409);
    let mut foreign = Rt::connect(&node, "x").await;
    foreign.url = "hyperty-runtime://other.org/x".into();
    assert_eq!(foreign.open_session(json!({})).await["body"]["code"], 403);
}

#[tokio::test]
async fn tokens_are_checked_and_anonymous_runtimes_only_when_allowed() {
    let node = TestNode::spawn_with(|c| {
        c.auth.allow_anonymous = false;
        c.auth.tokens = vec![StaticToken {
            token: "secret-token-for-alice".into(),
            subject: "user://example.com/alice".into(),
            runtime: None,
        }];
    })
    .await;
    let mut anon = Rt::connect(&node, "rt-anon").await;
    assert_eq!(anon.open_session(json!({})).await["body"]["code"], 401);
    let wrong = anon
        .open_session(json!({"token": "not-the-right-token"}))
        .await;
    assert_eq!(wrong["body"]["code"], 401);
    let ok = anon
        .open_session(json!({"token": "secret-token-for-alice"}))
        .await;
    assert_eq!(ok["body"]["code"], 200, "token in body.token: {ok}");

    // The Authorization header and the access_token query parameter.
    let mut req = node.ws_url().into_client_request().unwrap();
    req.headers_mut().insert(
        "Authorization",
        "Bearer secret-token-for-alice".parse().unwrap(),
    );
    let (ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("header token accepted");
    let mut h = Rt::from_ws(ws, "rt-header");
    assert_eq!(h.open_session(json!({})).await["body"]["code"], 200);
    let url = format!("{}?access_token=secret-token-for-alice", node.ws_url());
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("query token accepted");
    let mut q = Rt::from_ws(ws, "rt-query");
    assert_eq!(q.open_session(json!({})).await["body"]["code"], 200);

    let mut bad = node.ws_url().into_client_request().unwrap();
    bad.headers_mut().insert(
        "Authorization",
        "Bearer forged-token-1234567".parse().unwrap(),
    );
    match tokio_tungstenite::connect_async(bad).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("a bad header token must be refused with HTTP 401: {other:?}"),
    }
}

#[tokio::test]
async fn a_silent_peer_is_closed_after_the_idle_timeout() {
    const IDLE: Duration = Duration::from_secs(60);
    let node = TestNode::spawn_with_clock(|c| {
        c.session.ping_interval = Duration::from_secs(3600);
        c.session.idle_timeout = IDLE;
    })
    .await;
    let mut rt = Rt::open(&node, "rt-idle").await;
    // Just before the timeout the connection is open; a frame starts the timeout anew.
    node.advance(IDLE - Duration::from_millis(1)).await;
    rt.expect_nothing_queued().await;
    node.advance(IDLE - Duration::from_millis(1)).await;
    rt.expect_nothing_queued().await;
    // A whole idle timeout without a frame: the node closes the connection.
    node.advance(IDLE).await;
    let code = rt.closed_with(RECV_TIMEOUT).await;
    assert_eq!(code, Some(1001), "closed as idle");
}

#[tokio::test]
async fn repeated_garbage_closes_the_connection_but_not_the_node() {
    let node = TestNode::spawn().await;
    let mut rt = Rt::open(&node, "rt-garbage").await;
    for _ in 0..60 {
        rt.send_text("garbage").await;
    }
    let (refusals, code) = rt.frames_until_close().await;
    for v in &refusals {
        assert_eq!(v["body"]["code"], 400, "{v}");
    }
    assert_eq!(
        refusals.len(),
        50,
        "each bad frame answered until the limit"
    );
    assert_eq!(code, 1008, "closed for misbehaving");
    // The node still serves others.
    let mut other = Rt::open(&node, "rt-after-garbage").await;
    assert_eq!(other.allocate(1).await.len(), 1);
}
