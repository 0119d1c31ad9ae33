//! Application services (issue 12, external half) against the real node over real sockets, with
//! the service written in the test (`appservice_support`): transactions for the namespace only,
//! queued while the service is down and delivered in order once each; masquerading; exclusive
//! namespaces; the user and alias queries; the ping; a changed directory reloaded.

use serde_json::{Value, json};

use super::appservice_support::{
    AS_TOKEN, Received, Service, free_port, registration, write_bridge,
};
use super::support::DOMAIN;
use super::support::client::RECV_TIMEOUT;
use super::support::matrix::{
    V3, anon_post, assert_error, create_room, get, invite, ok, post, register, room_path,
    send_text, urlencode, user_id,
};
use super::support::node::TestNode;

/// A node with the `bridge` registration for a service on `port` (fast retries).
async fn node_with_bridge(port: u16) -> (TestNode, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    write_bridge(dir.path(), port);
    let path = dir.path().to_path_buf();
    let node = TestNode::spawn_with(|c| {
        c.appservices.dir = Some(path);
        c.appservices.initial_backoff = std::time::Duration::from_millis(20);
        c.appservices.max_backoff = std::time::Duration::from_millis(100);
    })
    .await;
    (node, dir)
}

/// The service registers `localpart` in its namespace.
async fn as_register(node: &TestNode, localpart: &str) -> (u16, Value) {
    post(
        node,
        &format!("{V3}/register"),
        AS_TOKEN,
        &json!({"type": "m.login.application_service", "username": localpart}),
    )
    .await
}

/// `path` with the service masquerading as `user`.
fn as_user(path: &str, user: &str) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}user_id={}", urlencode(user))
}

#[tokio::test]
async fn transactions_carry_the_namespace_only_and_wait_while_the_service_is_down() {
    let port = free_port();
    let (node, _dir) = node_with_bridge(port).await;
    let alice = register(&node, "alice").await;
    ok(as_register(&node, "bridge_bob").await);
    let bob = user_id("bridge_bob");

    let shared = create_room(&node, &alice, &json!({})).await;
    invite(&node, &alice, &shared, &bob).await;
    ok(post(
        &node,
        &as_user(&format!("{V3}/join/{}", urlencode(&shared)), &bob),
        AS_TOKEN,
        &json!({}),
    )
    .await);
    let private = create_room(&node, &alice, &json!({})).await;

    // The service is down: the node keeps the transactions.
    for (i, body) in ["one", "two", "three"].iter().enumerate() {
        send_text(&node, &alice, &shared, &format!("s{i}"), body).await;
        send_text(
            &node,
            &alice,
            &private,
            &format!("p{i}"),
            "not for the bridge",
        )
        .await;
    }
    let mut service = Service::start(port, node.addr()).await;
    let got = service.messages(3).await;
    assert_eq!(
        got,
        [("one"), ("two"), ("three")]
            .iter()
            .map(|b| (shared.clone(), (*b).to_owned()))
            .collect::<Vec<_>>(),
        "in order, once each, and nothing of the private room"
    );
    // Live now: a new message arrives, and still nothing of the other room.
    send_text(&node, &alice, &private, "p9", "still not for the bridge").await;
    send_text(&node, &alice, &shared, "s9", "four").await;
    assert_eq!(
        service.messages(1).await,
        [(shared.clone(), "four".to_owned())]
    );
}

