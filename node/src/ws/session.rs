//! One WebSocket connection of a hyperty runtime, generic over `Sink`/`Stream` so that it can be
//! driven by channels in unit tests and by axum's WebSocket in the server.
//!
//! Phase 1, the handshake: the first message must be `open` or `re-open` to `mn:/session`;
//! anything else is answered directly (with `seq` 0, since no session exists yet). A `re-open`
//! must present the identity the session was opened with.
//! Phase 2, attached: a reader handles frames (routing, control, errors) while a writer drains
//! the session outbox to the socket and pings the peer. Every frame the node sends then goes
//! through the outbox and carries the session's `seq`.
//!
//! Backpressure: the node's answers count against the session's outbox bounds. While a frame is
//! being handled (its messages routed, its answers waiting for room in a full outbox), the
//! reader still applies acknowledgements as they arrive, since they may be what frees the room
//! (a runtime may have sent requests, then acknowledgements); other frames are held, up to
//! `HOLD_FRAMES` frames and `session.max_frame_bytes` bytes, and then nothing more is read
//! until the handling is done, so a runtime that never acknowledges is slowed down instead of
//! growing the node's memory. If no room appears within `session.idle_timeout_secs`, the
//! connection is closed with 1008.
//!
//! Closing: every way the node ends a connection (too many refused frames before or after
//! `open`, invalid UTF-8, idle, expired credential, `close`) first writes the answers owed, then
//! a close frame with its code and reason, then waits (bounded) for the peer's close frame.
//! Refusals are [`SessionError`]s, turned into codes and descriptions only by [`codec`].

mod handshake;
mod read_ahead;

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use rethink_proto::{Code, Envelope, Frame, Rejected, parse_frame};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::codec;
use super::control::{self, Control};
use super::error::SessionError;
use crate::auth::{AuthError, Identity};
use crate::bus::{SESSION, Session};
use crate::node::Node;
use handshake::handshake;
use read_ahead::{Held, read_failed, with_acks};

/// Consecutive frames that produce only errors before the connection is closed.
const MAX_STRIKES: u32 = 50;
/// Frames written per wake-up of the writer before it flushes.
const WRITE_BATCH: usize = 256;
/// Most frames read ahead (and held) while a frame is handled.
const HOLD_FRAMES: usize = 256;
/// How long the node writes owed answers, and then waits for the peer's close frame, when it
/// closes a connection.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Close codes the node uses (RFC 6455 section 7.4.1).
mod close_code {
    pub(super) const NORMAL: u16 = 1000;
    pub(super) const GOING_AWAY: u16 = 1001;
    pub(super) const INVALID_DATA: u16 = 1007;
    pub(super) const POLICY: u16 = 1008;
}

/// A read error of the WebSocket stream, as far as the session protocol cares.
pub trait ReadError: Display {
    /// Whether a text frame held invalid UTF-8 (the connection is closed with 1007).
    fn is_invalid_utf8(&self) -> bool;
}

impl ReadError for axum::Error {
    fn is_invalid_utf8(&self) -> bool {
        std::error::Error::source(self)
            .and_then(|e| e.downcast_ref::<tungstenite::Error>())
            .is_some_and(|e| matches!(e, tungstenite::Error::Utf8(_)))
    }
}

/// Channel-driven sessions (unit tests) report their read errors as text.
impl ReadError for String {
    fn is_invalid_utf8(&self) -> bool {
        false
    }
}

/// Why the attached phase ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The runtime sent `close`: flush the answer, end the session, close normally.
    CloseRequested,
    /// The session ended elsewhere (expired, closed): close normally.
    Gone,
    /// Cancelled: the session was re-opened elsewhere, or the node is shutting down.
    Cancelled,
    /// No frame (not even a pong) within the idle timeout.
    Idle,
    /// Too many bad frames in a row.
    Misbehaving,
    /// A text frame was not UTF-8.
    InvalidUtf8,
    /// The outbox stayed full (nothing acknowledged) for the idle timeout.
    Stalled,
    /// The peer went away or the socket failed.
    PeerGone,
    /// The credential the session was opened with has expired.
    Expired,
}

