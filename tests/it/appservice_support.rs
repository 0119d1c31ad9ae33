//! An application service written in the test: an axum server on `127.0.0.1` that parses the
//! node's requests with ruma's appservice-api server types (`PUT /transactions/{txnId}`, the
//! user and alias queries, `POST /ping`), checks `Authorization: Bearer <hs_token>`, and hands
//! what it received to the test through a channel. On a user query for a user of its namespace
//! it registers the user (`m.login.application_service`); on an alias query it creates a room
//! with that alias. It can be started later, on a port chosen before, to be "down" meanwhile,
//! and serve over TLS ([`Service::start_tls`]) for `https://` service URLs.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use ruma::api::IncomingRequestExt as _;
use ruma::api::appservice::event::push_events;
use ruma::api::appservice::ping::send_ping;
use ruma::api::appservice::query::{query_room_alias, query_user_id};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::support::DOMAIN;
use super::support::client::RECV_TIMEOUT;
use super::support::matrix::{V3, call_at};

pub(crate) const AS_TOKEN: &str = "as-token-bridge-0123456789";
pub(crate) const HS_TOKEN: &str = "hs-token-bridge-0123456789";

/// What the service received.
#[derive(Debug)]
pub(crate) enum Received {
    /// A transaction: its room events and, read from the raw body (ruma's type has no field
    /// for them), its `rethink_messages`, `ephemeral` and `de.sorunome.msc2409.to_device`.
    Txn {
        txn_id: String,
        events: Vec<Value>,
        rethink: Vec<Value>,
        ephemeral: Vec<Value>,
        to_device: Vec<Value>,
    },
    Ping {
        txn_id: Option<String>,
    },
}

#[derive(Clone)]
struct ServiceState {
    node: SocketAddr,
    tx: mpsc::UnboundedSender<Received>,
}

/// The registration of the test's service `bridge`: users `@bridge_.*` and aliases
/// `#bridge_.*` exclusively, sender `bridgebot`, at `url` (none if `None`).
pub(crate) fn registration(id: &str, url: Option<&str>, as_token: &str, hs_token: &str) -> String {
    let url = url.map_or("null".to_owned(), |u| format!("\"{u}\""));
    format!(
        "id: {id}\nurl: {url}\nas_token: {as_token}\nhs_token: {hs_token}\n\
         sender_localpart: {id}bot\nrate_limited: false\n\
         namespaces:\n  users:\n    - exclusive: true\n      regex: '@{id}_.*:{dom}'\n  \
         aliases:\n    - exclusive: true\n      regex: '#{id}_.*:{dom}'\n  rooms: []\n",
        dom = DOMAIN.replace('.', "\\.")
    )
}

/// Writes the `bridge` registration for a service at `port` into `dir`.
pub(crate) fn write_bridge(dir: &Path, port: u16) {
    let url = format!("http://127.0.0.1:{port}");
    std::fs::write(
        dir.join("bridge.yaml"),
        registration("bridge", Some(&url), AS_TOKEN, HS_TOKEN),
    )
    .expect("write registration");
}

/// A free port on 127.0.0.1 for a service that starts later.
pub(crate) fn free_port() -> u16 {
    super::support::free_port()
}

/// A running test service; it stops when dropped.
pub(crate) struct Service {
    pub(crate) rx: mpsc::UnboundedReceiver<Received>,
    task: tokio::task::JoinHandle<()>,
    /// The ids of the transactions [`Service::messages`] took.
    seen: Vec<String>,
}

impl Drop for Service {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Service {
    /// Starts the service on `port`, acting on the node at `node`.
    pub(crate) async fn start(port: u16, node: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the service's port");
        Self::serve(listener, node)
    }

    /// Starts the service on `port` over TLS, presenting `tls`'s certificate.
    pub(crate) async fn start_tls(
        port: u16,
        node: SocketAddr,
        tls: Arc<rustls::ServerConfig>,
    ) -> Self {
        let tcp = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the service's port");
        Self::serve(
            TlsListener {
                tcp,
                acceptor: tokio_rustls::TlsAcceptor::from(tls),
            },
            node,
        )
    }

    fn serve<L>(listener: L, node: SocketAddr) -> Self
    where
        L: axum::serve::Listener<Addr = SocketAddr>,
    {
        let (tx, rx) = mpsc::unbounded_channel();
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::new(ServiceState { node, tx }));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Service {
            rx,
            task,
            seen: Vec::new(),
        }
    }

    /// Stops the service and waits until its listener is closed (its port can be bound again).
    pub(crate) async fn stop(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }

    /// The next thing received; panics after [`RECV_TIMEOUT`].
    pub(crate) async fn next(&mut self) -> Received {
        tokio::time::timeout(RECV_TIMEOUT, self.rx.recv())
            .await
            .expect("the service received nothing in time")
            .expect("service stopped")
    }

