//! The policy proxy over WebSocket: every shipped example (`policy/examples/`) in its allowed and
//! its denied case, denials naming the policy, hot reload of a changed directory, refusal of an
//! invalid set (the previous one stays), and the admin reload endpoint. Acceptance is shown by a
//! marker ([`Rt::drain`]: no refusal came before it), reloads by the reload counter.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rethink_node::Config;
use rethink_node::config::StaticToken;
use serde_json::{Value, json};

use crate::support::http::metric_if_any;
use crate::support::{Rt, TestNode, get, sm_endpoint, wait_for_metric};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../policy/examples")
        .join(name)
}

const USERS: [&str; 3] = ["alice", "bob", "mallory"];

fn token(user: &str) -> String {
    format!("{user}-token-0123456789")
}

/// Tuesday 2026-11-24 10:30 UTC and Saturday 2026-11-28 10:30 UTC.
const TUESDAY_MORNING: i64 = 1_795_516_200;
const SATURDAY_MORNING: i64 = TUESDAY_MORNING + 4 * 86_400;

fn with_policy(c: &mut Config, dir: &Path) {
    c.policy.dir = Some(dir.to_path_buf());
    c.auth.tokens = USERS
        .iter()
        .map(|u| StaticToken {
            token: token(u),
            subject: format!("user://example.com/{u}"),
            runtime: None,
        })
        .collect();
}

async fn policy_node(dir: &Path, edit: impl FnOnce(&mut Config)) -> TestNode {
    TestNode::spawn_with(|c| {
        with_policy(c, dir);
        edit(c);
    })
    .await
}

/// A runtime authenticated as `user` (or anonymous), with one hyperty address.
async fn user(node: &TestNode, user: Option<&str>, rt: &str) -> (Rt, String) {
    let mut r = Rt::connect(node, rt).await;
    let body = user.map_or(json!({}), |u| json!({"token": token(u)}));
    let opened = r.open_session(body).await;
    assert_eq!(opened["body"]["code"], 200, "{opened}");
    let addr = r.allocate(1).await.remove(0);
    (r, addr)
}

/// Sends a PING; returns its refusal, or `None` when it was accepted (nothing came back before
/// a marker sent after it).
async fn ping(from: &mut Rt, fa: &str, to: &str) -> Option<Value> {
    let id = from.fresh_id();
    from.send(&json!({"id": id, "type": "PING", "from": fa, "to": to}))
        .await;
    let mut frames = from.drain().await;
    assert!(frames.len() <= 1, "one answer at most: {frames:?}");
    let refusal = frames.pop()?;
    assert_eq!(refusal["id"], id, "{refusal}");
    Some(refusal)
}

fn assert_denied_by(resp: &Value, policy: &str) {
    assert_eq!(resp["body"]["code"], 403, "{resp}");
    let desc = resp["body"]["description"].as_str().unwrap_or_default();
    assert!(desc.contains(policy), "the denial names {policy}: {desc}");
}

#[tokio::test]
async fn intra_domain_allows_local_and_denies_other_domains() {
    let node = policy_node(&example("intra-domain"), |_| {}).await;
    let (mut a, fa) = user(&node, None, "rt-a").await;
    let (mut b, fb) = user(&node, None, "rt-b").await;
    assert!(ping(&mut a, &fa, &fb).await.is_none(), "no refusal");
    assert_eq!(b.recv().await["from"], json!(fa));
    let resp = ping(&mut a, &fa, "hyperty://other.org/x")
        .await
        .expect("refusal");
    assert_denied_by(&resp, "cross-domain");
}

#[tokio::test]
async fn listed_domains_lets_the_home_domain_through() {
    // Over WebSocket every sender is of the home domain (a runtime cannot send from another
    // domain: anti-spoofing), so only the allowed case exists here; the denied case is decided
    // in policy/tests/examples.rs for a sender of another domain.
    let node = policy_node(&example("listed-domains"), |_| {}).await;
    let (mut a, fa) = user(&node, None, "rt-a").await;
    let (mut b, fb) = user(&node, None, "rt-b").await;
    assert!(ping(&mut a, &fa, &fb).await.is_none());
    assert_eq!(b.recv().await["from"], json!(fa));
}