impl End {
    /// The close frame for this end; `None` when the peer is gone.
    fn close_frame(self, shutting_down: bool) -> Option<(u16, &'static str)> {
        Some(match self {
            End::CloseRequested | End::Gone => (close_code::NORMAL, "session closed"),
            End::Cancelled if shutting_down => (close_code::GOING_AWAY, "node shutting down"),
            End::Cancelled => (
                close_code::POLICY,
                "session re-opened on another connection",
            ),
            End::Idle => (close_code::GOING_AWAY, "idle timeout"),
            End::Misbehaving => (close_code::POLICY, "too many invalid messages"),
            End::InvalidUtf8 => (close_code::INVALID_DATA, "invalid UTF-8 in a text frame"),
            End::Stalled => (
                close_code::POLICY,
                "outbox full: acknowledge the frames you received",
            ),
            End::Expired => (close_code::POLICY, "credential expired"),
            End::PeerGone => return None,
        })
    }

    /// Whether the answers already owed are written before closing.
    fn flushes(self) -> bool {
        !matches!(self, End::Gone | End::Cancelled | End::PeerGone)
    }
}

/// Outcome of handling one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Accepted,
    Refused,
    CloseRequested,
    Gone,
    Stalled,
}

/// Why an answer did not reach the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unanswered {
    /// The session has ended.
    Gone,
    /// The outbox stayed full for the idle timeout.
    Stalled,
}

impl Step {
    /// The step of a refusal, by whether its answer was put in the outbox.
    fn refused(answered: Result<(), Unanswered>) -> Self {
        match answered {
            Ok(()) => Step::Refused,
            Err(Unanswered::Gone) => Step::Gone,
            Err(Unanswered::Stalled) => Step::Stalled,
        }
    }
}

/// The result of the handshake phase.
enum Handshake {
    /// A session is attached to this connection; `reply` is the answer to `open` / `re-open`.
    Attached {
        session: Arc<Session>,
        cancel: CancellationToken,
        reply: Envelope,
    },
    /// Close the connection with this code and reason.
    Close(u16, &'static str),
    /// The peer went away.
    PeerGone,
}

/// Serves one connection until it ends.
pub async fn run<S, R, SE, RE>(node: Node, mut sink: S, mut stream: R, pre_auth: Option<Identity>)
where
    S: Sink<Message, Error = SE> + Unpin + Send,
    R: Stream<Item = Result<Message, RE>> + Unpin + Send,
    SE: Display,
    RE: ReadError,
{
    let conn_id = node.bus().next_connection_id();
    match handshake(&node, &mut sink, &mut stream, pre_auth.as_ref(), conn_id).await {
        Handshake::Attached {
            session,
            cancel,
            reply,
        } => {
            let shutdown = node.shutdown_token().clone();
            let span = tracing::debug_span!("session", id = %session.key(), runtime = %session.runtime_url());
            let conn = Connection {
                sink,
                stream,
                id: conn_id,
                cancel,
                shutdown,
            };
            attached(node, session, conn, reply).instrument(span).await;
        }
        Handshake::Close(code, reason) => {
            tracing::debug!(code, reason, "closing connection before open");
            close(&mut sink, &mut stream, code, reason).await;
        }
        Handshake::PeerGone => {
            let _ = sink.close().await;
        }
    }
}

/// The socket halves and signals of an attached connection.
struct Connection<S, R> {
    sink: S,
    stream: R,
    id: u64,
    /// Cancelled when the session is re-opened elsewhere or closed.
    cancel: CancellationToken,
    shutdown: CancellationToken,
}

/// The attached phase, until the connection ends.
async fn attached<S, R, SE, RE>(
    node: Node,
    session: Arc<Session>,
    mut conn: Connection<S, R>,
    reply: Envelope,
) where
    S: Sink<Message, Error = SE> + Unpin + Send,
    R: Stream<Item = Result<Message, RE>> + Unpin + Send,
    SE: Display,
    RE: ReadError,
{
    let ping = node.config().session.ping_interval;
    let attached_at = node.clock().now();
    let expiry = credential_expiry(&node, &session);
    let end = tokio::select! {
        () = expiry => End::Expired,
        end = read_loop(&node, &session, &mut conn.stream, reply, attached_at) => end,
        end = write_loop(&session, conn.id, &mut conn.sink, &conn.cancel, &conn.shutdown, ping) => end,
    };
    if end == End::Expired {
        let url = session.runtime_url().to_string();
        let notice = codec::refusal("null", SESSION, &url, &SessionError::CredentialExpired);
        node.metrics().refuse(Code::UNAUTHORIZED.as_u16());
        // Without a reader nothing frees room any more: only if it fits now.
        let _ = node.bus().try_answer(&session, &notice).await;
    }
    if end.flushes() {
        // Deliver the answers already owed (to `close`, to the last bad frames) before closing.
        let mut frames = Vec::new();
        let mut settles = Vec::new();
        session.take_unsent(conn.id, usize::MAX, &mut frames, &mut settles);
        let sink = &mut conn.sink;
        let flush = async {
            for f in frames {
                if sink.feed(Message::Text(f.into())).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_ok() {
                settles.iter().for_each(crate::store::Settle::fire);
            }
        };
        let _ = tokio::time::timeout(CLOSE_WAIT, flush).await;
    }
    node.bus().detach(&session, conn.id);
    node.bus().save_handled(&session).await;
    if matches!(end, End::CloseRequested | End::Expired) {
        node.bus().end_session(&session).await;
    } else {
        node.bus()
            .publish_status(&session, crate::bus::RuntimeStatus::Disconnected)
            .await;
    }
    let Some((code, reason)) = end.close_frame(conn.shutdown.is_cancelled()) else {
        tracing::debug!("connection lost; session kept for its resume window");
        return;
    };
    tracing::debug!(?end, "closing connection");
    close(&mut conn.sink, &mut conn.stream, code, reason).await;
}

/// Sends a close frame, then waits (at most [`CLOSE_WAIT`]) for the peer's, so that the peer
/// reads everything sent before it and the closing handshake completes before TCP goes away.
/// Every step is bounded: a peer that reads nothing (its socket full) cannot hold the connection
/// by not taking the close frame.
async fn close<S, R, SE, RE>(sink: &mut S, stream: &mut R, code: u16, reason: &'static str)
where
    S: Sink<Message, Error = SE> + Unpin,
    R: Stream<Item = Result<Message, RE>> + Unpin,
    RE: ReadError,
{
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    };
    let sent = tokio::time::timeout(CLOSE_WAIT, sink.send(Message::Close(Some(frame)))).await;
    if matches!(sent, Ok(Ok(()))) {
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            loop {
                match stream.next().await {
                    Some(Ok(Message::Close(_))) | None => break,
                    Some(Ok(_)) => {}
                    Some(Err(e)) if e.is_invalid_utf8() => {}
                    Some(Err(_)) => break,
                }
            }
        })
        .await;
    }
    let _ = tokio::time::timeout(CLOSE_WAIT, sink.close()).await;
}

