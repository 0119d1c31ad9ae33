//! The Matrix client API's rate limiter (`[matrix.rate_limit]`) and application services'
//! `rate_limited`, against the real node: an ordinary user gets 429 `M_LIMIT_EXCEEDED` with
//! `retry_after_ms` past their room-send bucket, to-device sends, logins and registrations
//! have theirs; a
//! service registered with `rate_limited: false` is not limited, as itself or masquerading,
//! while one with `rate_limited: true` is.

use rethink_node::config::{RateLimitConfig, RawBucket};
use serde_json::{Value, json};

use super::appservice_support::{AS_TOKEN, HS_TOKEN, registration};
use super::support::TestNode;
use super::support::matrix::{
    V3, anon_post, assert_error, create_room, invite, ok, password_login, post, put, register,
    room_path, send_path, text, urlencode, user_id,
};

const OTHER_AS: &str = "as-token-other-0123456789";
const OTHER_HS: &str = "hs-token-other-0123456789";

/// Buckets that cannot refill within a test: 5 room sends and 3 to-device requests per user, 2
/// logins per user, 4 registration requests for the node.
fn tight() -> RateLimitConfig {
    let bucket = |burst| {
        Some(RawBucket {
            per_second: 0.001,
            burst,
        })
    };
    RateLimitConfig {
        room_sends: bucket(5),
        to_device_sends: bucket(3),
        logins: bucket(2),
        registrations: bucket(4),
    }
}

/// A node with the limiter on, the `bridge` service (`rate_limited: false`) and the `other`
/// service (`rate_limited: true`), neither with a url.
async fn node() -> (TestNode, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("bridge.yaml"),
        registration("bridge", None, AS_TOKEN, HS_TOKEN),
    )
    .expect("write");
    std::fs::write(
        dir.path().join("other.yaml"),
        registration("other", None, OTHER_AS, OTHER_HS)
            .replace("rate_limited: false", "rate_limited: true"),
    )
    .expect("write");
    let path = dir.path().to_path_buf();
    let node = TestNode::spawn_with(|c| {
        c.appservices.dir = Some(path);
        c.matrix.rate_limit = tight();
    })
    .await;
    (node, dir)
}

fn as_user(path: &str, user: &str) -> String {
    format!("{path}?user_id={}", urlencode(user))
}

/// Sends message `i` to `room` with `token` (on `path_of`); the answer.
async fn send(node: &TestNode, token: &str, path: &str) -> (u16, Value) {
    put(node, path, token, &text("hi")).await
}

fn assert_limited(answer: &(u16, Value)) {
    assert_error(answer, 429, "M_LIMIT_EXCEEDED");
    let wait = answer.1["retry_after_ms"].as_u64().expect("retry_after_ms");
    assert!(wait > 0, "{}", answer.1);
}

#[tokio::test]
async fn an_ordinary_user_is_limited_and_a_service_with_rate_limited_false_is_not() {
    let (node, _dir) = node().await;
    let alice = register(&node, "alice").await;
    let room = create_room(&node, &alice, &json!({})).await;
    for i in 0..5 {
        ok(send(&node, &alice, &send_path(&room, &format!("a{i}"))).await);
    }
    assert_limited(&send(&node, &alice, &send_path(&room, "a5")).await);
    // State events count too.
    assert_limited(
        &put(
            &node,
            &room_path(&room, "state/m.room.topic/"),
            &alice,
            &json!({"topic": "t"}),
        )
        .await,
    );

    // The bridge registers its user, which joins and sends far past the bucket, as does the
    // bridge's own sender.
    ok(post(
        &node,
        &format!("{V3}/register"),
        AS_TOKEN,
        &json!({"type": "m.login.application_service", "username": "bridge_bob"}),
    )
    .await);
    let bob = user_id("bridge_bob");
    let open = create_room(&node, &alice, &json!({"preset": "public_chat"})).await;
    ok(post(
        &node,
        &as_user(&format!("{V3}/join/{}", urlencode(&open)), &bob),
        AS_TOKEN,
        &json!({}),
    )
    .await);
    for i in 0..20 {
        let path = as_user(&send_path(&open, &format!("b{i}")), &bob);
        ok(send(&node, AS_TOKEN, &path).await);
    }
    let own = create_room(&node, AS_TOKEN, &json!({})).await;
    for i in 0..20 {
        ok(send(&node, AS_TOKEN, &send_path(&own, &format!("s{i}"))).await);
    }

    // The other service is rate limited: its sender stops after the bucket.
    let theirs = create_room(&node, OTHER_AS, &json!({})).await;
    for i in 0..5 {
        ok(send(&node, OTHER_AS, &send_path(&theirs, &format!("o{i}"))).await);
    }
    assert_limited(&send(&node, OTHER_AS, &send_path(&theirs, "o5")).await);
    // Alice's bucket did not move meanwhile: still limited, and invites are not sends.
    assert_limited(&send(&node, &alice, &send_path(&room, "a6")).await);
    invite(&node, &alice, &room, &bob).await;
}

#[tokio::test]
async fn logins_and_registrations_have_their_buckets() {
    let (node, _dir) = node().await;
    // Two registration requests each (the dummy flow's two steps): two users fill the bucket.
    register(&node, "alice").await;
    register(&node, "carol").await;
    let refused = anon_post(
        &node,
        &format!("{V3}/register"),
        &json!({"username": "dave", "password": "pw-dave-0123",
            "auth": {"type": "m.login.dummy"}}),
    )
    .await;
    assert_limited(&refused);
    // The bridge (rate_limited: false) still registers its users.
    ok(post(
        &node,
        &format!("{V3}/register"),
        AS_TOKEN,
        &json!({"type": "m.login.application_service", "username": "bridge_eve"}),
    )
    .await);

    // Two logins of alice, then 429; carol's bucket is her own.
    let login = format!("{V3}/login");
    for _ in 0..2 {
        ok(anon_post(&node, &login, &password_login("alice", "pw-alice")).await);
    }
    assert_limited(&anon_post(&node, &login, &password_login("alice", "pw-alice")).await);
    ok(anon_post(&node, &login, &password_login("carol", "pw-carol")).await);
}

#[tokio::test]
async fn to_device_sends_have_their_bucket() {
    let (node, _dir) = node().await;
    let alice = register(&node, "alice").await;
    let messages = json!({"messages": {user_id("alice"): {"*": {"n": 1}}}});
    for i in 0..3 {
        ok(put(
            &node,
            &format!("{V3}/sendToDevice/org.example.n/t{i}"),
            &alice,
            &messages,
        )
        .await);
    }
    assert_limited(
        &put(
            &node,
            &format!("{V3}/sendToDevice/org.example.n/t3"),
            &alice,
            &messages,
        )
        .await,
    );
    // Room sends are another bucket.
    let room = create_room(&node, &alice, &json!({})).await;
    ok(send(&node, &alice, &send_path(&room, "r0")).await);
}