#[tokio::test]
async fn working_hours_protect_staff_on_weekends() {
    for (time, staff_reachable) in [(TUESDAY_MORNING, true), (SATURDAY_MORNING, false)] {
        let node = policy_node(&example("working-hours"), |c| {
            c.policy.fixed_time = Some(time)
        })
        .await;
        let (mut alice, fa) = user(&node, Some("alice"), "rt-alice").await;
        let (mut bob, fb) = user(&node, Some("bob"), "rt-bob").await;
        match ping(&mut bob, &fb, &fa).await {
            None => {
                assert!(staff_reachable);
                assert_eq!(alice.recv().await["from"], json!(fb));
            }
            Some(resp) => {
                assert!(!staff_reachable, "{resp}");
                assert_denied_by(&resp, "staff-off-hours");
                alice.expect_nothing_queued().await;
            }
        }
        // bob is not staff: reachable at any time.
        assert!(ping(&mut alice, &fa, &fb).await.is_none());
        assert_eq!(bob.recv().await["from"], json!(fa));
    }
}

#[tokio::test]
async fn blocklist_stops_blocked_users_only() {
    let node = policy_node(&example("blocklist"), |_| {}).await;
    let (mut alice, fa) = user(&node, Some("alice"), "rt-alice").await;
    let (mut bob, fb) = user(&node, Some("bob"), "rt-bob").await;
    let (mut mallory, fm) = user(&node, Some("mallory"), "rt-mallory").await;
    let resp = ping(&mut mallory, &fm, &fa).await.expect("refusal");
    assert_denied_by(&resp, "blocked-sender");
    assert!(ping(&mut bob, &fb, &fa).await.is_none());
    assert_eq!(
        alice.recv().await["from"],
        json!(fb),
        "only bob's message arrives"
    );
    // alice may still write to mallory.
    assert!(ping(&mut alice, &fa, &fm).await.is_none());
    assert_eq!(mallory.recv().await["from"], json!(fa));
}

#[tokio::test]
async fn object_subscription_needs_the_owners_consent() {
    let node = policy_node(&example("object-owner"), |_| {}).await;
    let changes = "comm://example.com/chat-1/changes";
    for (who, allowed) in [
        (Some("alice"), true),
        (Some("bob"), true),
        (Some("mallory"), false),
        (None, false),
    ] {
        let (mut rt, _) = user(&node, who, &format!("rt-{}", who.unwrap_or("anon"))).await;
        let resp = rt
            .request(
                json!({"type": "subscribe", "from": format!("{}/sm", rt.url),
                "to": sm_endpoint(), "body": {"resources": [changes]}}),
            )
            .await;
        if allowed {
            assert_eq!(resp["body"]["code"], 200, "{who:?}: {resp}");
        } else {
            assert_denied_by(&resp, "subscribe-needs-consent");
        }
    }
}

#[tokio::test]
async fn rate_limit_in_policy_refuses_the_excess() {
    let node = policy_node(&example("rate-limit"), |_| {}).await;
    let (mut a, fa) = user(&node, None, "rt-a").await;
    let (mut b, fb) = user(&node, None, "rt-b").await;
    for i in 0..130 {
        a.send(&json!({"id": i, "type": "PING", "from": fa, "to": fb}))
            .await;
    }
    // a's marker comes after every refusal; then all 130 are routed, and b's marker comes
    // after every delivery.
    let refusals = a.drain().await;
    for resp in &refusals {
        assert_denied_by(resp, "rate-limit");
    }
    let refused = refusals.len();
    let delivered = b.drain().await.len();
    assert_eq!(
        delivered + refused,
        130,
        "every message delivered or refused"
    );
    assert!(
        (110..=120).contains(&delivered),
        "the threshold (120/min) holds: {delivered}"
    );
}

#[tokio::test]
async fn anonymous_runtimes_only_allocate_and_reach_the_registry() {
    let node = policy_node(&example("anonymous"), |_| {}).await;
    let (mut anon, fa) = user(&node, None, "rt-anon").await; // allocation is allowed
    let (mut alice, fb) = user(&node, Some("alice"), "rt-alice").await;
    let resp = ping(&mut anon, &fa, &fb).await.expect("refusal");
    assert_denied_by(&resp, "anonymous-limited");
    alice.expect_nothing_queued().await;
    let reg = anon
        .request(json!({"type": "create", "from": fa, "to": "domain://registry.example.com"}))
        .await;
    assert_eq!(
        reg["body"]["code"], 404,
        "allowed by policy, then not served: {reg}"
    );
    assert!(
        ping(&mut alice, &fb, &fa).await.is_none(),
        "authenticated runtimes may"
    );
    assert_eq!(anon.recv().await["from"], json!(fb));
}

