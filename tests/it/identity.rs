//! `body.assertedIdentity`: set by the node, true only when `body.identity` is the identity the
//! sender's session proved; a sender cannot set it itself.

use rethink_node::config::StaticToken;
use serde_json::{Value, json};

use crate::support::{Rt, TestNode};

async fn node() -> TestNode {
    TestNode::spawn_with(|c| {
        c.auth.tokens = vec![StaticToken {
            token: "alice-token-0123456789".into(),
            subject: "user://example.com/alice".into(),
            runtime: None,
        }];
    })
    .await
}

async fn relay(from: &mut Rt, to: &mut Rt, fa: &str, fb: &str, body: Value) -> Value {
    from.send(&json!({"id": 1, "type": "PING", "from": fa, "to": fb, "body": body}))
        .await;
    to.recv().await["body"].clone()
}

#[tokio::test]
async fn asserted_only_when_the_claim_is_the_proven_identity() {
    let node = node().await;
    let mut alice = Rt::connect(&node, "rt-alice").await;
    let opened = alice
        .open_session(json!({"token": "alice-token-0123456789"}))
        .await;
    assert_eq!(opened["body"]["code"], 200);
    let mut bob = Rt::open(&node, "rt-bob").await;
    let fa = alice.allocate(1).await.remove(0);
    let fb = bob.allocate(1).await.remove(0);

    let body = relay(
        &mut alice,
        &mut bob,
        &fa,
        &fb,
        json!({"identity": "user://example.com/alice", "m": 1}),
    )
    .await;
    assert_eq!(body["assertedIdentity"], true);
    assert_eq!(body["m"], 1, "the rest of the body is kept");

    let body = relay(
        &mut alice,
        &mut bob,
        &fa,
        &fb,
        json!({"identity": {"userProfile": {"userURL": "user://example.com/alice"}}}),
    )
    .await;
    assert_eq!(body["assertedIdentity"], true, "object form");

    let body = relay(
        &mut alice,
        &mut bob,
        &fa,
        &fb,
        json!({"identity": "user://example.com/mallory"}),
    )
    .await;
    assert_eq!(
        body["assertedIdentity"], false,
        "a claim that is not the proven identity"
    );

    // Anonymous bob cannot assert anything, not even by writing the flag himself.
    let body = relay(
        &mut bob,
        &mut alice,
        &fb,
        &fa,
        json!({"identity": "user://example.com/alice", "assertedIdentity": true}),
    )
    .await;
    assert_eq!(body["assertedIdentity"], false);
    let body = relay(
        &mut bob,
        &mut alice,
        &fb,
        &fa,
        json!({"assertedIdentity": true}),
    )
    .await;
    assert_eq!(body["assertedIdentity"], false);

    // Without either field the message passes untouched.
    let body = relay(&mut bob, &mut alice, &fb, &fa, json!({"plain": true})).await;
    assert_eq!(body, json!({"plain": true}));
}