/// Resolves when the session's credential expires (never for credentials without expiry). The
/// deadline is taken at once, on the node's clock.
fn credential_expiry(node: &Node, session: &Session) -> impl Future<Output = ()> + use<> {
    let clock = node.clock().clone();
    let deadline = session.identity().expires_at.map(|exp| {
        let exp_ms = i64::try_from(exp)
            .unwrap_or(i64::MAX / 1000)
            .saturating_mul(1000);
        let left = u64::try_from(exp_ms.saturating_sub(clock.unix_ms())).unwrap_or(0);
        clock.now() + Duration::from_millis(left)
    });
    async move {
        match deadline {
            Some(deadline) => clock.sleep_until(deadline).await,
            None => std::future::pending().await,
        }
    }
}

/// Puts an answer in the session's outbox, waiting (at most the idle timeout) for room.
async fn answer(node: &Node, session: &Arc<Session>, reply: &Envelope) -> Result<(), Unanswered> {
    let wait = node.config().session.idle_timeout;
    match tokio::time::timeout(wait, node.bus().answer(session, reply)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Unanswered::Gone),
        Err(_) => Err(Unanswered::Stalled),
    }
}

/// Answers a refused message: the metric, one debug line, the response.
async fn refuse(
    node: &Node,
    session: &Arc<Session>,
    id_json: &str,
    from: &str,
    to: &str,
    e: &SessionError,
) -> Step {
    node.metrics().refuse(codec::session_code(e).as_u16());
    tracing::debug!(error = %e, %from, %to, "message refused");
    let reply = codec::refusal(id_json, from, to, e);
    Step::refused(answer(node, session, &reply).await)
}

/// Refuses a message that did not parse.
async fn refuse_rejected(node: &Node, session: &Arc<Session>, rej: Rejected) -> Step {
    let id = rej.id_json.as_deref().unwrap_or("null");
    let to = rej.from.as_deref().unwrap_or(session.runtime_url());
    refuse(
        node,
        session,
        id,
        SESSION,
        to,
        &SessionError::Parse(rej.error.clone()),
    )
    .await
}

