//! The Matrix side of a WebAssembly connector (`[connectors.<name>.matrix]`), with the echo bot
//! of `stubs/guests/echo-connector` run by the real node: a Matrix user invites the bot, which
//! joins and answers as its namespaced user; it cannot act outside its namespace (403 from the
//! host); an ordinary user cannot register in its exclusive namespace (`M_EXCLUSIVE`).

use std::collections::BTreeMap;
use std::path::Path;

use rethink_node::Config;
use rethink_node::config::{RawConfig, RawConnector, RawConnectorMatrix};
use serde_json::{Value, json};

use super::support::DOMAIN;
use super::support::client::RECV_TIMEOUT;
use super::support::matrix::{
    V3, anon_post, assert_error, create_room, get, invite, next_batch, ok, register, send_text,
    user_id,
};
use super::support::node::TestNode;

/// `[connectors.echo]`: the echo bot, users `@echo.*` exclusively.
fn with_echo(c: &mut Config) {
    let component = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../stubs/guests/echo-connector/echo-connector.wasm");
    let connector = RawConnector {
        component: Some(component),
        namespaces: Some(vec![format!("domain://echo.{DOMAIN}")]),
        matrix: Some(RawConnectorMatrix {
            users: vec![format!("@echo.*:{}", DOMAIN.replace('.', "\\."))],
            ..RawConnectorMatrix::default()
        }),
        ..RawConnector::default()
    };
    let raw = RawConfig {
        domain: DOMAIN.into(),
        listen: "127.0.0.1:0".into(),
        data_dir: c.data_dir.clone(),
        connectors: BTreeMap::from([("echo".to_owned(), connector)]),
        ..RawConfig::default()
    };
    let valid = raw.validate().expect("valid connectors");
    c.stubs = valid.stubs;
    c.appservices.connectors = valid.appservices.connectors;
}

/// Long-polls `/sync` until an event of `room`'s timeline matches `want`; that event.
async fn next_event(
    node: &TestNode,
    token: &str,
    since: &mut String,
    room: &str,
    want: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no such event in {room}"
        );
        let body = ok(get(
            node,
            &format!("{V3}/sync?timeout=2000&since={since}"),
            token,
        )
        .await);
        *since = next_batch(&body);
        let events = body["rooms"]["join"][room]["timeline"]["events"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if let Some(e) = events.into_iter().find(|e| want(e)) {
            return e;
        }
    }
}

/// The body of the next text message from `sender` in `room`.
async fn next_text_from(
    node: &TestNode,
    token: &str,
    since: &mut String,
    room: &str,
    sender: &str,
) -> String {
    let e = next_event(node, token, since, room, |e| {
        e["sender"] == sender && e["type"] == "m.room.message"
    })
    .await;
    e["content"]["body"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn the_echo_connector_answers_as_its_user_and_only_as_its_users() {
    let node = TestNode::spawn_with(with_echo).await;
    let alice = register(&node, "alice").await;
    let bot = user_id("echo");
    let room = create_room(&node, &alice, &json!({})).await;
    let mut since = next_batch(&ok(
        get(&node, &format!("{V3}/sync?timeout=0"), &alice).await
    ));

    invite(&node, &alice, &room, &bot).await;
    // The bot joins on the invite (what happens in the room concerns it once it is a member).
    next_event(&node, &alice, &mut since, &room, |e| {
        e["type"] == "m.room.member"
            && e["state_key"] == bot
            && e["content"]["membership"] == "join"
    })
    .await;
    send_text(&node, &alice, &room, "t1", "hi").await;
    assert_eq!(
        next_text_from(&node, &alice, &mut since, &room, &bot).await,
        "echo: hi"
    );

    // Acting as a user outside its namespace: the host refuses (403).
    send_text(
        &node,
        &alice,
        &room,
        "t2",
        &format!("!as {}", user_id("alice")),
    )
    .await;
    assert_eq!(
        next_text_from(&node, &alice, &mut since, &room, &bot).await,
        "refused 403"
    );
    // An ordinary user cannot take a name in the exclusive namespace.
    let answer = anon_post(
        &node,
        &format!("{V3}/register"),
        &json!({"username": "echo_fake", "password": "pw-echo-fake"}),
    )
    .await;
    assert_error(&answer, 400, "M_EXCLUSIVE");
}
