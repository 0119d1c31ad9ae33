//! The Matrix side of a WebAssembly connector (`[connectors.<name>.matrix]`), with the echo bot
//! of `stubs/guests/echo-connector` run by the real node: a Matrix user invites the bot, which
//! joins and answers as its namespaced user; it cannot act outside its namespace (403 from the
//! host); an ordinary user cannot register in its exclusive namespace (`M_EXCLUSIVE`); it
//! creates rooms with aliases in its alias namespace only, and a matrix-sdk client joins one by
//! its alias; an event whose `on-event` traps is given to the next instance, and one that traps
//! every time is skipped after its tries (counted). The connector's feed across a killed node:
//! `connector_feed.rs`.

use std::collections::BTreeMap;
use std::path::Path;

use rethink_node::Config;
use rethink_node::config::{RawConfig, RawConnector, RawConnectorMatrix};
use serde_json::{Value, json};

use super::support::DOMAIN;
use super::support::client::RECV_TIMEOUT;
use super::support::matrix::{
    V3, anon_post, assert_error, create_room, get, invite, next_batch, ok, post, register,
    sdk_login, send_text, user_id,
};
use super::support::node::TestNode;
use super::support::wait_for_metric;

/// `[connectors.echo]`: the echo bot, users `@echo.*` exclusively.
fn with_echo(c: &mut Config) {
    with_echo_aliases(c, Vec::new());
}

/// [`with_echo`], with the alias namespace `aliases` (regexes).
fn with_echo_aliases(c: &mut Config, aliases: Vec<String>) {
    let component = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../stubs/guests/echo-connector/echo-connector.wasm");
    let connector = RawConnector {
        component: Some(component),
        namespaces: Some(vec![format!("domain://echo.{DOMAIN}")]),
        matrix: Some(RawConnectorMatrix {
            users: vec![format!("@echo.*:{}", DOMAIN.replace('.', "\\."))],
            aliases,
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

/// Alice, a room of hers the bot joined, and a `/sync` position after the join.
async fn room_with_the_bot(node: &TestNode) -> (String, String, String) {
    let alice = register(node, "alice").await;
    let room = create_room(node, &alice, &json!({})).await;
    let mut since = next_batch(&ok(get(node, &format!("{V3}/sync?timeout=0"), &alice).await));
    invite(node, &alice, &room, &user_id("echo")).await;
    next_event(node, &alice, &mut since, &room, |e| {
        e["type"] == "m.room.member"
            && e["state_key"] == user_id("echo")
            && e["content"]["membership"] == "join"
    })
    .await;
    (alice, room, since)
}

#[tokio::test]
async fn a_trapping_event_is_given_again_and_a_poisonous_one_is_skipped() {
    let node = TestNode::spawn_with(with_echo).await;
    let (alice, room, mut since) = room_with_the_bot(&node).await;
    let bot = user_id("echo");
    // Traps once: the next instance gets the same event and answers.
    send_text(&node, &alice, &room, "t1", "!trap-once").await;
    assert_eq!(
        next_text_from(&node, &alice, &mut since, &room, &bot).await,
        "recovered"
    );
    // Traps every time: skipped after its tries; what follows is handled, in order.
    send_text(&node, &alice, &room, "t2", "!trap").await;
    send_text(&node, &alice, &room, "t3", "after").await;
    assert_eq!(
        next_text_from(&node, &alice, &mut since, &room, &bot).await,
        "echo: after"
    );
    wait_for_metric(
        &node,
        "rethink_stub_events_skipped_total{stub=\"echo\"}",
        1.0,
    )
    .await;
    wait_for_metric(
        &node,
        "rethink_stub_failures_total{stub=\"echo\",reason=\"trap\"}",
        f64::from(1 + rethink_stubs::MAX_EVENT_TRIES),
    )
    .await;
}

#[tokio::test]
async fn the_connector_creates_rooms_with_aliases_of_its_namespace_only() {
    let aliases = vec![format!("#echo_.*:{}", DOMAIN.replace('.', "\\."))];
    let node = TestNode::spawn_with(|c| with_echo_aliases(c, aliases)).await;
    let (alice, room, mut since) = room_with_the_bot(&node).await;
    let bot = user_id("echo");
    send_text(&node, &alice, &room, "t1", "!room echo_lobby").await;
    let answer = next_text_from(&node, &alice, &mut since, &room, &bot).await;
    let lobby = answer
        .strip_prefix("room ")
        .unwrap_or_else(|| panic!("a room: {answer}"))
        .to_owned();
    // A real Matrix client joins it by its alias.
    register(&node, "bob").await;
    let bob = sdk_login(&node, "bob").await;
    let alias =
        matrix_sdk::ruma::OwnedRoomOrAliasId::try_from(format!("#echo_lobby:{DOMAIN}")).unwrap();
    let joined = bob
        .join_room_by_id_or_alias(&alias, &[])
        .await
        .expect("bob joins by alias");
    assert_eq!(joined.room_id().as_str(), lobby);
    // Outside its alias namespace: refused by the host (403), no room made.
    send_text(&node, &alice, &room, "t2", "!room lobby").await;
    assert_eq!(
        next_text_from(&node, &alice, &mut since, &room, &bot).await,
        "refused 403"
    );
    let missing = get(
        &node,
        &format!("{V3}/directory/room/%23lobby:{DOMAIN}"),
        &alice,
    )
    .await;
    assert_error(&missing, 404, "M_NOT_FOUND");
    // An ordinary user cannot take an alias of the connector's exclusive namespace.
    let taken = post(
        &node,
        &format!("{V3}/createRoom"),
        &alice,
        &json!({"room_alias_name": "echo_mine"}),
    )
    .await;
    assert_error(&taken, 400, "M_EXCLUSIVE");
}