async fn write_loop<S, SE>(
    session: &Arc<Session>,
    conn_id: u64,
    sink: &mut S,
    cancel: &CancellationToken,
    shutdown: &CancellationToken,
    ping_interval: Duration,
) -> End
where
    S: Sink<Message, Error = SE> + Unpin,
{
    let mut frames = Vec::with_capacity(WRITE_BATCH);
    let mut settles = Vec::new();
    let mut ping = tokio::time::interval(ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    loop {
        session.take_unsent(conn_id, WRITE_BATCH, &mut frames, &mut settles);
        if frames.is_empty() {
            tokio::select! {
                _ = cancel.cancelled() => return End::Cancelled,
                _ = shutdown.cancelled() => return End::Cancelled,
                _ = session.wait_for_frames() => continue,
                _ = ping.tick() => {
                    if sink.send(Message::Ping(Default::default())).await.is_err() {
                        return End::PeerGone;
                    }
                    continue;
                }
            }
        }
        for f in frames.drain(..) {
            if sink.feed(Message::Text(f.into())).await.is_err() {
                return End::PeerGone;
            }
        }
        if sink.flush().await.is_err() {
            return End::PeerGone;
        }
        // On the socket: their senders may go on (the store settles the frames not written).
        for settle in settles.drain(..) {
            settle.fire();
        }
    }
}

/// Answers the handshake (`reply`), then reads and handles frames until the connection ends;
/// idle when no frame arrives within the idle timeout of the last one (or of `attached_at`).
async fn read_loop<R, RE>(
    node: &Node,
    session: &Arc<Session>,
    stream: &mut R,
    reply: Envelope,
    attached_at: std::time::Instant,
) -> End
where
    R: Stream<Item = Result<Message, RE>> + Unpin,
    RE: ReadError,
{
    let idle: Duration = node.config().session.idle_timeout;
    let mut held = Held::new(node.config().session.max_frame_bytes);
    // The answer to `open` / `re-open` goes through the outbox like every other frame (after a
    // replay into a full outbox, it waits for the runtime's acknowledgements).
    match with_acks(
        node,
        session,
        stream,
        &mut held,
        answer(node, session, &reply),
    )
    .await
    {
        Ok(Ok(())) => {}
        // Handed over to another node before its answer (a re-open there asked for it while
        // this one was arriving): closed as when superseded.
        Ok(Err(Unanswered::Gone)) if session.handed_over() => return End::Cancelled,
        Ok(Err(Unanswered::Gone)) => return End::Gone,
        Ok(Err(Unanswered::Stalled)) => return End::Stalled,
        Err(end) => return end,
    }
    let clock = node.clock();
    let mut deadline = attached_at + idle;
    let mut strikes = 0u32;
    loop {
        let msg = match held.pop() {
            Some(msg) => msg,
            None => match clock.timeout_at(deadline, stream.next()).await {
                Err(_) => return End::Idle,
                Ok(None) => return End::PeerGone,
                Ok(Some(Err(e))) => return read_failed(&e),
                Ok(Some(Ok(m))) => m,
            },
        };
        deadline = clock.now() + idle;
        let step = match msg {
            Message::Text(text) => {
                with_acks(
                    node,
                    session,
                    stream,
                    &mut held,
                    handle_text(node, session, &text),
                )
                .await
            }
            Message::Binary(_) => {
                let url = session.runtime_url();
                let refusal = refuse(node, session, "null", SESSION, url, &SessionError::Binary);
                with_acks(node, session, stream, &mut held, refusal).await
            }
            Message::Ping(_) | Message::Pong(_) => Ok(Step::Accepted),
            Message::Close(_) => return End::PeerGone,
        };
        let step = match step {
            Ok(step) => step,
            Err(end) => return end,
        };
        match step {
            Step::CloseRequested => return End::CloseRequested,
            Step::Gone => return End::Gone,
            Step::Stalled => return End::Stalled,
            Step::Accepted | Step::Refused => {}
        }
        let good = step == Step::Accepted;
        strikes = if good { 0 } else { strikes + 1 };
        if strikes >= MAX_STRIKES {
            return End::Misbehaving;
        }
    }
}

async fn handle_text(node: &Node, session: &Arc<Session>, text: &str) -> Step {
    let url: &str = session.runtime_url();
    let max = node.config().session.max_frame_bytes;
    if text.len() > max {
        let (id, from) = rethink_proto::salvage(text);
        let error = SessionError::FrameTooLarge {
            size: text.len(),
            max,
        };
        let to = from.as_deref().unwrap_or(url);
        let id = id.as_deref().unwrap_or("null");
        return refuse(node, session, id, SESSION, to, &error).await;
    }
    match parse_frame(text) {
        Frame::Invalid(e) => refuse(node, session, "null", SESSION, url, &e.into()).await,
        Frame::Single(item) => handle_message(node, session, item, text).await,
        Frame::Batch(items) => {
            // A batch counts as accepted if any of its messages was.
            let mut outcome = Step::Refused;
            for item in items {
                // Batch elements have no raw text of their own for the short ack form.
                match handle_message(node, session, item, "").await {
                    Step::Accepted => outcome = Step::Accepted,
                    Step::Refused => {}
                    end @ (Step::CloseRequested | Step::Gone | Step::Stalled) => return end,
                }
            }
            outcome
        }
    }
}

/// Handles one message: a refused one is answered, a control one acted on, the rest routed.
async fn handle_message(
    node: &Node,
    session: &Arc<Session>,
    item: Result<Envelope, Rejected>,
    text: &str,
) -> Step {
    let bus = node.bus();
    let env = match item {
        Ok(env) => env,
        Err(rej) => {
            if let Some(seq) = control::short_ack(text) {
                bus.ack(session, seq).await;
                return Step::Accepted;
            }
            return refuse_rejected(node, session, rej).await;
        }
    };
    if env.to().len() == 1 && env.first_to() == SESSION {
        return control_message(node, session, &env).await;
    }
    let cseq = control::cseq(&env);
    if let Some(cseq) = cseq
        && !session.accept_cseq(cseq)
    {
        // Sent again after a lost connection or a restart of the runtime's stub: handled.
        return Step::Accepted;
    }
    let origin = bus.origin_of(session);
    let env = crate::bus::identity::stamp(&env, &origin).unwrap_or(env);
    let permit = match bus.authorize(&env, &origin) {
        Ok(p) => p,
        Err(denied) => {
            let (id, at, to) = (env.id_json(), env.first_to(), env.from());
            return refuse(node, session, id, at, to, &denied.into()).await;
        }
    };
    let report = match cseq {
        // Another node's: handled once even across a SIGKILL of this node (`bus/handled.rs`);
        // its answers wait for the commit, the next frame does not.
        Some(cseq) if bus.node_domain(session).is_some() => {
            let (report, committed) = bus.route_handled(permit, session, cseq).await;
            if !report.replies.is_empty() || !report.failures.is_empty() {
                committed.wait().await;
            }
            report
        }
        _ => bus.route(permit).await,
    };
    for reply in &report.replies {
        if let Err(e) = answer(node, session, reply).await {
            return Step::refused(Err(e));
        }
    }
    let Some(response) = codec::failures_response(&env, &report.failures) else {
        return Step::Accepted;
    };
    for f in &report.failures {
        node.metrics().refuse(codec::route_code(&f.error).as_u16());
        tracing::debug!(error = %f.error, to = %f.recipient, from = %env.from(), "recipient refused");
    }
    Step::refused(answer(node, session, &response).await)
}

async fn control_message(node: &Node, session: &Arc<Session>, env: &Envelope) -> Step {
    let bus = node.bus();
    let error = match control::parse(env) {
        Ok(Control::Ack { seq }) => {
            bus.ack(session, seq).await;
            return Step::Accepted;
        }
        Ok(Control::Sync) => {
            // The answer waits for the commit of what was handled before it; the frames after
            // it are read and routed meanwhile (a node session's peer keeps one `sync` open at
            // a time: waiting here stopped its stream for a commit at every round).
            let cseq = session.cseq();
            let committed = bus.save_handled_queued(session).await;
            let reply = env.reply(Code::OK).value(json!({ "cseq": cseq })).build();
            match reply {
                Ok(reply) => {
                    let (node, session) = (node.clone(), Arc::clone(session));
                    tokio::spawn(async move {
                        committed.await;
                        // A connection that ended or stalled meanwhile is dealt with by the
                        // connection's own next step.
                        let _ = answer(&node, &session, &reply).await;
                    });
                }
                Err(e) => tracing::error!(error = %e, "the answer to sync"),
            }
            return Step::Accepted;
        }
        Ok(Control::Close) => {
            if let Ok(reply) = env.reply(Code::OK).build() {
                // The session ends either way: the answer only if it fits (the close frame
                // that follows says the same).
                let _ = bus.try_answer(session, &reply).await;
            }
            tracing::debug!("session closed by the runtime");
            return Step::CloseRequested;
        }
        Ok(Control::Open { .. } | Control::ReOpen { .. }) => SessionError::AlreadyOpen,
        Err(e) => e.into(),
    };
    refuse(node, session, env.id_json(), SESSION, env.from(), &error).await
}

#[cfg(test)]
mod tests;
