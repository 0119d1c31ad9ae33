//! Connections: the accept loop and what bounds each connection.
//!
//! - A connection slot (a semaphore permit, `server.max_connections`) is taken *before*
//!   `accept`, so beyond the limit new connections wait in the kernel's listen backlog; the slot
//!   travels inside the socket wrapper ([`Guarded`]), also through a WebSocket upgrade, and is
//!   returned when the socket is closed.
//! - TLS handshakes in progress are bounded the same way (`server.max_tls_handshakes`) and each
//!   has a deadline (`server.tls_handshake_timeout_ms`).
//! - [`Guarded`] times the socket's reads by the phase of its HTTP exchange ([`ConnState`]): a
//!   request head must be complete within `server.header_timeout_ms` of the connection's accept
//!   or of the first byte of a later request (slow-header clients), and a kept-alive connection
//!   with no request in progress is closed after `server.keepalive_timeout_secs`. No deadline
//!   applies while a request is served (the request timeout does, see `layers`) nor after a
//!   WebSocket upgrade (the session has its own idle timeout).
//! - At shutdown, [`Connections::drop_all`] makes every socket's reads and writes fail, which
//!   ends every connection and WebSocket session however busy or blocked it is.
//!
//! hyper's own `header_read_timeout` is not used: it starts when a connection becomes idle, so it
//! cannot give idle keep-alive connections a longer time than a request head.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use futures_util::future::BoxFuture;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tower::ServiceExt as _;

use crate::config::ServerConfig;
use crate::locks::lock;

/// The node's open connections, as shutdown sees them.
#[derive(Debug, Clone)]
pub struct Connections {
    slots: Arc<Semaphore>,
    max: u32,
    force: CancellationToken,
}

impl Connections {
    pub(super) fn new(max: u32) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max as usize)),
            max,
            force: CancellationToken::new(),
        }
    }

    /// Sockets open now (while the accept loop runs, it holds one slot more, for the next
    /// connection).
    pub fn open(&self) -> usize {
        (self.max as usize).saturating_sub(self.slots.available_permits())
    }

    /// Resolves once every socket is closed (call it after the accept loop ended).
    pub async fn all_closed(&self) {
        // Err: the semaphore was closed, which this module never does.
        let _ = self.slots.acquire_many(self.max).await;
    }

    /// Makes every socket's reads and writes fail from now on: each connection, WebSocket
    /// session and TLS handshake ends at its next I/O, or at once if it is waiting for one.
    pub fn drop_all(&self) {
        self.force.cancel();
    }
}

/// Where a connection's HTTP exchange is, which decides its read deadline.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for (the rest of) a request head, since the accept or since the first byte.
    Head(Instant),
    /// Requests being served (their answers not yet fully written).
    Busy(u32),
    /// Kept alive, no request in progress, since then.
    Idle(Instant),
    /// A WebSocket now: no deadline here.
    Upgraded,
}

/// A connection's phase, shared by its socket wrapper (reads) and its service (requests).
#[derive(Debug)]
pub(super) struct ConnState {
    inner: Mutex<PhaseState>,
}

#[derive(Debug)]
struct PhaseState {
    phase: Phase,
    /// The task waiting to read, woken when the phase changes the deadline.
    reader: Option<Waker>,
}

impl ConnState {
    fn new() -> Self {
        Self {
            inner: Mutex::new(PhaseState {
                phase: Phase::Head(Instant::now()),
                reader: None,
            }),
        }
    }

    /// Bytes arrived: on an idle connection, a request head begins.
    fn bytes_read(&self) {
        let mut s = lock(&self.inner);
        if let Phase::Idle(_) = s.phase {
            s.phase = Phase::Head(Instant::now());
        }
    }

    /// A request's head is complete and its handling starts.
    fn request_started(&self) {
        let mut s = lock(&self.inner);
        s.phase = match s.phase {
            Phase::Busy(n) => Phase::Busy(n + 1),
            Phase::Upgraded => Phase::Upgraded,
            Phase::Head(_) | Phase::Idle(_) => Phase::Busy(1),
        };
    }

    /// A request's answer is written (or abandoned).
    fn request_ended(&self) {
        let mut s = lock(&self.inner);
        match s.phase {
            Phase::Busy(n) if n > 1 => s.phase = Phase::Busy(n - 1),
            Phase::Busy(_) => {
                s.phase = Phase::Idle(Instant::now());
                // A read may be pending without a deadline: let it take the idle one.
                if let Some(w) = s.reader.take() {
                    w.wake();
                }
            }
            _ => {}
        }
    }

    /// The connection became a WebSocket.
    fn upgraded(&self) {
        lock(&self.inner).phase = Phase::Upgraded;
    }

