//! Host-mediated networking: the `net` imports. A stub names a URL; the host checks its origin
//! against the stub's allow-list (deny by default: 403), opens the WebSocket or HTTP request
//! itself (TLS with the node's client configuration, `crate::tls`), and reports back through `on-network`
//! events. Everything is bounded: open sockets and requests per instance, each socket's send
//! buffer (in bytes; 503 when full), message and response sizes, and the event queue (a
//! socket's reader waits while the stub has not taken its events). A socket's writer writes
//! what waits in its buffer in batches, with one flush (one system call) per batch.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};

use crate::bindings::WitFailure;
use crate::bindings::protocol_stub::rethink::stub::net;
use crate::bindings::protocol_stub::rethink::stub::net_events::{
    HttpFailure, HttpResponse, NetEvent, WsCloseInfo,
};
use crate::error::Failure;
use crate::state::{Event, State, wit_failure};
use crate::writebehind::Barrier;

/// Bytes waiting to be written on one socket, at most: each message counts its length plus
/// [`PER_MESSAGE`]. A stub that writes faster than its peer reads gets 503 beyond it.
const SEND_BUFFER_BYTES: usize = 1 << 20;
/// What one waiting message costs in the send buffer besides its text.
const PER_MESSAGE: usize = 64;
/// Messages written before one flush, at most.
const WRITE_BATCH: usize = 256;
/// Largest WebSocket message received, and largest HTTP response body.
const MAX_MESSAGE: usize = 1 << 20;
const MAX_RESPONSE: usize = 4 << 20;
/// Bound of any connection attempt and request.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_REQUEST_TIME: Duration = Duration::from_secs(60);

/// What a socket's writer is asked to do; each after the key-value writes its barrier waits
/// for, with write-behind (`writebehind.rs`).
enum WsCommand {
    Text(String, Option<Barrier>),
    Close(u16, String, Option<Barrier>),
}

/// The close of a socket whose frame waited for a write that was discarded.
const LOST_WRITE: (u16, &str) = (1011, "the stub's key-value write was not committed");

/// The writing end of one socket: its commands and the bytes they hold.
struct Outgoing {
    tx: mpsc::UnboundedSender<WsCommand>,
    queued: Arc<AtomicUsize>,
}

/// The sockets and requests of one instance; dropped (and their tasks ended) with it.
pub(crate) struct NetState {
    max: usize,
    next: u64,
    sockets: HashMap<u64, (Outgoing, AbortHandle)>,
    requests: HashMap<u64, AbortHandle>,
    /// Events of this instance's sockets and requests, bounded.
    pub(crate) events: Option<mpsc::Sender<Event>>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Drop for NetState {
    fn drop(&mut self) {
        for (_, (_, task)) in self.sockets.drain() {
            task.abort();
        }
        for (_, task) in self.requests.drain() {
            task.abort();
        }
    }
}

impl NetState {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            max,
            next: 1,
            sockets: HashMap::new(),
            requests: HashMap::new(),
            events: None,
            tls: None,
        }
    }

    fn reserve(&mut self) -> Result<u64, Failure> {
        self.sockets.retain(|_, (out, _)| !out.tx.is_closed());
        self.requests.retain(|_, t| !t.is_finished());
        if self.sockets.len() + self.requests.len() >= self.max {
            return Err(Failure::new(
                429,
                format!("at most {} sockets and requests may be open", self.max),
            ));
        }
        let id = self.next;
        self.next += 1;
        Ok(id)
    }

    /// The node's TLS client configuration (`crate::tls`), made once per instance.
    fn tls(&mut self) -> Result<Arc<rustls::ClientConfig>, Failure> {
        if let Some(config) = &self.tls {
            return Ok(Arc::clone(config));
        }
        let config = crate::tls::client_config(&[])
            .map_err(|e| Failure::new(500, format!("TLS configuration: {e}")))?;
        self.tls = Some(Arc::clone(&config));
        Ok(config)
    }
}

/// Where a URL goes: its origin (for the allow-list), host, port and whether TLS is used.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) origin: String,
    host: String,
    port: u16,
    tls: bool,
}

