//! [`Rt`]: a hyperty runtime as a test sees it, a tokio-tungstenite WebSocket client speaking
//! the session protocol, with helpers for the common requests.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

use super::{DOMAIN, TestNode, allocation_endpoint, sm_endpoint};

/// How long a test waits for a frame that must arrive.
pub(crate) const RECV_TIMEOUT: Duration = Duration::from_secs(5);

/// The plain-TCP client stream.
pub(crate) type Plain = MaybeTlsStream<TcpStream>;

/// A connected runtime, over any stream (plain TCP by default, TLS in the TLS test).
#[derive(Debug)]
pub(crate) struct Rt<S = Plain> {
    ws: WebSocketStream<S>,
    /// The runtime URL this client opens its session with.
    pub(crate) url: String,
    /// The resume secret from `open`.
    pub(crate) token: Option<String>,
    /// Highest `seq` received.
    pub(crate) last_seq: u64,
    next_id: u64,
}

impl Rt<Plain> {
    /// Connects without opening a session.
    pub(crate) async fn connect(node: &TestNode, name: &str) -> Self {
        let (ws, _) = connect_async(node.ws_url()).await.expect("connect");
        Self::from_ws(ws, name)
    }

    /// Connects and opens a session; panics unless the node answers 200.
    pub(crate) async fn open(node: &TestNode, name: &str) -> Self {
        let mut rt = Self::connect(node, name).await;
        let resp = rt.open_session(json!({})).await;
        assert_eq!(resp["body"]["code"], 200, "open: {resp}");
        rt
    }

    /// Shuts the sending side of the TCP connection (a half-close: the node reads EOF, this
    /// client could still read).
    pub(crate) async fn shutdown_write(&mut self) {
        use tokio::io::AsyncWriteExt as _;
        if let MaybeTlsStream::Plain(tcp) = self.ws.get_mut() {
            tcp.shutdown().await.expect("half-close");
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Rt<S> {
    /// Wraps an established WebSocket.
    pub(crate) fn from_ws(ws: WebSocketStream<S>, name: &str) -> Self {
        Self {
            ws,
            url: format!("hyperty-runtime://{DOMAIN}/{name}"),
            token: None,
            last_seq: 0,
            next_id: 100,
        }
    }

    /// Sends `open` with `body` and returns the response (keeps the token on success).
    pub(crate) async fn open_session(&mut self, body: Value) -> Value {
        let url = self.url.clone();
        let resp = self
            .request(json!({"type": "open", "from": url, "to": "mn:/session", "body": body}))
            .await;
        if resp["body"]["code"] == 200 {
            self.token = resp["body"]["value"]["runtimeToken"]
                .as_str()
                .map(str::to_owned);
        }
        resp
    }

    pub(crate) fn fresh_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Sends a JSON value as one text frame.
    pub(crate) async fn send(&mut self, v: &Value) {
        self.send_text(&v.to_string()).await;
    }

    /// Sends a JSON value as one text frame; `false` if the connection is gone.
    pub(crate) async fn try_send(&mut self, v: &Value) -> bool {
        self.ws.send(Message::text(v.to_string())).await.is_ok()
    }

    /// Sends raw text as one frame.
    pub(crate) async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text.to_owned()))
            .await
            .expect("send");
    }

    /// Sends a raw WebSocket message.
    pub(crate) async fn send_raw(&mut self, msg: Message) {
        self.ws.send(msg).await.expect("send");
    }

    /// The next text frame as JSON (pings and pongs skipped); panics after [`RECV_TIMEOUT`].
    pub(crate) async fn recv(&mut self) -> Value {
        self.try_recv(RECV_TIMEOUT)
            .await
            .expect("a frame within the timeout")
    }

