//! Application services and the real program: transactions queued while the service is down
//! survive a SIGKILL of the node and arrive in order, once each, after the restart (room events,
//! and reTHINK messages for a claimed address); a bad registration file stops the node at start
//! naming the file and the field.

use std::process::Stdio;

use serde_json::{Value, json};

use super::appservice_support::{
    AS_TOKEN, HS_TOKEN, Received, Service, free_port, registration, write_bridge,
};
use super::support::client::RECV_TIMEOUT;
use super::support::matrix::{V3, call_at, room_path, urlencode, user_id};
use super::support::process::NodeProcess;

async fn call(node: &NodeProcess, method: &str, path: &str, token: &str, body: &Value) -> Value {
    let (status, answer) = call_at(
        node.addr(),
        method,
        path,
        Some(token),
        Some(body.to_string().as_bytes()),
    )
    .await;
    assert_eq!(status, 200, "{method} {path}: {answer}");
    answer
}

#[tokio::test]
async fn queued_transactions_survive_a_killed_node_in_order_once_each() {
    let data = tempfile::tempdir().expect("tempdir");
    let services = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    write_bridge(services.path(), port);
    let dir = services.path().display().to_string();
    let mut node = NodeProcess::spawn(
        data.path(),
        &[
            ("RETHINK_APPSERVICES__DIR", &dir),
            ("RETHINK_APPSERVICES__INITIAL_BACKOFF_MS", "20"),
            ("RETHINK_APPSERVICES__MAX_BACKOFF_MS", "100"),
        ],
    )
    .await;
    let register = json!({"type": "m.login.application_service", "username": "bridge_bob"});
    call(
        &node,
        "POST",
        &format!("{V3}/register"),
        AS_TOKEN,
        &register,
    )
    .await;
    let bob = user_id("bridge_bob");
    let as_bob = |path: String| format!("{path}?user_id={}", urlencode(&bob));
    // Bob (the bridge's user) makes a room; everything in it concerns the bridge.
    let room = call(
        &node,
        "POST",
        &as_bob(format!("{V3}/createRoom")),
        AS_TOKEN,
        &json!({}),
    )
    .await;
    let room = room["room_id"].as_str().expect("room_id").to_owned();
    let send = |i: usize| as_bob(room_path(&room, &format!("send/m.room.message/k{i}")));
    let say = |i: usize| json!({"msgtype": "m.text", "body": format!("m{i}")});
    // Up: the first message is delivered.
    let mut service = Service::start(port, node.addr()).await;
    call(&node, "PUT", &send(0), AS_TOKEN, &say(0)).await;
    assert_eq!(service.messages(1).await[0].1, "m0");
    // Down: the next ones wait in the node's queue, which the kill must not lose or repeat.
    drop(service);
    for i in 1..5 {
        call(&node, "PUT", &send(i), AS_TOKEN, &say(i)).await;
    }
    node.kill().await;
    let node = node.restart().await;
    for i in 5..8 {
        call(&node, "PUT", &send(i), AS_TOKEN, &say(i)).await;
    }
    let mut service = Service::start(port, node.addr()).await;
    let got: Vec<String> = service
        .messages(7)
        .await
        .into_iter()
        .map(|(_, b)| b)
        .collect();
    let want: Vec<String> = (1..8).map(|i| format!("m{i}")).collect();
    assert_eq!(got, want, "in order, once each");
}

#[tokio::test]
async fn queued_rethink_messages_survive_a_killed_node_in_order_once_each() {
    let data = tempfile::tempdir().expect("tempdir");
    let services = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut text = registration(
        "bridge",
        Some(&format!("http://127.0.0.1:{port}")),
        AS_TOKEN,
        HS_TOKEN,
    );
    text.push_str("rethink_namespaces:\n  - pattern: \"slack://*\"\n    exclusive: true\n");
    std::fs::write(services.path().join("bridge.yaml"), text).expect("write registration");
    let dir = services.path().display().to_string();
    let mut node = NodeProcess::spawn(
        data.path(),
        &[
            ("RETHINK_APPSERVICES__DIR", &dir),
            ("RETHINK_APPSERVICES__INITIAL_BACKOFF_MS", "20"),
            ("RETHINK_APPSERVICES__MAX_BACKOFF_MS", "100"),
        ],
    )
    .await;
    // The service sends from one claimed address to another: the bus routes it back to the
    // service's own session, whose outbox its transactions drain.
    let message = |i: usize| {
        json!({"id": i, "type": "execute", "from": "slack://team/a", "to": "slack://team/b",
            "body": {"n": i}})
    };
    let send = |node: &NodeProcess, i: usize| {
        let addr = node.addr();
        let body = message(i).to_string();
        async move {
            let (status, answer) = call_at(
                addr,
                "POST",
                "/_rethink/app/v1/send",
                Some(AS_TOKEN),
                Some(body.as_bytes()),
            )
            .await;
            assert_eq!(status, 200, "{answer}");
        }
    };
    // Down from the start: everything waits in the node (outbox, then transactions).
    for i in 0..4 {
        send(&node, i).await;
    }
    node.kill().await;
    let node = node.restart().await;
    for i in 4..6 {
        send(&node, i).await;
    }
    let mut service = Service::start(port, node.addr()).await;
    let mut got = Vec::new();
    let mut txns = Vec::new();
    while got.len() < 6 {
        if let Received::Txn {
            txn_id, rethink, ..
        } = service.next().await
        {
            assert!(!txns.contains(&txn_id), "transaction {txn_id} twice");
            txns.push(txn_id);
            got.extend(rethink.iter().map(|m| m["body"]["n"].as_u64().expect("n")));
        }
    }
    assert_eq!(got, (0..6).collect::<Vec<u64>>(), "in order, once each");
}

#[tokio::test]
async fn a_bad_registration_stops_the_node_naming_the_file_and_the_field() {
    let data = tempfile::tempdir().expect("tempdir");
    let services = tempfile::tempdir().expect("tempdir");
    let file = services.path().join("broken.yaml");
    std::fs::write(
        &file,
        "id: broken\nas_token: a-0123456789\nhs_token: h-0123456789\nsender_localpart: b\n\
         namespaces:\n  users:\n    - regex: '@broken_(.*'\n      exclusive: true\n",
    )
    .expect("write");
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_rethink-node-under-test"))
        .env_clear()
        .env("RETHINK_DATA_DIR", data.path())
        .env("RETHINK_LISTEN", "127.0.0.1:0")
        .env("RETHINK_APPSERVICES__DIR", services.path())
        .stdin(Stdio::null())
        .output();
    let out = tokio::time::timeout(RECV_TIMEOUT * 6, run)
        .await
        .expect("the node stops in time")
        .expect("the node program runs");
    assert!(
        !out.status.success(),
        "a bad registration must stop the node"
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(text.contains("broken.yaml"), "{text}");
    assert!(text.contains("namespaces.users[0].regex"), "{text}");
}
