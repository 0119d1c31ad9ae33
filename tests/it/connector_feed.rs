//! A connector's event feed across a killed node: the echo bot of
//! `stubs/guests/echo-connector`, run by the real program (`NodeProcess`), is made busy on an
//! event (`!busy`: it answers, then spins in its `on-event` call), messages are committed behind
//! it, and the node is killed with SIGKILL. After the restart the feed goes on from the
//! connector's stored position: the busy event is given again (never acknowledged) and the
//! messages after it are answered, each once, in order, followed by what is sent after the
//! restart.

use std::net::SocketAddr;
use std::path::Path;

use serde_json::{Value, json};

use super::support::DOMAIN;
use super::support::client::RECV_TIMEOUT;
use super::support::matrix::{V3, call_at, room_path, urlencode, user_id};
use super::support::process::NodeProcess;

/// A request that must succeed; its answer.
pub(super) async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &Value,
) -> Value {
    let (status, answer) =
        call_at(addr, method, path, token, Some(body.to_string().as_bytes())).await;
    assert_eq!(status, 200, "{method} {path}: {answer}");
    answer
}

/// Registers `name` through the dummy flow; its access token.
pub(super) async fn register(addr: SocketAddr, name: &str) -> String {
    let path = format!("{V3}/register");
    let mut req = json!({"username": name, "password": format!("pw-{name}")});
    let (status, uia) = call_at(addr, "POST", &path, None, Some(req.to_string().as_bytes())).await;
    assert_eq!(status, 401, "{uia}");
    req["auth"] = json!({"type": "m.login.dummy", "session": uia["session"]});
    let done = call(addr, "POST", &path, None, &req).await;
    done["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

pub(super) async fn say(addr: SocketAddr, token: &str, room: &str, txn: &str, body: &str) {
    let path = room_path(room, &format!("send/m.room.message/{txn}"));
    call(
        addr,
        "PUT",
        &path,
        Some(token),
        &json!({"msgtype": "m.text", "body": body}),
    )
    .await;
}

/// The bodies of the bot's messages in `room`, oldest first.
async fn bot_texts(addr: SocketAddr, token: &str, room: &str) -> Vec<String> {
    let path = room_path(room, "messages?dir=f&limit=1000");
    let page = call(addr, "GET", &path, Some(token), &Value::Null).await;
    page["chunk"]
        .as_array()
        .expect("chunk")
        .iter()
        .filter(|e| e["sender"] == user_id("echo") && e["type"] == "m.room.message")
        .map(|e| e["content"]["body"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Whether the bot has joined `room`.
async fn bot_joined(addr: SocketAddr, token: &str, room: &str) -> bool {
    let path = room_path(room, &format!("state/m.room.member/{}", user_id("echo")));
    let (status, member) = call_at(addr, "GET", &path, Some(token), None).await;
    status == 200 && member["membership"] == "join"
}

/// Waits (long-polling `/sync` between looks) until `done` holds for the bot's texts; them.
pub(super) async fn bot_texts_until(
    addr: SocketAddr,
    token: &str,
    room: &str,
    done: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
    let mut since: Option<String> = None;
    loop {
        let texts = bot_texts(addr, token, room).await;
        if done(&texts) && bot_joined(addr, token, room).await {
            return texts;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the bot's texts are still {texts:?}"
        );
        let path = match &since {
            Some(s) => format!("{V3}/sync?timeout=2000&since={}", urlencode(s)),
            None => format!("{V3}/sync?timeout=0"),
        };
        let body = call(addr, "GET", &path, Some(token), &Value::Null).await;
        since = body["next_batch"].as_str().map(str::to_owned);
    }
}

/// A room `token`'s user made and invited the bot to, once the bot has joined it (on the
/// invite); from then on what is said in the room concerns the bot. The room's id.
pub(super) async fn room_with_the_bot(addr: SocketAddr, token: &str) -> String {
    let room = call(
        addr,
        "POST",
        &format!("{V3}/createRoom"),
        Some(token),
        &json!({}),
    )
    .await;
    let room = room["room_id"].as_str().expect("room_id").to_owned();
    call(
        addr,
        "POST",
        &room_path(&room, "invite"),
        Some(token),
        &json!({"user_id": user_id("echo")}),
    )
    .await;
    bot_texts_until(addr, token, &room, <[String]>::is_empty).await;
    room
}

/// The node's configuration file: the echo bot, with a call deadline long enough that its
/// `!busy` call lasts until the node is killed.
pub(super) fn write_config(dir: &Path) -> String {
    let component = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../stubs/guests/echo-connector/echo-connector.wasm");
    let text = format!(
        "[connectors.echo]\ncomponent = {component:?}\nnamespaces = [\"domain://echo.{DOMAIN}\"]\n\
         call_timeout_ms = 600000\n[connectors.echo.matrix]\nusers = ['@echo.*:{}']\n",
        DOMAIN.replace('.', "\\."),
    );
    let path = dir.join("rethink.toml");
    std::fs::write(&path, text).expect("write the configuration");
    path.display().to_string()
}

#[tokio::test]
async fn the_connector_feed_survives_a_killed_node_in_order_once_each() {
    let data = tempfile::tempdir().expect("tempdir");
    let etc = tempfile::tempdir().expect("tempdir");
    let config = write_config(etc.path());
    let mut node = NodeProcess::spawn(data.path(), &[("RETHINK_CONFIG", &config)]).await;
    let addr = node.addr();
    let alice = register(addr, "alice").await;
    let room = room_with_the_bot(addr, &alice).await;
    say(addr, &alice, &room, "t1", "m1").await;
    bot_texts_until(addr, &alice, &room, |t| t.len() == 1).await;
    // The bot is busy in its `on-event` call: what follows is committed, not handled.
    say(addr, &alice, &room, "t2", "!busy").await;
    bot_texts_until(addr, &alice, &room, |t| t.len() == 2).await;
    say(addr, &alice, &room, "t3", "m2").await;
    say(addr, &alice, &room, "t4", "m3").await;
    node.kill().await;

    let node = node.restart().await;
    let addr = node.addr();
    say(addr, &alice, &room, "t5", "m4").await;
    let texts = bot_texts_until(addr, &alice, &room, |t| {
        t.last().is_some_and(|l| l == "echo: m4")
    })
    .await;
    assert_eq!(
        texts,
        ["echo: m1", "busy", "echo: m2", "echo: m3", "echo: m4"],
        "every message answered once, in order"
    );
}