#[tokio::test]
async fn the_service_acts_as_its_users_and_no_one_else() {
    let (node, _dir) = node_with_bridge(free_port()).await;
    let alice = register(&node, "alice").await;
    // Its sender, by default.
    let me = ok(get(&node, &format!("{V3}/account/whoami"), AS_TOKEN).await);
    assert_eq!(me["user_id"], user_id("bridgebot"));
    // A registered user of its namespace.
    ok(as_register(&node, "bridge_carol").await);
    let carol = user_id("bridge_carol");
    let me = ok(get(
        &node,
        &as_user(&format!("{V3}/account/whoami"), &carol),
        AS_TOKEN,
    )
    .await);
    assert_eq!(me["user_id"], carol);
    // Outside its namespace, or not registered, or a wrong token.
    let outside = get(
        &node,
        &as_user(&format!("{V3}/account/whoami"), &user_id("alice")),
        AS_TOKEN,
    )
    .await;
    assert_error(&outside, 403, "M_FORBIDDEN");
    let unknown = get(
        &node,
        &as_user(&format!("{V3}/account/whoami"), &user_id("bridge_nobody")),
        AS_TOKEN,
    )
    .await;
    assert_error(&unknown, 403, "M_FORBIDDEN");
    let wrong = get(&node, &format!("{V3}/account/whoami"), "as-token-of-nobody").await;
    assert_error(&wrong, 401, "M_UNKNOWN_TOKEN");
    // Registering outside its namespace, or without its token.
    assert_error(&as_register(&node, "dave").await, 400, "M_EXCLUSIVE");
    let no_token = anon_post(
        &node,
        &format!("{V3}/register"),
        &json!({"type": "m.login.application_service", "username": "bridge_x"}),
    )
    .await;
    assert_error(&no_token, 401, "M_MISSING_TOKEN");

    // Exclusive namespaces: ordinary users can neither register nor take aliases there.
    let taken = anon_post(
        &node,
        &format!("{V3}/register"),
        &json!({"username": "bridge_eve", "password": "pw-bridge-eve"}),
    )
    .await;
    assert_error(&taken, 400, "M_EXCLUSIVE");
    let available = super::support::matrix::anon_get(
        &node,
        &format!("{V3}/register/available?username=bridge_eve"),
    )
    .await;
    assert_error(&available, 400, "M_EXCLUSIVE");
    let room = create_room(&node, &alice, &json!({})).await;
    let alias = format!("#bridge_lobby:{DOMAIN}");
    let put_alias = super::support::matrix::put(
        &node,
        &format!("{V3}/directory/room/{}", urlencode(&alias)),
        &alice,
        &json!({"room_id": room}),
    )
    .await;
    assert_error(&put_alias, 400, "M_EXCLUSIVE");
    let named = post(
        &node,
        &format!("{V3}/createRoom"),
        &alice,
        &json!({"room_alias_name": "bridge_hall"}),
    )
    .await;
    assert_error(&named, 400, "M_EXCLUSIVE");
    // The service itself can, as any of its users.
    let portal = ok(post(
        &node,
        &as_user(&format!("{V3}/createRoom"), &carol),
        AS_TOKEN,
        &json!({"room_alias_name": "bridge_hall"}),
    )
    .await);
    let resolved = ok(get(
        &node,
        &format!(
            "{V3}/directory/room/{}",
            urlencode(&format!("#bridge_hall:{DOMAIN}"))
        ),
        &alice,
    )
    .await);
    assert_eq!(resolved["room_id"], portal["room_id"]);
    // And its messages are sent as the masqueraded user.
    let room_id = portal["room_id"].as_str().expect("room_id");
    let sent = ok(super::support::matrix::put(
        &node,
        &as_user(&room_path(room_id, "send/m.room.message/t1"), &carol),
        AS_TOKEN,
        &json!({"msgtype": "m.text", "body": "hi"}),
    )
    .await);
    let event = ok(get(
        &node,
        &as_user(
            &room_path(
                room_id,
                &format!(
                    "event/{}",
                    urlencode(sent["event_id"].as_str().expect("id"))
                ),
            ),
            &carol,
        ),
        AS_TOKEN,
    )
    .await);
    assert_eq!(event["sender"], carol);
}