    /// The bodies of `m.room.message` events received until `n` have come, with the
    /// transaction IDs seen (each must be new: the service acknowledged every one).
    pub(crate) async fn messages(&mut self, n: usize) -> Vec<(String, String)> {
        self.take_messages(n, false).await
    }

    /// As [`Service::messages`], but a transaction given again under an id already taken is
    /// skipped, as the specification asks of a service (a homeserver retries a transaction
    /// whose answer it did not record, e.g. its pushing node was killed after the push).
    pub(crate) async fn messages_deduplicated(&mut self, n: usize) -> Vec<(String, String)> {
        self.take_messages(n, true).await
    }

    async fn take_messages(&mut self, n: usize, dedupe: bool) -> Vec<(String, String)> {
        let mut out = Vec::new();
        while out.len() < n {
            if let Received::Txn { txn_id, events, .. } = self.next().await {
                if self.seen.contains(&txn_id) {
                    assert!(dedupe, "transaction {txn_id} delivered twice");
                    continue;
                }
                self.seen.push(txn_id);
                for e in events {
                    if e["type"] == "m.room.message" {
                        out.push((
                            e["room_id"].as_str().unwrap_or_default().to_owned(),
                            e["content"]["body"].as_str().unwrap_or_default().to_owned(),
                        ));
                    }
                }
            }
        }
        out
    }
}

/// A TCP listener whose connections are served once their TLS handshake succeeded (a client
/// that refuses the certificate is dropped, and the next connection is taken).
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

async fn handle(State(state): State<Arc<ServiceState>>, req: Request) -> axum::response::Response {
    let (parts, body) = req.into_parts();
    let bytes: Bytes = axum::body::to_bytes(body, 16 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let request = axum::http::Request::from_parts(parts, &bytes[..]);
    let auth = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if auth != format!("Bearer {HS_TOKEN}") {
        return (StatusCode::FORBIDDEN, r#"{"errcode":"M_FORBIDDEN"}"#).into_response();
    }
    let path: Vec<String> = request
        .uri()
        .path()
        .split('/')
        .skip(4)
        .map(percent_decode)
        .collect();
    let args: Vec<&str> = path.iter().skip(1).map(String::as_str).collect();
    let first = path.first().map(String::as_str).unwrap_or_default();
    match first {
        "transactions" => {
            let raw: Value = serde_json::from_slice(&bytes).expect("a JSON transaction");
            let list = |field: &str| raw[field].as_array().cloned().unwrap_or_default();
            let (rethink, ephemeral, to_device) = (
                list("rethink_messages"),
                list("ephemeral"),
                list("de.sorunome.msc2409.to_device"),
            );
            let txn = push_events::v1::Request::try_from_http_request(request, &args)
                .expect("a valid transaction");
            let events = txn
                .events
                .iter()
                .map(|e| serde_json::from_str(e.json().get()).expect("event JSON"))
                .collect();
            let received = Received::Txn {
                txn_id: txn.txn_id.to_string(),
                events,
                rethink,
                ephemeral,
                to_device,
            };
            // A stopped service (its test dropped it) answers on connections still open: 503.
            if state.tx.send(received).is_err() {
                return (StatusCode::SERVICE_UNAVAILABLE, "{}").into_response();
            }
            (StatusCode::OK, "{}").into_response()
        }
        "ping" => {
            let ping = send_ping::v1::Request::try_from_http_request(request, &args)
                .expect("a valid ping");
            let _ = state.tx.send(Received::Ping {
                txn_id: ping.transaction_id.map(|t| t.to_string()),
            });
            (StatusCode::OK, "{}").into_response()
        }
        "users" => {
            let q = query_user_id::v1::Request::try_from_http_request(request, &args)
                .expect("a valid user query");
            let localpart = q.user_id.localpart().to_owned();
            let (status, _) = call_at(
                state.node,
                "POST",
                &format!("{V3}/register"),
                Some(AS_TOKEN),
                Some(
                    json!({"type": "m.login.application_service", "username": localpart,
                           "inhibit_login": true})
                    .to_string()
                    .as_bytes(),
                ),
            )
            .await;
            let code = if status == 200 {
                StatusCode::OK
            } else {
                StatusCode::NOT_FOUND
            };
            (code, "{}").into_response()
        }
        "rooms" => {
            let q = query_room_alias::v1::Request::try_from_http_request(request, &args)
                .expect("a valid alias query");
            let (status, _) = call_at(
                state.node,
                "POST",
                &format!("{V3}/createRoom"),
                Some(AS_TOKEN),
                Some(
                    json!({"room_alias_name": q.room_alias.alias(), "name": "portal"})
                        .to_string()
                        .as_bytes(),
                ),
            )
            .await;
            let code = if status == 200 {
                StatusCode::OK
            } else {
                StatusCode::NOT_FOUND
            };
            (code, "{}").into_response()
        }
        _ => (StatusCode::NOT_FOUND, r#"{"errcode":"M_UNRECOGNIZED"}"#).into_response(),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
