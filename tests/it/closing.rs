//! How the node closes a misbehaving connection (issue 10, defect 7): the answers owed first,
//! then a close frame with its code and reason (RFC 6455), then the peer's close, before TCP
//! goes away. Raw tokio-tungstenite clients read every frame and the close code.

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::support::client::RECV_TIMEOUT;
use crate::support::{Rt, TestNode};

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// Reads until the node's close frame: the text frames before it and its code and reason.
async fn read_until_close(ws: &mut Ws) -> (Vec<Value>, u16, String) {
    let mut texts = Vec::new();
    loop {
        let msg = tokio::time::timeout(RECV_TIMEOUT, ws.next())
            .await
            .expect("the node closes in time")
            .expect("a close frame before the end of the stream")
            .expect("no reset: the node closes with a handshake");
        match msg {
            Message::Text(t) => texts.push(serde_json::from_str(&t).unwrap()),
            Message::Close(frame) => {
                let frame = frame.expect("a close code");
                return (texts, u16::from(frame.code), frame.reason.to_string());
            }
            _ => {}
        }
    }
}

/// A text frame whose payload is not UTF-8.
fn invalid_utf8() -> Message {
    Message::Frame(Frame::message(
        vec![b'{', 0xff, 0xfe, b'}'],
        OpCode::Data(Data::Text),
        true,
    ))
}

#[tokio::test]
async fn fifty_refusals_before_open_are_answered_then_closed_with_1008() {
    let node = TestNode::spawn().await;
    let (mut ws, _) = tokio_tungstenite::connect_async(node.ws_url())
        .await
        .unwrap();
    for i in 0..60 {
        ws.send(Message::text(format!(r#"{{"id":{i},"type":"PING"}}"#)))
            .await
            .unwrap();
    }
    let (answers, code, reason) = read_until_close(&mut ws).await;
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("too many"), "{reason}");
    let ids: Vec<u64> = answers
        .iter()
        .map(|a| {
            assert_eq!(a["body"]["code"], 400, "{a}");
            a["id"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(
        ids,
        (0..50).collect::<Vec<_>>(),
        "every refusal before the close"
    );
    // The closing handshake completes: the stream ends after our close reply.
    assert!(
        tokio::time::timeout(RECV_TIMEOUT, ws.next())
            .await
            .expect("the connection ends")
            .is_none_or(|r| r.is_err() || matches!(r, Ok(Message::Close(_))))
    );
}

#[tokio::test]
async fn fifty_refusals_after_open_are_answered_then_closed_with_1008() {
    let node = TestNode::spawn().await;
    let mut rt = Rt::open(&node, "rt-close-garbage").await;
    for _ in 0..60 {
        rt.send_text("garbage").await;
    }
    let mut refusals = 0;
    while let Some(v) = rt.try_recv(RECV_TIMEOUT).await {
        assert_eq!(v["body"]["code"], 400, "{v}");
        refusals += 1;
        if refusals == 50 {
            break;
        }
    }
    assert_eq!(refusals, 50);
    assert_eq!(rt.closed_with(RECV_TIMEOUT).await, Some(1008));
}

#[tokio::test]
async fn invalid_utf8_is_closed_with_1007() {
    let node = TestNode::spawn().await;
    // Before open.
    let (mut ws, _) = tokio_tungstenite::connect_async(node.ws_url())
        .await
        .unwrap();
    ws.send(invalid_utf8()).await.unwrap();
    let (texts, code, reason) = read_until_close(&mut ws).await;
    assert!(texts.is_empty(), "{texts:?}");
    assert_eq!(code, 1007, "{reason}");

    // In a session: the answer to the frame before it is delivered first.
    let (mut ws, _) = tokio_tungstenite::connect_async(node.ws_url())
        .await
        .unwrap();
    let open = r#"{"id":1,"type":"open","from":"hyperty-runtime://example.com/rt-utf8","to":"mn:/session"}"#;
    ws.send(Message::text(open)).await.unwrap();
    ws.send(Message::text("not json")).await.unwrap();
    ws.send(invalid_utf8()).await.unwrap();
    let (texts, code, reason) = read_until_close(&mut ws).await;
    assert_eq!(code, 1007, "{reason}");
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert_eq!(texts[0]["body"]["code"], 200);
    assert_eq!(texts[1]["body"]["code"], 400);
}
