//! The session loop driven over channels instead of a socket.

use std::time::Duration;

use axum::extract::ws::Message;
use futures_util::{sink, stream};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::node::RunningNode;

type Pipe = (
    mpsc::Sender<Result<Message, String>>,
    mpsc::Receiver<Message>,
);

fn spawn_session(node: &RunningNode) -> Pipe {
    let (to_node, from_test) = mpsc::channel::<Result<Message, String>>(16);
    let (to_test, from_node) = mpsc::channel::<Message>(64);
    let input = stream::unfold(from_test, |mut rx| async move {
        rx.recv().await.map(|m| (m, rx))
    });
    let output = sink::unfold(to_test, |tx, m: Message| async move {
        tx.send(m).await.map(|()| tx).map_err(|e| e.to_string())
    });
    let node = node.node().clone();
    tokio::spawn(super::run(node, Box::pin(output), Box::pin(input), None));
    (to_node, from_node)
}

async fn next_json(rx: &mut mpsc::Receiver<Message>) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a frame in time")
            .expect("channel open");
        if let Message::Text(t) = msg {
            return serde_json::from_str(&t).expect("JSON");
        }
    }
}

async fn send(tx: &mpsc::Sender<Result<Message, String>>, v: Value) {
    tx.send(Ok(Message::Text(v.to_string().into())))
        .await
        .expect("send");
}

#[tokio::test]
async fn open_route_refuse_and_close_over_channels() {
    let dir = tempfile::TempDir::new().expect("dir");
    let node = RunningNode::start(Config::for_tests(dir.path(), "example.com"))
        .await
        .expect("node");
    let (tx, mut rx) = spawn_session(&node);
    let rt = "hyperty-runtime://example.com/chan";

    send(
        &tx,
        json!({"id": 1, "type": "open", "from": rt, "to": "mn:/session"}),
    )
    .await;
    let opened = next_json(&mut rx).await;
    assert_eq!(opened["seq"], 1);
    assert_eq!(opened["body"]["code"], 200);
    assert!(
        opened["body"]["value"]["runtimeToken"]
            .as_str()
            .is_some_and(|t| t.len() == 64)
    );

    send(&tx, json!({"id": 2, "type": "create", "from": rt,
        "to": "domain://msg-node.example.com/address-allocation", "body": {"value": {"number": 1}}}))
    .await;
    let alloc = next_json(&mut rx).await;
    assert_eq!(alloc["seq"], 2);
    let me = alloc["body"]["value"]["allocated"][0]
        .as_str()
        .expect("address")
        .to_owned();

    // A message to the runtime's own address comes back through its outbox.
    send(&tx, json!({"id": 3, "type": "PING", "from": me, "to": me})).await;
    let echo = next_json(&mut rx).await;
    assert_eq!(
        (echo["seq"].as_u64(), echo["id"].as_u64()),
        (Some(3), Some(3))
    );

    tx.send(Ok(Message::Text("nope".into())))
        .await
        .expect("send");
    let refused = next_json(&mut rx).await;
    assert_eq!(refused["body"]["code"], 400);

    send(
        &tx,
        json!({"id": 5, "type": "close", "from": rt, "to": "mn:/session"}),
    )
    .await;
    assert_eq!(next_json(&mut rx).await["body"]["code"], 200);
    let close = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("close");
    assert!(matches!(close, Some(Message::Close(Some(f))) if f.code == 1000));
    node.shutdown().await;
}
