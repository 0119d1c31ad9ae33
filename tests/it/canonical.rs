//! Anti-spoofing with non-canonical addresses (issue 10, defect 2): a `from` (or `to`) holding a
//! dot segment, literal or percent-encoded, names another address once a URL normaliser reads
//! it. The node refuses such a message with 400 before any ownership check, and its target
//! receives nothing: the target's next frame is a legitimate marker sent afterwards.

use serde_json::json;

use crate::support::{Rt, TestNode, pair};

/// Sends `from` → `to` as rA; expects a 400 echoing the id, naming the dot segment.
async fn refused(ra: &mut Rt, id: u64, from: &str, to: &str) {
    let resp = ra
        .request(json!({"id": id, "type": "PING", "from": from, "to": to,
            "body": {"probe": id}}))
        .await;
    assert_eq!(resp["body"]["code"], 400, "{from} -> {to}: {resp}");
    let desc = resp["body"]["description"].as_str().unwrap_or_default();
    assert!(desc.contains("not canonical"), "{desc}");
}

#[tokio::test]
async fn dot_segment_senders_are_refused_and_deliver_nothing() {
    let node = TestNode::spawn().await;
    let (mut ra, mut rb, ha, hb) = pair(&node, "rA", "rB").await;
    let rb_url = rb.url.clone();
    let mine = ha.rsplit('/').next().unwrap().to_owned();
    let other = hb.rsplit('/').next().unwrap().to_owned();
    let probes = [
        // Runtime addresses: rA claims to be rB.
        format!("{}/../rB", ra.url),
        format!("{}/%2e%2e/rB", ra.url),
        format!("{}/%2E%2E/rB", ra.url),
        format!("{}/.%2e/rB", ra.url),
        format!("{}/./../rB", ra.url),
        // Hyperty addresses: rA's hyperty claims to be rB's.
        format!("hyperty://example.com/{mine}/../{other}"),
        format!("hyperty://example.com/{mine}/%2e%2e/{other}"),
        format!("hyperty://example.com/{mine}/%2E./{other}"),
    ];
    let mut id = 1;
    for from in &probes {
        for to in [&hb, &rb_url] {
            refused(&mut ra, id, from, to).await;
            id += 1;
        }
    }
    // A dot segment in a recipient is refused the same way.
    refused(
        &mut ra,
        id,
        &ha,
        &format!("hyperty://example.com/{mine}/../{other}"),
    )
    .await;

    // The marker: a legitimate message sent after every probe is rB's next frame.
    ra.send(&json!({"id": "marker", "type": "PING", "from": ha, "to": hb}))
        .await;
    let next = rb.recv().await;
    assert_eq!(next["id"], "marker", "rB received a probe: {next}");
    assert_eq!(next["from"], ha.as_str());
}