    /// The next text frame, or `None` if nothing arrives within `wait` or the socket closes.
    pub(crate) async fn try_recv(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??;
            match msg.ok()? {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(&t).expect("node sends JSON");
                    let seq = v["seq"].as_u64().expect("every node frame has a seq");
                    if seq > 0 {
                        assert!(
                            seq > self.last_seq,
                            "seq must increase: {seq} after {}",
                            self.last_seq
                        );
                        self.last_seq = seq;
                    }
                    return Some(v);
                }
                Message::Close(_) => return None,
                _ => {}
            }
        }
    }

    /// The close frame's code, waiting up to `wait`; `None` if the socket stays open.
    pub(crate) async fn closed_with(&mut self, wait: Duration) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return None,
                Ok(None) => return Some(1006),
                Ok(Some(Ok(Message::Close(frame)))) => {
                    return Some(frame.map_or(1005, |f| u16::from(f.code)));
                }
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(_))) => return Some(1006),
            }
        }
    }

    /// Every frame the node has queued for this runtime so far, up to a marker: sends a request
    /// the session itself answers (a second `open` on this connection: 409, past no policy and
    /// no rate) and returns the frames that arrive before that answer.
    ///
    /// No waiting on time: the session handles one frame at a time, and a message is in its
    /// recipients' outboxes before its sender's next frame is read, so the frames returned
    /// include everything caused by this runtime's earlier frames (refusals, answers) and by
    /// any request of another runtime that was answered (or itself drained) before this call.
    pub(crate) async fn drain(&mut self) -> Vec<Value> {
        let id = json!(format!("marker-{}", self.fresh_id()));
        let url = self.url.clone();
        self.send(&json!({"id": id, "type": "open", "from": url, "to": "mn:/session"}))
            .await;
        let mut before = Vec::new();
        loop {
            let v = self.recv().await;
            if v["type"] == "response" && v["id"] == id {
                assert_eq!(v["body"]["code"], 409, "the marker's answer: {v}");
                return before;
            }
            before.push(v);
        }
    }

    /// Asserts that the node has queued nothing for this runtime (see [`Self::drain`]).
    pub(crate) async fn expect_nothing_queued(&mut self) {
        let frames = self.drain().await;
        assert!(frames.is_empty(), "expected no frame, got {frames:?}");
    }

    /// Every frame up to the node's close frame, and the close code; panics unless the node
    /// closes within [`RECV_TIMEOUT`].
    pub(crate) async fn frames_until_close(&mut self) -> (Vec<Value>, u16) {
        let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
        let mut frames = Vec::new();
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .expect("the node closes the connection in time");
            match msg {
                None | Some(Err(_)) => return (frames, 1006),
                Some(Ok(Message::Close(frame))) => {
                    return (frames, frame.map_or(1005, |f| u16::from(f.code)));
                }
                Some(Ok(Message::Text(t))) => {
                    frames.push(serde_json::from_str(&t).expect("node sends JSON"));
                }
                Some(Ok(_)) => {}
            }
        }
    }

    /// Sends `msg` (an `id` is added when missing) and returns the response with that id.
    pub(crate) async fn request(&mut self, mut msg: Value) -> Value {
        if msg.get("id").is_none() {
            msg["id"] = json!(self.fresh_id());
        }
        self.send(&msg).await;
        self.recv_response(&msg["id"]).await
    }

    /// Waits for the response whose id is `id`; other frames in between are an error.
    pub(crate) async fn recv_response(&mut self, id: &Value) -> Value {
        let v = self.recv().await;
        assert_eq!(v["type"], "response", "expected a response, got {v}");
        assert_eq!(&v["id"], id, "response to another request: {v}");
        v
    }

    /// Allocates `n` hyperty addresses.
    pub(crate) async fn allocate(&mut self, n: u32) -> Vec<String> {
        let from = format!("{}/registry/allocation", self.url);
        let resp = self
            .request(
                json!({"type": "create", "from": from, "to": allocation_endpoint(),
                "body": {"scheme": "hyperty", "value": {"number": n}}}),
            )
            .await;
        assert_eq!(resp["body"]["code"], 200, "allocation: {resp}");
        resp["body"]["value"]["allocated"]
            .as_array()
            .expect("allocated list")
            .iter()
            .map(|a| a.as_str().expect("address").to_owned())
            .collect()
    }

    /// Subscribes to `resources` and checks the 200.
    pub(crate) async fn subscribe(&mut self, resources: &[&str]) {
        let from = format!("{}/sm", self.url);
        let resp = self
            .request(
                json!({"type": "subscribe", "from": from, "to": sm_endpoint(),
                "body": {"resources": resources}}),
            )
            .await;
        assert_eq!(resp["body"]["code"], 200, "subscribe: {resp}");
    }

    /// Acknowledges everything received so far.
    pub(crate) async fn ack(&mut self) {
        let msg = json!({"id": self.fresh_id(), "type": "ack", "from": self.url, "to": "mn:/session",
            "body": {"seq": self.last_seq}});
        self.send(&msg).await;
    }

    /// The WebSocket, for a test that drives it itself (split into sender and receiver, say).
    pub(crate) fn into_ws(self) -> WebSocketStream<S> {
        self.ws
    }

    /// Drops the TCP connection without a close handshake.
    pub(crate) fn drop_connection(self) -> RtMemory {
        RtMemory {
            url: self.url,
            token: self.token,
            last_seq: self.last_seq,
            next_id: self.next_id,
        }
    }
}

/// What a runtime remembers across a lost connection.
#[derive(Debug, Clone)]
pub(crate) struct RtMemory {
    pub(crate) url: String,
    pub(crate) token: Option<String>,
    pub(crate) last_seq: u64,
    pub(crate) next_id: u64,
}

impl RtMemory {
    /// Reconnects and re-opens; returns the client and the re-open response.
    pub(crate) async fn resume(&self, node: &TestNode) -> (Rt, Value) {
        let (ws, _) = connect_async(node.ws_url()).await.expect("reconnect");
        let mut rt = Rt {
            ws,
            url: self.url.clone(),
            token: self.token.clone(),
            last_seq: self.last_seq,
            next_id: self.next_id + 1000,
        };
        let msg = json!({
            "id": rt.fresh_id(), "type": "re-open", "from": rt.url, "to": "mn:/session",
            "body": {"runtimeToken": rt.token, "lastSeq": rt.last_seq}
        });
        rt.send(&msg).await;
        (rt, msg)
    }
}