/// Parses `url` for the given schemes (plain, TLS) and checks its origin against `allow`.
pub(crate) fn target(url: &str, schemes: [&str; 2], allow: &[String]) -> Result<Target, Failure> {
    let uri: http::Uri = url
        .parse()
        .map_err(|_| Failure::new(400, format!("not a URL: {url}")))?;
    let scheme = uri.scheme_str().unwrap_or_default().to_ascii_lowercase();
    let tls = if scheme == schemes[0] {
        false
    } else if scheme == schemes[1] {
        true
    } else {
        return Err(Failure::new(
            400,
            format!("{url}: only {}: and {}: URLs", schemes[0], schemes[1]),
        ));
    };
    let host = uri
        .host()
        .ok_or_else(|| Failure::new(400, format!("{url}: no host")))?
        .to_ascii_lowercase();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let origin = format!("{scheme}://{host}:{port}");
    let bare = format!("{scheme}://{host}");
    let default_port = port == if tls { 443 } else { 80 };
    if !allow
        .iter()
        .any(|a| a.eq_ignore_ascii_case(&origin) || (default_port && a.eq_ignore_ascii_case(&bare)))
    {
        return Err(Failure::new(
            403,
            format!("origin {origin} is not on the stub's allow-list"),
        ));
    }
    Ok(Target {
        origin,
        host,
        port,
        tls,
    })
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

async fn connect(
    t: &Target,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<Box<dyn Io>, String> {
    let tcp = tokio::time::timeout(
        CONNECT_TIMEOUT,
        TcpStream::connect((t.host.as_str(), t.port)),
    )
    .await
    .map_err(|_| format!("connecting to {} timed out", t.origin))?
    .map_err(|e| format!("connecting to {}: {e}", t.origin))?;
    let _ = tcp.set_nodelay(true);
    match tls {
        None => Ok(Box::new(tcp)),
        Some(config) => {
            let name = rustls::pki_types::ServerName::try_from(t.host.clone())
                .map_err(|e| format!("{}: {e}", t.host))?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS with {}: {e}", t.origin))?;
            Ok(Box::new(stream))
        }
    }
}

impl net::Host for State {
    fn ws_open(
        &mut self,
        url: String,
        protocols: Vec<String>,
    ) -> wasmtime::Result<Result<u64, WitFailure>> {
        let t = match target(&url, ["ws", "wss"], &self.ctx.spec.allow) {
            Ok(t) => t,
            Err(f) => return Ok(Err(wit_failure(f))),
        };
        let id = match self.net.reserve() {
            Ok(id) => id,
            Err(f) => return Ok(Err(wit_failure(f))),
        };
        let Some(events) = self.net.events.clone() else {
            return Ok(Err(wit_failure(Failure::new(503, "no network"))));
        };
        let tls = match t.tls.then(|| self.net.tls()).transpose() {
            Ok(tls) => tls,
            Err(f) => return Ok(Err(wit_failure(f))),
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let written = Arc::clone(&queued);
        let generation = self.generation;
        let tap = self.ctx.spec.tap.clone();
        let task = tokio::spawn(async move {
            let (code, reason) = run_ws(
                &url, protocols, t, tls, id, generation, &events, rx, &written, tap,
            )
            .await;
            let event = NetEvent::WsClosed(WsCloseInfo {
                socket: id,
                code,
                reason,
            });
            let _ = events.send(Event::Net { generation, event }).await;
        });
        self.net
            .sockets
            .insert(id, (Outgoing { tx, queued }, task.abort_handle()));
        Ok(Ok(id))
    }

    fn ws_send(&mut self, socket: u64, text: String) -> wasmtime::Result<Result<(), WitFailure>> {
        let Some((out, _)) = self.net.sockets.get(&socket) else {
            return Ok(Err(wit_failure(Failure::new(404, "unknown socket"))));
        };
        let cost = text.len() + PER_MESSAGE;
        if out.queued.load(Ordering::Acquire) + cost > SEND_BUFFER_BYTES {
            return Ok(Err(wit_failure(Failure::new(
                503,
                "the socket's send buffer is full",
            ))));
        }
        out.queued.fetch_add(cost, Ordering::AcqRel);
        if let Some(tap) = &self.ctx.spec.tap {
            tap.sent(socket, &text);
        }
        let barrier = self.ctx.wb.as_ref().and_then(|wb| wb.barrier());
        Ok(match out.tx.send(WsCommand::Text(text, barrier)) {
            Ok(()) => Ok(()),
            Err(_) => {
                self.net.sockets.remove(&socket);
                Err(wit_failure(Failure::new(404, "the socket is closed")))
            }
        })
    }

    fn ws_close(&mut self, socket: u64, code: u16, reason: String) -> wasmtime::Result<()> {
        if let Some((out, _)) = self.net.sockets.get(&socket) {
            // A full buffer: the peer is not reading, and the close would wait behind it: the
            // connection is dropped instead.
            // A close counts against the buffer as a frame would (the writer ends at the first
            // one, so it is never given back): closes called again and again end with the
            // connection dropped, not with a queue that grows.
            let full = out.queued.load(Ordering::Acquire) >= SEND_BUFFER_BYTES;
            let cost = reason.len() + PER_MESSAGE;
            let barrier = self.ctx.wb.as_ref().and_then(|wb| wb.barrier());
            let queued = !full && out.tx.send(WsCommand::Close(code, reason, barrier)).is_ok();
            if queued {
                out.queued.fetch_add(cost, Ordering::AcqRel);
            } else if let Some((_, task)) = self.net.sockets.remove(&socket) {
                task.abort();
            }
        }
        Ok(())
    }

    fn http_fetch(
        &mut self,
        request: net::HttpRequest,
    ) -> wasmtime::Result<Result<u64, WitFailure>> {
        let t = match target(&request.url, ["http", "https"], &self.ctx.spec.allow) {
            Ok(t) => t,
            Err(f) => return Ok(Err(wit_failure(f))),
        };
        let id = match self.net.reserve() {
            Ok(id) => id,
            Err(f) => return Ok(Err(wit_failure(f))),
        };
        let Some(events) = self.net.events.clone() else {
            return Ok(Err(wit_failure(Failure::new(503, "no network"))));
        };
        let tls = match t.tls.then(|| self.net.tls()).transpose() {
            Ok(tls) => tls,
            Err(f) => return Ok(Err(wit_failure(f))),
        };
        let generation = self.generation;
        let limit = Duration::from_millis(u64::from(request.timeout_ms)).min(MAX_REQUEST_TIME);
        let barrier = self.ctx.wb.as_ref().and_then(|wb| wb.barrier());
        let task = tokio::spawn(async move {
            if let Some(b) = barrier
                && !b.wait().await
            {
                let event = NetEvent::HttpFailed(HttpFailure {
                    request: id,
                    description: LOST_WRITE.1.into(),
                });
                let _ = events.send(Event::Net { generation, event }).await;
                return;
            }
            let event = match tokio::time::timeout(limit, fetch(request, t, tls, id)).await {
                Ok(Ok(r)) => NetEvent::HttpResponse(r),
                Ok(Err(description)) => NetEvent::HttpFailed(HttpFailure {
                    request: id,
                    description,
                }),
                Err(_) => NetEvent::HttpFailed(HttpFailure {
                    request: id,
                    description: format!("no response within {} ms", limit.as_millis()),
                }),
            };
            let _ = events.send(Event::Net { generation, event }).await;
        });
        self.net.requests.insert(id, task.abort_handle());
        Ok(Ok(id))
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_ws(
    url: &str,
    protocols: Vec<String>,
    t: Target,
    tls: Option<Arc<rustls::ClientConfig>>,
    id: u64,
    generation: u64,
    events: &mpsc::Sender<Event>,
    mut commands: mpsc::UnboundedReceiver<WsCommand>,
    queued: &AtomicUsize,
    tap: Option<Arc<dyn crate::spec::NetTap>>,
) -> (u16, String) {
    let mut request = match url.into_client_request() {
        Ok(r) => r,
        Err(e) => return (1006, e.to_string()),
    };
    if !protocols.is_empty()
        && let Ok(v) = protocols.join(", ").parse()
    {
        request.headers_mut().insert("sec-websocket-protocol", v);
    }
    let io = match connect(&t, tls).await {
        Ok(io) => io,
        Err(e) => return (1006, e),
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let (mut ws, _) =
        match tokio_tungstenite::client_async_with_config(request, io, Some(config)).await {
            Ok(ok) => ok,
            Err(e) => return (1006, e.to_string()),
        };
    let send = |event| events.send(Event::Net { generation, event });
    if send(NetEvent::WsOpened(id)).await.is_err() {
        return (1001, "the stub stopped".into());
    }
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(WsCommand::Text(text, barrier)) => {
                    // What else waits is written too, then flushed once.
                    let mut next = Some(WsCommand::Text(text, barrier));
                    let mut batch = 0;
                    while let Some(WsCommand::Text(text, barrier)) = next.take() {
                        if let Some(b) = barrier {
                            // What is written already goes out while the commit is awaited.
                            if !b.is_done() && batch > 0 && let Err(e) = ws.flush().await {
                                return (1006, e.to_string());
                            }
                            if !b.wait().await {
                                return lost_write(&mut ws).await;
                            }
                        }
                        let cost = text.len() + PER_MESSAGE;
                        if let Err(e) = ws.feed(Message::text(text)).await {
                            return (1006, e.to_string());
                        }
                        queued.fetch_sub(cost, Ordering::AcqRel);
                        batch += 1;
                        if batch < WRITE_BATCH {
                            next = commands.try_recv().ok();
                        }
                    }
                    if let Err(e) = ws.flush().await {
                        return (1006, e.to_string());
                    }
                    if let Some(WsCommand::Close(code, reason, barrier)) = next {
                        if let Some(b) = barrier && !b.wait().await {
                            return lost_write(&mut ws).await;
                        }
                        return close(&mut ws, code, reason).await;
                    }
                }
                Some(WsCommand::Close(code, reason, barrier)) => {
                    if let Some(b) = barrier && !b.wait().await {
                        return lost_write(&mut ws).await;
                    }
                    return close(&mut ws, code, reason).await;
                }
                None => {
                    let _ = ws.close(None).await;
                    return (1001, "the stub stopped".into());
                }
            },
            message = ws.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    if let Some(tap) = &tap {
                        tap.received(id, text.as_str());
                    }
                    let event = NetEvent::WsText((id, text.as_str().to_owned()));
                    // Waits while the stub has not taken earlier events: the peer is slowed.
                    if send(event).await.is_err() {
                        return (1001, "the stub stopped".into());
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    return frame.map_or((1005, String::new()), |f| {
                        (f.code.into(), f.reason.as_str().to_owned())
                    });
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return (1006, e.to_string()),
                None => return (1006, "the connection broke".into()),
            },
        }
    }
}

/// Closes `ws` without writing what waited for a discarded key-value write.
async fn lost_write<T>(ws: &mut tokio_tungstenite::WebSocketStream<T>) -> (u16, String)
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    close(ws, LOST_WRITE.0, LOST_WRITE.1.into()).await
}

/// Closes `ws` with `code` and `reason`; the socket's end as reported to the stub.
async fn close<T>(
    ws: &mut tokio_tungstenite::WebSocketStream<T>,
    code: u16,
    reason: String,
) -> (u16, String)
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let frame = CloseFrame {
        code: code.into(),
        reason: reason.clone().into(),
    };
    let _ = ws.close(Some(frame)).await;
    (code, reason)
}

async fn fetch(
    request: net::HttpRequest,
    t: Target,
    tls: Option<Arc<rustls::ClientConfig>>,
    id: u64,
) -> Result<HttpResponse, String> {
    let uri: http::Uri = request.url.parse().map_err(|e| format!("{e}"))?;
    let path = uri
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
    let mut builder = hyper::Request::builder()
        .method(request.method.as_str())
        .uri(path)
        .header("host", uri.authority().map_or("", |a| a.as_str()));
    for (k, v) in &request.headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    let body = Full::new(Bytes::from(request.body.unwrap_or_default()));
    let req = builder.body(body).map_err(|e| e.to_string())?;
    let io = connect(&t, tls).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .map_err(|e| e.to_string())?;
    let conn = tokio::spawn(conn);
    let response = sender.send_request(req).await.map_err(|e| e.to_string());
    let result = match response {
        Ok(response) => {
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                .collect();
            Limited::new(response.into_body(), MAX_RESPONSE)
                .collect()
                .await
                .map(|b| HttpResponse {
                    request: id,
                    status,
                    headers,
                    body: b.to_bytes().to_vec(),
                })
                .map_err(|e| format!("reading the response: {e}"))
        }
        Err(e) => Err(e),
    };
    conn.abort();
    result
}
