//! A minimal stand-in for the node's WebSocket bus, for the bench's own tests:
//! `open`, hyperty address allocation, routing of other messages by `to`
//! (with a per-session `seq` inserted), optional 503 refusals, and stand-ins for runaway
//! stubs (addresses whose every message is answered 504, as the node answers a call that ran
//! past its deadline).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

type Routes = Arc<Mutex<HashMap<String, mpsc::UnboundedSender<String>>>>;

/// A running mock node; its tasks end with the test's runtime.
#[derive(Debug)]
pub(crate) struct MockNode {
    pub(crate) addr: SocketAddr,
}

#[derive(Debug)]
struct Shared {
    domain: String,
    routes: Routes,
    /// Refuse every n-th routed message with 503 (0 = never).
    refuse_every: u64,
    routed: AtomicU64,
    next_address: AtomicU64,
    /// Addresses answered 504 (runaway stubs).
    runaway_stubs: Vec<String>,
}

impl MockNode {
    pub(crate) async fn start(domain: &str, refuse_every: u64) -> Self {
        Self::start_with_stubs(domain, refuse_every, Vec::new()).await
    }

    /// A mock node where every message to one of `runaway_stubs` is answered 504.
    pub(crate) async fn start_with_stubs(
        domain: &str,
        refuse_every: u64,
        runaway_stubs: Vec<String>,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shared = Arc::new(Shared {
            domain: domain.to_owned(),
            routes: Routes::default(),
            refuse_every,
            routed: AtomicU64::new(0),
            next_address: AtomicU64::new(1),
            runaway_stubs,
        });
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(session(tcp, Arc::clone(&shared)));
            }
        });
        MockNode { addr }
    }

    pub(crate) fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }
}

fn response(to_msg: &Value, code: u16, value: Value) -> String {
    json!({
        "id": to_msg["id"], "type": "response", "from": to_msg["to"], "to": to_msg["from"],
        "body": {"code": code, "value": value, "description": if code >= 400 { "refused" } else { "" }},
    })
    .to_string()
}

async fn session(tcp: TcpStream, shared: Arc<Shared>) {
    let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else {
        return;
    };
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    // Writer: inserts the session's `seq` first in every frame.
    tokio::spawn(async move {
        let mut seq = 0u64;
        while let Some(text) = rx.recv().await {
            seq += 1;
            let framed = format!("{{\"seq\":{seq},{}", &text[1..]);
            if sink.send(Message::text(framed)).await.is_err() {
                break;
            }
        }
    });
    while let Some(Ok(msg)) = stream.next().await {
        let Message::Text(text) = msg else { continue };
        let Ok(value) = serde_json::from_str::<Value>(text.as_str()) else {
            continue;
        };
        let messages = match value {
            Value::Array(items) => items,
            one => vec![one],
        };
        for m in messages {
            handle(&m, &tx, &shared);
        }
    }
}

fn handle(m: &Value, tx: &mpsc::UnboundedSender<String>, shared: &Shared) {
    let kind = m["type"].as_str().unwrap_or_default();
    let to = m["to"].as_str().unwrap_or_default();
    match kind {
        "open" => {
            let value = json!({"runtimeToken": "t", "resumeWindow": 300, "session": "s"});
            let _ = tx.send(response(m, 200, value));
        }
        "create" if to.ends_with("/address-allocation") => {
            let n = shared.next_address.fetch_add(1, Ordering::Relaxed);
            let address = format!("hyperty://{}/mock-{n}", shared.domain);
            if let Ok(mut routes) = shared.routes.lock() {
                routes.insert(address.clone(), tx.clone());
            }
            let _ = tx.send(response(m, 200, json!({"allocated": [address]})));
        }
        "ack" | "close" => {}
        _ if shared.runaway_stubs.iter().any(|s| s == to) => {
            let mut r: Value =
                serde_json::from_str(&response(m, 504, Value::Null)).unwrap_or_default();
            r["body"]["description"] =
                json!(format!("stub at {to}: the call ran past its deadline"));
            let _ = tx.send(r.to_string());
        }
        _ => {
            let routed = shared.routed.fetch_add(1, Ordering::Relaxed) + 1;
            if shared.refuse_every > 0 && routed.is_multiple_of(shared.refuse_every) {
                let _ = tx.send(response(m, 503, Value::Null));
                return;
            }
            let target = shared.routes.lock().ok().and_then(|r| r.get(to).cloned());
            match target {
                Some(target) => {
                    let _ = target.send(m.to_string());
                }
                None => {
                    let _ = tx.send(response(m, 404, Value::Null));
                }
            }
        }
    }
}
