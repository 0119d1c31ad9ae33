//! The plain HTTP endpoints: `/healthz`, `/metrics` (Prometheus text), unknown paths.

use crate::support::{TestNode, get, metric, pair};
use serde_json::json;

#[tokio::test]
async fn healthz_answers_ok() {
    let node = TestNode::spawn().await;
    let (status, body) = get(&node, "/healthz").await;
    assert_eq!(status, 200);
    assert!(body.contains("ok"));
    assert_eq!(get(&node, "/no-such-path").await.0, 404);
}

#[tokio::test]
async fn metrics_count_sessions_routed_and_refused_messages() {
    let node = TestNode::spawn().await;
    let (mut a, mut b, fa, fb) = pair(&node, "rt-m-a", "rt-m-b").await;
    for i in 0..3 {
        a.send(&json!({"id": i, "type": "PING", "from": fa, "to": fb}))
            .await;
        b.recv().await;
    }
    let spoof = a
        .request(json!({"type": "PING", "from": fb, "to": fa}))
        .await;
    assert_eq!(spoof["body"]["code"], 403);
    let (status, text) = get(&node, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(metric(&text, "rethink_sessions_connected"), 2.0);
    assert_eq!(metric(&text, "rethink_sessions"), 2.0);
    // 3 messages + 2 open answers + 2 allocation answers + 1 refusal answer.
    assert_eq!(metric(&text, "rethink_messages_routed_total"), 8.0);
    assert_eq!(
        metric(&text, "rethink_messages_refused_total{code=\"403\"}"),
        1.0
    );
    assert!(metric(&text, "rethink_outbox_messages") >= 3.0);
    assert!(metric(&text, "rethink_route_latency_seconds_count") >= 5.0);
}