/// POST /admin/policy/reload with `token`; status and body.
async fn admin_reload(node: &TestNode, token: &str) -> (u16, String) {
    crate::support::http::post_at(node.addr(), "/admin/policy/reload", token).await
}

/// How many policy reloads ended with `result` ("ok" or "error") so far.
async fn reloads(node: &TestNode, result: &str) -> f64 {
    let (_, text) = get(node, "/metrics").await;
    let name = format!("rethink_policy_reloads_total{{result=\"{result}\"}}");
    metric_if_any(&text, &name).unwrap_or(0.0)
}

/// Writes `file` in `dir` at once (written beside, then renamed in), so that the watcher never
/// sees it half written.
fn put_file(dir: &Path, file: &str, text: &str) {
    let staging = tempfile::NamedTempFile::new_in(dir.parent().expect("a parent")).unwrap();
    std::fs::write(staging.path(), text).unwrap();
    staging.persist(dir.join(file)).unwrap();
}

#[tokio::test]
async fn hot_reload_applies_changes_and_refuses_invalid_sets() {
    let parent = tempfile::TempDir::new().unwrap();
    let dir = parent.path().join("policies");
    std::fs::create_dir(&dir).unwrap();
    for f in ["schema.cedarschema", "policies.cedar", "entities.json"] {
        let from = example("intra-domain").join(f);
        if from.exists() {
            std::fs::copy(&from, dir.join(f)).unwrap();
        }
    }
    let admin = "admin-token-0123456789";
    let node = policy_node(&dir, |c| {
        c.policy.watch_interval = Duration::from_millis(100);
        c.admin.token = Some(admin.into());
    })
    .await;
    let (mut a, fa) = user(&node, None, "rt-a").await;
    let (mut b, fb) = user(&node, None, "rt-b").await;
    assert!(ping(&mut a, &fa, &fb).await.is_none());
    b.recv().await;
    let (ok0, err0) = (reloads(&node, "ok").await, reloads(&node, "error").await);

    // A new file: the watcher picks it up (one reload) and the next messages see it.
    put_file(
        &dir,
        "zz-deny.cedar",
        "@id(\"deny-ping\")\nforbid(principal, action, resource) when { context.message_type == \"PING\" };\n",
    );
    wait_for_metric(
        &node,
        "rethink_policy_reloads_total{result=\"ok\"}",
        ok0 + 1.0,
    )
    .await;
    let resp = ping(&mut a, &fa, &fb).await.expect("refusal");
    assert_denied_by(&resp, "deny-ping");
    b.expect_nothing_queued().await;

    // An invalid file is refused with its name and line, by the admin endpoint and by the
    // watcher (two refusals); the previous set stays in force.
    put_file(
        &dir,
        "zz-deny.cedar",
        "@id(\"deny-ping\")\nforbid(principal, action, resource) when { context.no_such_fact };\n",
    );
    let (status, body) = admin_reload(&node, admin).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("zz-deny.cedar"), "names the file: {body}");
    assert!(body.contains(":2:"), "names the line: {body}");
    wait_for_metric(
        &node,
        "rethink_policy_reloads_total{result=\"error\"}",
        err0 + 2.0,
    )
    .await;
    let resp = ping(&mut a, &fa, &fb)
        .await
        .expect("still denied by the previous set");
    assert_denied_by(&resp, "deny-ping");

    // Fixed and reloaded through the admin endpoint: in force when it answers.
    std::fs::remove_file(dir.join("zz-deny.cedar")).unwrap();
    let (status, body) = admin_reload(&node, admin).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"policies\""), "{body}");
    assert!(ping(&mut a, &fa, &fb).await.is_none(), "allowed again");
    assert_eq!(b.recv().await["from"], json!(fa));

    let (status, _) = admin_reload(&node, "wrong-admin-token-xxxx").await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn admin_reload_is_off_without_a_token_and_needs_a_policy_dir() {
    let node = TestNode::spawn().await;
    let (status, body) = admin_reload(&node, "any-token-0123456789").await;
    assert_eq!(status, 404, "admin endpoints disabled: {body}");

    let admin = "admin-token-0123456789";
    let node = TestNode::spawn_with(|c| c.admin.token = Some(admin.into())).await;
    let (status, body) = admin_reload(&node, admin).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("policy.dir"),
        "names the missing setting: {body}"
    );
}
