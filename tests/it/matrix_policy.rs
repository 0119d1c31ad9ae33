//! The policy proxy over the Matrix API: `matrix:createRoom`, `matrix:join`, `matrix:invite`,
//! `matrix:send` and `matrix:state` pass the same enforcement point as bus messages. A denial is
//! 403 `M_FORBIDDEN` naming the policy, and changes nothing. The shipped examples whose rules can
//! apply to Matrix actions are checked in both cases; the others (their rules name hyperty
//! targets, anonymous sessions, subscriptions or foreign senders, none of which a local Matrix
//! client can produce) are checked to leave Matrix traffic allowed.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::support::matrix::{
    V3, assert_error, bodies, create_room, post, put, register, send_text, user_id, whole_history,
};
use crate::support::{DOMAIN, TestNode};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../policy/examples")
        .join(name)
}

async fn policy_node(dir: &Path) -> TestNode {
    let dir = dir.to_path_buf();
    TestNode::spawn_with(move |c| c.policy.dir = Some(dir)).await
}

fn assert_denied_by(answer: &(u16, Value), policy: &str) {
    assert_error(answer, 403, "M_FORBIDDEN");
    let error = answer.1["error"].as_str().unwrap_or_default();
    assert!(error.contains(policy), "the denial names {policy}: {error}");
}