#[tokio::test]
async fn queries_create_users_and_rooms_on_demand_and_ping_reaches_the_service() {
    let port = free_port();
    let (node, _dir) = node_with_bridge(port).await;
    let alice = register(&node, "alice").await;
    // Down (nothing listens on its port): a ping fails with M_CONNECTION_FAILED; a user or an
    // alias of its namespace that the node does not know cannot be said not to exist, since
    // the service could not be asked: 503 M_UNKNOWN (retry), not 404.
    let ping_path = "/_matrix/client/v1/appservice/bridge/ping";
    let down = post(&node, ping_path, AS_TOKEN, &json!({"transaction_id": "p1"})).await;
    assert_error(&down, 502, "M_CONNECTION_FAILED");
    let frank = user_id("bridge_frank");
    let profile = |u: &str| format!("{V3}/profile/{}", urlencode(u));
    let unasked = get(&node, &profile(&frank), &alice).await;
    assert_error(&unasked, 503, "M_UNKNOWN");
    assert!(
        unasked.1["error"]
            .as_str()
            .is_some_and(|e| e.contains("application service")),
        "{unasked:?}"
    );
    let alias = format!("#bridge_portal:{DOMAIN}");
    let directory = format!("{V3}/directory/room/{}", urlencode(&alias));
    assert_error(&get(&node, &directory, &alice).await, 503, "M_UNKNOWN");
    let join = format!("{V3}/join/{}", urlencode(&alias));
    assert_error(
        &post(&node, &join, &alice, &json!({})).await,
        503,
        "M_UNKNOWN",
    );
    // Outside every namespace: nobody to ask, not found.
    assert_error(
        &get(&node, &profile(&user_id("zed")), &alice).await,
        404,
        "M_NOT_FOUND",
    );

    let mut service = Service::start(port, node.addr()).await;
    let up = ok(post(&node, ping_path, AS_TOKEN, &json!({"transaction_id": "p2"})).await);
    assert!(up["duration_ms"].is_u64(), "{up}");
    match service.next().await {
        Received::Ping { txn_id } => assert_eq!(txn_id.as_deref(), Some("p2")),
        other => panic!("expected the ping, got {other:?}"),
    }
    // Another service's id with this token.
    assert_error(
        &post(
            &node,
            "/_matrix/client/v1/appservice/other/ping",
            AS_TOKEN,
            &json!({}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );

    // The user query: the service registers the user, the request proceeds.
    ok(get(&node, &profile(&frank), &alice).await);
    // Outside every namespace: not asked, not found.
    assert_error(
        &get(&node, &profile(&user_id("zed")), &alice).await,
        404,
        "M_NOT_FOUND",
    );

    // The alias query: the service creates the portal room, the alias resolves.
    let resolved = ok(get(&node, &directory, &alice).await);
    let room = resolved["room_id"].as_str().expect("room_id");
    assert!(room.starts_with('!'), "{resolved}");
    let unknown = get(
        &node,
        &format!(
            "{V3}/directory/room/{}",
            urlencode(&format!("#nothing:{DOMAIN}"))
        ),
        &alice,
    )
    .await;
    assert_error(&unknown, 404, "M_NOT_FOUND");
}

#[tokio::test]
async fn a_service_without_url_acts_but_cannot_be_pinged() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("bot.yaml"),
        registration(
            "bot",
            None,
            "as-token-bot-0123456789",
            "hs-token-bot-0123456789",
        ),
    )
    .expect("write");
    let path = dir.path().to_path_buf();
    let node = TestNode::spawn_with(|c| c.appservices.dir = Some(path)).await;
    let me = ok(get(
        &node,
        &format!("{V3}/account/whoami"),
        "as-token-bot-0123456789",
    )
    .await);
    assert_eq!(me["user_id"], user_id("botbot"));
    let ping = post(
        &node,
        "/_matrix/client/v1/appservice/bot/ping",
        "as-token-bot-0123456789",
        &json!({}),
    )
    .await;
    assert_error(&ping, 400, "M_URL_NOT_SET");
}

#[tokio::test]
async fn a_changed_directory_is_reloaded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    let node = TestNode::spawn_with(|c| {
        c.appservices.dir = Some(path);
        c.appservices.watch_interval = std::time::Duration::from_millis(20);
    })
    .await;
    let whoami = format!("{V3}/account/whoami");
    assert_error(&get(&node, &whoami, AS_TOKEN).await, 401, "M_UNKNOWN_TOKEN");
    write_bridge(dir.path(), free_port());
    // The node publishes the new set by accepting the token: polled within RECV_TIMEOUT.
    let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
    while get(&node, &whoami, AS_TOKEN).await.0 != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new registration was not loaded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