    /// The read deadline now, remembering `waker` as the reader's.
    fn read_deadline(&self, waker: &Waker, timeouts: &Timeouts) -> Option<Instant> {
        let mut s = lock(&self.inner);
        match &s.reader {
            Some(w) if w.will_wake(waker) => {}
            _ => s.reader = Some(waker.clone()),
        }
        match s.phase {
            Phase::Head(since) => Some(since + timeouts.header),
            Phase::Idle(since) => Some(since + timeouts.keepalive),
            Phase::Busy(_) | Phase::Upgraded => None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Timeouts {
    header: Duration,
    keepalive: Duration,
}

/// A TCP socket with its connection slot, its read deadlines, and the shutdown's off switch.
pub(super) struct Guarded {
    io: TcpStream,
    state: Arc<ConnState>,
    timeouts: Timeouts,
    timer: Pin<Box<Sleep>>,
    timer_at: Option<Instant>,
    force: Pin<Box<WaitForCancellationFutureOwned>>,
    _slot: OwnedSemaphorePermit,
}

impl std::fmt::Debug for Guarded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded")
            .field("io", &self.io)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

fn aborted() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "connection dropped at shutdown",
    )
}

impl Guarded {
    fn new(
        io: TcpStream,
        state: Arc<ConnState>,
        timeouts: Timeouts,
        force: &CancellationToken,
        slot: OwnedSemaphorePermit,
    ) -> Self {
        Self {
            io,
            state,
            timeouts,
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            timer_at: None,
            force: Box::pin(force.clone().cancelled_owned()),
            _slot: slot,
        }
    }

    /// Whether the connection was dropped at shutdown (registers the waker if not).
    fn forced(&mut self, cx: &mut Context<'_>) -> bool {
        self.force.as_mut().poll(cx).is_ready()
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.forced(cx) {
            return Poll::Ready(Err(aborted()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.state.bytes_read();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let Some(at) = this.state.read_deadline(cx.waker(), &this.timeouts) else {
                    return Poll::Pending;
                };
                if this.timer_at != Some(at) {
                    this.timer.as_mut().reset(at);
                    this.timer_at = Some(at);
                }
                match this.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no complete request in time",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.forced(cx) {
            return Poll::Ready(Err(aborted()));
        }
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.forced(cx) {
            return Poll::Ready(Err(aborted()));
        }
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// The node's routes as one connection's hyper service: marks its requests in the
/// connection's phase.
#[derive(Debug, Clone)]
struct ConnService {
    app: Router,
    state: Arc<ConnState>,
}

/// Ends its request in the connection's phase when dropped (with the answer's body).
#[derive(Debug)]
struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        self.state.request_started();
        let in_flight = InFlight(Arc::clone(&self.state));
        let app = self.app.clone();
        Box::pin(async move {
            let response = app.oneshot(req).await?;
            if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                in_flight.0.upgraded();
            }
            Ok(response.map(|body| {
                Body::new(Tracked {
                    body,
                    _in_flight: in_flight,
                })
            }))
        })
    }
}

/// An answer's body that ends its request when written (dropped).
#[derive(Debug)]
struct Tracked {
    body: Body,
    _in_flight: InFlight,
}

impl HttpBody for Tracked {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// TLS for the accept loop: the acceptor and the handshakes in progress.
pub(super) struct TlsAccept {
    pub(super) acceptor: TlsAcceptor,
    pub(super) handshakes: Arc<Semaphore>,
}

impl std::fmt::Debug for TlsAccept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsAccept")
            .field("handshakes", &self.handshakes)
            .finish_non_exhaustive()
    }
}

/// Accepts connections until `shutdown`, each in its own task.
pub(super) async fn accept_loop(
    tcp: TcpListener,
    tls: Option<TlsAccept>,
    app: Router,
    config: ServerConfig,
    conns: Connections,
    shutdown: CancellationToken,
) {
    let timeouts = Timeouts {
        header: config.header_timeout,
        keepalive: config.keepalive_timeout,
    };
    loop {
        let slot = tokio::select! {
            () = shutdown.cancelled() => return,
            slot = Arc::clone(&conns.slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return,
            },
        };
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = tcp.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before accept: retry
                    // shortly rather than spin.
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let state = Arc::new(ConnState::new());
        let io = Guarded::new(stream, Arc::clone(&state), timeouts, &conns.force, slot);
        let service = ConnService {
            app: app.clone(),
            state,
        };
        match &tls {
            None => {
                tokio::spawn(serve_http(io, service, peer, shutdown.clone()));
            }
            Some(tls) => {
                let handshake = tokio::select! {
                    () = shutdown.cancelled() => return,
                    permit = Arc::clone(&tls.handshakes).acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => return,
                    },
                };
                let acceptor = tls.acceptor.clone();
                let within = config.tls_handshake_timeout;
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    let done = tokio::time::timeout(within, acceptor.accept(io)).await;
                    drop(handshake);
                    match done {
                        Ok(Ok(tls)) => serve_http(tls, service, peer, shutdown).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
}

/// Serves HTTP/1.1 (with upgrades) on one connection; at `shutdown`, finishes the request in
/// progress and closes.
async fn serve_http<I>(io: I, service: ConnService, peer: SocketAddr, shutdown: CancellationToken)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = http1::Builder::new();
    // Deadlines are `Guarded`'s (see the module docs).
    builder.header_read_timeout(None::<Duration>);
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended");
    }
}
