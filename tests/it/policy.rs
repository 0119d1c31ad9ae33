//! The policy proxy over WebSocket: every shipped example (`policy/examples/`) in its allowed and
//! its denied case, denials naming the policy, hot reload of a changed directory, refusal of an
//! invalid set (the previous one stays), and the admin reload endpoint.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rethink_node::Config;
use rethink_node::config::StaticToken;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{Rt, TestNode, sm_endpoint};

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

async fn ping(from: &mut Rt, fa: &str, to: &str) -> Option<Value> {
    let id = from.fresh_id();
    from.send(&json!({"id": id, "type": "PING", "from": fa, "to": to}))
        .await;
    from.try_recv(Duration::from_millis(300)).await
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
    let mut delivered = 0;
    while b.try_recv(Duration::from_millis(300)).await.is_some() {
        delivered += 1;
    }
    let mut refused = 0;
    while let Some(resp) = a.try_recv(Duration::from_millis(300)).await {
        assert_denied_by(&resp, "rate-limit");
        refused += 1;
    }
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
    let mut s = tokio::net::TcpStream::connect(node.addr()).await.unwrap();
    let req = format!(
        "POST /admin/policy/reload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    (
        status,
        out.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default(),
    )
}

async fn wait_for_ping_outcome(
    a: &mut Rt,
    b: &mut Rt,
    fa: &str,
    fb: &str,
    denied_by: Option<&str>,
) {
    for _ in 0..40 {
        match (ping(a, fa, fb).await, denied_by) {
            (Some(resp), Some(policy)) => {
                assert_denied_by(&resp, policy);
                return;
            }
            (None, None) => {
                b.recv().await;
                return;
            }
            (None, Some(_)) => {
                b.recv().await;
            }
            (Some(resp), None) => panic!("unexpected refusal {resp}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the policy change was not applied in time");
}

#[tokio::test]
async fn hot_reload_applies_changes_and_refuses_invalid_sets() {
    let dir = tempfile::TempDir::new().unwrap();
    for f in ["schema.cedarschema", "policies.cedar", "entities.json"] {
        let from = example("intra-domain").join(f);
        if from.exists() {
            std::fs::copy(&from, dir.path().join(f)).unwrap();
        }
    }
    let admin = "admin-token-0123456789";
    let node = policy_node(dir.path(), |c| {
        c.policy.watch_interval = Duration::from_millis(100);
        c.admin.token = Some(admin.into());
    })
    .await;
    let (mut a, fa) = user(&node, None, "rt-a").await;
    let (mut b, fb) = user(&node, None, "rt-b").await;
    wait_for_ping_outcome(&mut a, &mut b, &fa, &fb, None).await;

    // A new file: the watcher picks it up and the next messages see it.
    std::fs::write(
        dir.path().join("zz-deny.cedar"),
        "@id(\"deny-ping\")\nforbid(principal, action, resource) when { context.message_type == \"PING\" };\n",
    )
    .unwrap();
    wait_for_ping_outcome(&mut a, &mut b, &fa, &fb, Some("deny-ping")).await;

    // An invalid file is refused with its name and line; the previous set stays in force.
    std::fs::write(
        dir.path().join("zz-deny.cedar"),
        "@id(\"deny-ping\")\nforbid(principal, action, resource) when { context.no_such_fact };\n",
    )
    .unwrap();
    let (status, body) = admin_reload(&node, admin).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("zz-deny.cedar"), "names the file: {body}");
    assert!(body.contains(":2:"), "names the line: {body}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let resp = ping(&mut a, &fa, &fb)
        .await
        .expect("still denied by the previous set");
    assert_denied_by(&resp, "deny-ping");

    // Fixed and reloaded through the admin endpoint.
    std::fs::remove_file(dir.path().join("zz-deny.cedar")).unwrap();
    let (status, body) = admin_reload(&node, admin).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"policies\""), "{body}");
    wait_for_ping_outcome(&mut a, &mut b, &fa, &fb, None).await;

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