async fn member_ids(node: &TestNode, token: &str, room: &str) -> Vec<String> {
    let (_, members) =
        crate::support::matrix::get(node, &format!("{V3}/rooms/{room}/members"), token).await;
    members["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{}={}",
                e["state_key"].as_str().unwrap(),
                e["content"]["membership"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test]
async fn intra_domain_allows_local_rooms_and_denies_inviting_another_domain() {
    let node = policy_node(&example("intra-domain")).await;
    let alice = register(&node, "alice").await;
    let bob = register(&node, "bob").await;
    let room = create_room(&node, &alice, &json!({"preset": "public_chat"})).await;
    post(&node, &format!("{V3}/rooms/{room}/join"), &bob, &json!({})).await;
    send_text(&node, &alice, &room, "t1", "local").await;
    let before = member_ids(&node, &alice, &room).await;

    let answer = post(
        &node,
        &format!("{V3}/rooms/{room}/invite"),
        &alice,
        &json!({"user_id": "@carol:other.org"}),
    )
    .await;
    assert_denied_by(&answer, "cross-domain");
    assert_eq!(
        member_ids(&node, &alice, &room).await,
        before,
        "nothing changed"
    );
}

#[tokio::test]
async fn rate_limit_refuses_the_121st_matrix_action_in_a_minute() {
    let node = policy_node(&example("rate-limit")).await;
    let alice = register(&node, "alice").await;
    let room = create_room(&node, &alice, &json!({})).await; // action 1
    let mut accepted = 0;
    let mut denial = None;
    for i in 0..125 {
        let path = format!("{V3}/rooms/{room}/send/m.room.message/rate-{i}");
        let answer = put(
            &node,
            &path,
            &alice,
            &json!({"msgtype": "m.text", "body": format!("m{i}")}),
        )
        .await;
        if answer.0 == 200 {
            accepted += 1;
        } else {
            denial = Some(answer);
            break;
        }
    }
    assert_eq!(accepted, 119, "createRoom plus 119 sends make 120 actions");
    assert_denied_by(&denial.expect("a denial"), "rate-limit");
    let history = whole_history(&node, &alice, &room).await;
    assert_eq!(
        bodies(&history).len(),
        119,
        "the refused message is not stored"
    );
}

#[tokio::test]
async fn examples_about_hyperties_sessions_and_subscriptions_leave_matrix_traffic_allowed() {
    for name in [
        "anonymous",
        "blocklist",
        "listed-domains",
        "object-owner",
        "working-hours",
    ] {
        let node = policy_node(&example(name)).await;
        let alice = register(&node, "alice").await;
        let bob = register(&node, "bob").await;
        let room = create_room(&node, &alice, &json!({"invite": [user_id("bob")]})).await;
        let joined = post(&node, &format!("{V3}/rooms/{room}/join"), &bob, &json!({})).await;
        assert_eq!(joined.0, 200, "{name}: {}", joined.1);
        send_text(&node, &bob, &room, "t1", "hello").await;
        let history = whole_history(&node, &alice, &room).await;
        assert_eq!(bodies(&history), ["hello"], "{name}");
    }
}

const MALLORY_POLICIES: &str = r#"
@id("allow-all")
permit(principal, action, resource);

@id("no-rooms-for-mallory")
forbid(principal == Rethink::User::"@mallory:example.com",
       action == Rethink::Action::"matrix:createRoom", resource);

@id("mallory-may-not-join")
forbid(principal == Rethink::User::"@mallory:example.com",
       action == Rethink::Action::"matrix:join", resource);

@id("bob-read-only")
forbid(principal == Rethink::User::"@bob:example.com",
       action in [Rethink::Action::"matrix:send", Rethink::Action::"matrix:state",
                  Rethink::Action::"matrix:invite"], resource);
"#;

#[tokio::test]
async fn each_matrix_action_is_decided_and_a_denial_changes_nothing() {
    assert_eq!(
        DOMAIN, "example.com",
        "the policies name users of example.com"
    );
    let dir = crate::support::policy_dir(MALLORY_POLICIES);
    let node = policy_node(dir.path()).await;
    let alice = register(&node, "alice").await;
    let bob = register(&node, "bob").await;
    let mallory = register(&node, "mallory").await;
    register(&node, "carol").await;

    // createRoom
    assert_denied_by(
        &post(&node, &format!("{V3}/createRoom"), &mallory, &json!({})).await,
        "no-rooms-for-mallory",
    );
    let (_, rooms) =
        crate::support::matrix::get(&node, &format!("{V3}/joined_rooms"), &mallory).await;
    assert_eq!(rooms["joined_rooms"], json!([]));

    // join
    let room = create_room(
        &node,
        &alice,
        &json!({"preset": "public_chat", "name": "Lobby"}),
    )
    .await;
    assert_denied_by(
        &post(
            &node,
            &format!("{V3}/rooms/{room}/join"),
            &mallory,
            &json!({}),
        )
        .await,
        "mallory-may-not-join",
    );
    assert!(
        post(&node, &format!("{V3}/rooms/{room}/join"), &bob, &json!({}))
            .await
            .0
            == 200
    );

    // send, state and invite by bob; alice is unaffected
    let before = whole_history(&node, &alice, &room).await.len();
    let send = put(
        &node,
        &format!("{V3}/rooms/{room}/send/m.room.message/b1"),
        &bob,
        &json!({"msgtype": "m.text", "body": "no"}),
    )
    .await;
    assert_denied_by(&send, "bob-read-only");
    let state = put(
        &node,
        &format!("{V3}/rooms/{room}/state/m.room.topic/"),
        &bob,
        &json!({"topic": "x"}),
    )
    .await;
    assert_denied_by(&state, "bob-read-only");
    let invite = post(
        &node,
        &format!("{V3}/rooms/{room}/invite"),
        &bob,
        &json!({"user_id": user_id("carol")}),
    )
    .await;
    assert_denied_by(&invite, "bob-read-only");
    assert_eq!(
        whole_history(&node, &alice, &room).await.len(),
        before,
        "nothing stored"
    );
    send_text(&node, &alice, &room, "a1", "alice may").await;
    assert_eq!(
        bodies(&whole_history(&node, &bob, &room).await),
        ["alice may"]
    );
}

const NINA_POLICIES: &str = r#"
@id("allow-all")
permit(principal, action, resource);

@id("no-rooms-for-nina")
forbid(principal == Rethink::User::"user://login.example.org/nina",
       action == Rethink::Action::"matrix:createRoom", resource);
"#;

#[tokio::test]
async fn the_principal_of_a_jwt_account_is_its_verified_identity() {
    use crate::support::jwt::{ISS, KEYS, issuer, now, sign};
    let keys = tempfile::tempdir().unwrap();
    let policies = crate::support::policy_dir(NINA_POLICIES);
    let jwt_issuer = issuer(keys.path(), "rethink-matrix", 0);
    let dir = policies.path().to_path_buf();
    let node = TestNode::spawn_with(move |c| {
        c.policy.dir = Some(dir);
        c.auth.jwt = vec![jwt_issuer];
        c.matrix.jwt_create_accounts = true;
    })
    .await;
    let now = now().cast_signed();
    let claims =
        json!({"iss": ISS, "aud": "rethink-matrix", "sub": "nina", "exp": now + 600, "iat": now});
    let token = sign(jsonwebtoken::Algorithm::RS256, &KEYS.0.encoding, &claims);
    let login = crate::support::matrix::call(
        &node,
        "POST",
        &format!("{V3}/login"),
        None,
        Some(
            json!({"type": "org.matrix.login.jwt", "token": token})
                .to_string()
                .as_bytes(),
        ),
    )
    .await;
    assert_eq!(login.0, 200, "{}", login.1);
    let nina = login.1["access_token"].as_str().unwrap().to_owned();
    assert_denied_by(
        &post(&node, &format!("{V3}/createRoom"), &nina, &json!({})).await,
        "no-rooms-for-nina",
    );
    // The same policy set lets a password account create rooms.
    let alice = register(&node, "alice").await;
    create_room(&node, &alice, &json!({})).await;
}
