//! One WebSocket connection of a hyperty runtime, generic over `Sink`/`Stream` so that it can be
//! driven by channels in unit tests and by axum's WebSocket in the server.
//!
//! Phase 1, the handshake: the first message must be `open` or `re-open` to `mn:/session`;
//! anything else is answered directly (with `seq` 0, since no session exists yet).
//! Phase 2, attached: a reader handles frames (routing, control, errors) while a writer drains
//! the session outbox to the socket and pings the peer. Every frame the node sends then goes
//! through the outbox and carries the session's `seq`.

use std::fmt::Display;
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
use crate::auth::Identity;
use crate::bus::{Origin, SESSION, Session};
use crate::node::Node;

/// Consecutive frames that produce only errors before the connection is closed.
const MAX_STRIKES: u32 = 50;
/// Frames written per wake-up of the writer before it flushes.
const WRITE_BATCH: usize = 256;

/// Close codes the node uses.
mod close_code {
    pub(super) const NORMAL: u16 = 1000;
    pub(super) const GOING_AWAY: u16 = 1001;
    pub(super) const POLICY: u16 = 1008;
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
    /// The peer went away or the socket failed.
    PeerGone,
    /// The credential the session was opened with has expired.
    Expired,
}

/// Outcome of handling one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Accepted,
    Refused,
    CloseRequested,
    Gone,
}

impl Step {
    fn from_answer(delivered: bool) -> Self {
        if delivered { Step::Refused } else { Step::Gone }
    }
}

/// Serves one connection until it ends.
pub async fn run<S, R, SE, RE>(node: Node, mut sink: S, mut stream: R, pre_auth: Option<Identity>)
where
    S: Sink<Message, Error = SE> + Unpin + Send,
    R: Stream<Item = Result<Message, RE>> + Unpin + Send,
    SE: Display,
    RE: Display,
{
    let conn_id = node.bus().next_connection_id();
    let Some((session, cancel)) = handshake(&node, &mut sink, &mut stream, pre_auth, conn_id).await
    else {
        let _ = sink.close().await;
        return;
    };
    let shutdown = node.shutdown_token().clone();
    let span =
        tracing::debug_span!("session", id = %session.key(), runtime = %session.runtime_url());
    attached(node, session, sink, stream, conn_id, cancel, shutdown)
        .instrument(span)
        .await;
}

/// The attached phase, until the connection ends.
async fn attached<S, R, SE, RE>(
    node: Node,
    session: Arc<Session>,
    mut sink: S,
    mut stream: R,
    conn_id: u64,
    cancel: CancellationToken,
    shutdown: CancellationToken,
) where
    S: Sink<Message, Error = SE> + Unpin + Send,
    R: Stream<Item = Result<Message, RE>> + Unpin + Send,
    SE: Display,
    RE: Display,
{
    let attached_at = node.clock().now();
    let expiry = credential_expiry(&node, &session);
    let end = tokio::select! {
        () = expiry => End::Expired,
        end = read_loop(&node, &session, &mut stream, attached_at) => end,
        end = write_loop(&session, conn_id, &mut sink, &cancel, &shutdown, node.config().session.ping_interval) => end,
    };
    if end == End::Expired {
        let url = session.runtime_url().to_string();
        refuse(
            &node,
            &session,
            "null",
            SESSION,
            &url,
            Code::UNAUTHORIZED,
            "the credential of this session has expired: open a new session with a fresh token",
        )
        .await;
    }
    if matches!(
        end,
        End::CloseRequested | End::Misbehaving | End::Idle | End::Expired
    ) {
        // Deliver the answers already owed (to `close`, to the last bad frames) before closing.
        let mut frames = Vec::new();
        session.take_unsent(conn_id, usize::MAX, &mut frames);
        let flush = async {
            for f in frames {
                if sink.feed(Message::Text(f.into())).await.is_err() {
                    break;
                }
            }
            let _ = sink.flush().await;
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), flush).await;
    }
    node.bus().detach(&session, conn_id);
    if matches!(end, End::CloseRequested | End::Expired) {
        node.bus().end_session(&session).await;
    }
    let (code, reason) = match end {
        End::CloseRequested | End::Gone => (close_code::NORMAL, "session closed"),
        End::Cancelled if shutdown.is_cancelled() => (close_code::GOING_AWAY, "node shutting down"),
        End::Cancelled => (
            close_code::POLICY,
            "session re-opened on another connection",
        ),
        End::Idle => (close_code::GOING_AWAY, "idle timeout"),
        End::Misbehaving => (close_code::POLICY, "too many invalid messages"),
        End::Expired => (close_code::POLICY, "credential expired"),
        End::PeerGone => {
            tracing::debug!("connection lost; session kept for its resume window");
            return;
        }
    };
    tracing::debug!(?end, "closing connection");
    let _ = sink
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from(reason),
        })))
        .await;
    // Complete the closing handshake: wait briefly for the peer's Close, so it reads ours
    // before the TCP connection goes away.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(Ok(msg)) = stream.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
    let _ = sink.close().await;
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

/// Sends a frame directly on the socket, before a session exists (`seq` 0).
async fn send_direct<S, SE>(sink: &mut S, env: &Envelope) -> bool
where
    S: Sink<Message, Error = SE> + Unpin,
{
    sink.send(Message::Text(env.frame(0).into())).await.is_ok()
}

async fn handshake<S, R, SE, RE>(
    node: &Node,
    sink: &mut S,
    stream: &mut R,
    pre_auth: Option<Identity>,
    conn_id: u64,
) -> Option<(Arc<Session>, CancellationToken)>
where
    S: Sink<Message, Error = SE> + Unpin,
    R: Stream<Item = Result<Message, RE>> + Unpin,
{
    let idle = node.config().session.idle_timeout;
    let mut strikes = 0;
    while strikes < MAX_STRIKES {
        let msg = match tokio::time::timeout(idle, stream.next()).await {
            Ok(Some(Ok(m))) => m,
            _ => return None,
        };
        let text = match msg {
            Message::Text(t) => t,
            Message::Close(_) => return None,
            Message::Ping(_) | Message::Pong(_) => continue,
            Message::Binary(_) => {
                strikes += 1;
                let e = codec::error_response(
                    "null",
                    SESSION,
                    SESSION,
                    Code::BAD_REQUEST,
                    "binary frames are not supported; send JSON text frames",
                );
                if !send_direct(sink, &e).await {
                    return None;
                }
                continue;
            }
        };
        strikes += 1;
        let env = match parse_frame(&text) {
            Frame::Single(Ok(env)) => env,
            Frame::Single(Err(rej)) => {
                let e = rejected_response(&rej, SESSION);
                node.metrics().refuse(Code::BAD_REQUEST.as_u16());
                if !send_direct(sink, &e).await {
                    return None;
                }
                continue;
            }
            Frame::Batch(_) | Frame::Invalid(_) => {
                let e = codec::error_response(
                    "null",
                    SESSION,
                    SESSION,
                    Code::BAD_REQUEST,
                    "the first message must be a single open or re-open to mn:/session",
                );
                node.metrics().refuse(Code::BAD_REQUEST.as_u16());
                if !send_direct(sink, &e).await {
                    return None;
                }
                continue;
            }
        };
        let is_control = env.to().len() == 1 && env.first_to() == SESSION;
        let result = if is_control {
            match control::parse(&env) {
                Ok(Control::Open { token }) => {
                    open(node, &env, pre_auth.clone(), token, conn_id).await
                }
                Ok(Control::ReOpen {
                    runtime_token,
                    last_seq,
                }) => reopen(node, &env, &runtime_token, last_seq, conn_id).await,
                Ok(_) => Err((Code::UNAUTHORIZED, "open a session first".to_owned())),
                Err(desc) => Err((Code::BAD_REQUEST, desc)),
            }
        } else {
            Err((
                Code::UNAUTHORIZED,
                "open a session first: send open to mn:/session".to_owned(),
            ))
        };
        match result {
            Ok(attached) => return Some(attached),
            Err((code, desc)) => {
                tracing::debug!(code = code.as_u16(), %desc, "handshake refused");
                node.metrics().refuse(code.as_u16());
                let e = codec::error_response(env.id_json(), SESSION, env.from(), code, &desc);
                if !send_direct(sink, &e).await {
                    return None;
                }
            }
        }
    }
    None
}

async fn open(
    node: &Node,
    env: &Envelope,
    pre_auth: Option<Identity>,
    body_token: Option<String>,
    conn_id: u64,
) -> Result<(Arc<Session>, CancellationToken), (Code, String)> {
    let identity = match pre_auth {
        Some(identity) => identity,
        None => node
            .auth()
            .authenticate(body_token.as_deref())
            .map_err(|e| (codec::auth_code(&e), e.to_string()))?,
    };
    if identity.runtime.as_deref().is_some_and(|r| r != env.from()) {
        let e = crate::auth::AuthError::WrongRuntime;
        return Err((codec::auth_code(&e), e.to_string()));
    }
    let bus = node.bus();
    let (session, token) = bus
        .open(env.from(), identity)
        .await
        .map_err(|e| (codec::route_code(&e), e.to_string()))?;
    let cancel = bus.attach(&session, conn_id, None).await;
    let window = node.config().session.resume_window.as_secs();
    let reply = env
        .reply(Code::OK)
        .value(json!({
            "runtimeToken": token,
            "resumeWindow": window,
            "session": session.key().as_ref(),
        }))
        .build()
        .map_err(|e| (Code::INTERNAL, e.to_string()))?;
    answer(node, &session, &reply).await;
    tracing::debug!(session = %session.key(), runtime = %env.from(), "session opened");
    Ok((session, cancel))
}

async fn reopen(
    node: &Node,
    env: &Envelope,
    runtime_token: &str,
    last_seq: u64,
    conn_id: u64,
) -> Result<(Arc<Session>, CancellationToken), (Code, String)> {
    let bus = node.bus();
    let session = bus.find_by_token(runtime_token).ok_or_else(|| {
        (
            Code::NOT_FOUND,
            "no session for this runtimeToken (it may have expired): open a new session".to_owned(),
        )
    })?;
    if **session.runtime_url() != *env.from() {
        return Err((
            Code::FORBIDDEN,
            "the runtimeToken belongs to another runtime URL".to_owned(),
        ));
    }
    if session
        .identity()
        .expires_at
        .is_some_and(|exp| exp <= node.clock().unix_secs())
    {
        bus.end_session(&session).await;
        return Err((
            Code::UNAUTHORIZED,
            "the credential of this session has expired: open a new session with a fresh token"
                .to_owned(),
        ));
    }
    let cancel = bus.attach(&session, conn_id, Some(last_seq)).await;
    let reply = env
        .reply(Code::OK)
        .value(json!({
            "resumed": true,
            "session": session.key().as_ref(),
            "resumeWindow": node.config().session.resume_window.as_secs(),
        }))
        .build()
        .map_err(|e| (Code::INTERNAL, e.to_string()))?;
    answer(node, &session, &reply).await;
    tracing::debug!(session = %session.key(), last_seq, "session resumed");
    Ok((session, cancel))
}

/// Puts an answer in the session's outbox. False if the session has ended.
async fn answer(node: &Node, session: &Arc<Session>, reply: &Envelope) -> bool {
    node.bus().answer(session, reply).await.is_ok()
}

/// Answers a refused message: the metric, one debug line, the response.
async fn refuse(
    node: &Node,
    session: &Arc<Session>,
    id_json: &str,
    from: &str,
    to: &str,
    code: Code,
    description: &str,
) -> bool {
    node.metrics().refuse(code.as_u16());
    tracing::debug!(code = code.as_u16(), %from, %to, %description, "message refused");
    let reply = codec::error_response(id_json, from, to, code, description);
    answer(node, session, &reply).await
}

fn rejected_response(rej: &Rejected, fallback_to: &str) -> Envelope {
    codec::error_response(
        rej.id_json.as_deref().unwrap_or("null"),
        SESSION,
        rej.from.as_deref().unwrap_or(fallback_to),
        codec::parse_code(&rej.error),
        &rej.error.to_string(),
    )
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
    let mut ping = tokio::time::interval(ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    loop {
        session.take_unsent(conn_id, WRITE_BATCH, &mut frames);
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
    }
}

/// Reads and handles frames until the connection ends; idle when no frame arrives within the
/// idle timeout of the last one (or of `attached_at`).
async fn read_loop<R, RE>(
    node: &Node,
    session: &Arc<Session>,
    stream: &mut R,
    attached_at: std::time::Instant,
) -> End
where
    R: Stream<Item = Result<Message, RE>> + Unpin,
    RE: Display,
{
    let idle: Duration = node.config().session.idle_timeout;
    let clock = node.clock();
    let mut deadline = attached_at + idle;
    let mut strikes = 0u32;
    loop {
        let next = clock.timeout_at(deadline, stream.next()).await;
        deadline = clock.now() + idle;
        let msg = match next {
            Err(_) => return End::Idle,
            Ok(None) => return End::PeerGone,
            Ok(Some(Err(e))) => {
                tracing::debug!(error = %e, "read failed");
                return End::PeerGone;
            }
            Ok(Some(Ok(m))) => m,
        };
        let step = match msg {
            Message::Text(text) => handle_text(node, session, &text).await,
            Message::Binary(_) => {
                let url = session.runtime_url();
                let delivered = refuse(
                    node,
                    session,
                    "null",
                    SESSION,
                    url,
                    Code::BAD_REQUEST,
                    "binary frames are not supported; send JSON text frames",
                )
                .await;
                Step::from_answer(delivered)
            }
            Message::Ping(_) | Message::Pong(_) => Step::Accepted,
            Message::Close(_) => return End::PeerGone,
        };
        match step {
            Step::CloseRequested => return End::CloseRequested,
            Step::Gone => return End::Gone,
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
        let desc = format!(
            "frame of {} bytes exceeds the limit of {max} bytes",
            text.len()
        );
        let to = from.as_deref().unwrap_or(url);
        let id = id.as_deref().unwrap_or("null");
        let delivered = refuse(node, session, id, SESSION, to, Code::TOO_LARGE, &desc).await;
        return Step::from_answer(delivered);
    }
    match parse_frame(text) {
        Frame::Invalid(e) => {
            let code = codec::parse_code(&e);
            let delivered = refuse(node, session, "null", SESSION, url, code, &e.to_string()).await;
            Step::from_answer(delivered)
        }
        Frame::Single(item) => handle_message(node, session, item, text).await,
        Frame::Batch(items) => {
            // A batch counts as accepted if any of its messages was.
            let mut outcome = Step::Refused;
            for item in items {
                // Batch elements have no raw text of their own for the short ack form.
                match handle_message(node, session, item, "").await {
                    Step::Accepted => outcome = Step::Accepted,
                    Step::Refused => {}
                    end @ (Step::CloseRequested | Step::Gone) => return end,
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
            let reply = rejected_response(&rej, session.runtime_url());
            node.metrics().refuse(Code::BAD_REQUEST.as_u16());
            tracing::debug!(error = %rej.error, "message refused");
            return Step::from_answer(answer(node, session, &reply).await);
        }
    };
    if env.to().len() == 1 && env.first_to() == SESSION {
        return control_message(node, session, &env).await;
    }
    let origin = Origin::Session(Arc::clone(session));
    let env = crate::bus::identity::stamp(&env, &origin).unwrap_or(env);
    let permit = match bus.authorize(&env, &origin) {
        Ok(p) => p,
        Err(denied) => {
            let code = codec::denied_code(&denied);
            let desc = denied.to_string();
            let delivered = refuse(
                node,
                session,
                env.id_json(),
                env.first_to(),
                env.from(),
                code,
                &desc,
            )
            .await;
            return Step::from_answer(delivered);
        }
    };
    let report = bus.route(permit).await;
    for reply in &report.replies {
        if !answer(node, session, reply).await {
            return Step::Gone;
        }
    }
    for f in &report.failures {
        let code = codec::route_code(&f.error);
        let desc = f.error.to_string();
        if !refuse(
            node,
            session,
            env.id_json(),
            &f.recipient,
            env.from(),
            code,
            &desc,
        )
        .await
        {
            return Step::Gone;
        }
    }
    if report.failures.is_empty() {
        Step::Accepted
    } else {
        Step::Refused
    }
}

async fn control_message(node: &Node, session: &Arc<Session>, env: &Envelope) -> Step {
    let bus = node.bus();
    let (code, desc) = match control::parse(env) {
        Ok(Control::Ack { seq }) => {
            bus.ack(session, seq).await;
            return Step::Accepted;
        }
        Ok(Control::Close) => {
            if let Ok(reply) = env.reply(Code::OK).build() {
                answer(node, session, &reply).await;
            }
            tracing::debug!("session closed by the runtime");
            return Step::CloseRequested;
        }
        Ok(Control::Open { .. } | Control::ReOpen { .. }) => (
            Code::CONFLICT,
            "this connection already has a session".to_owned(),
        ),
        Err(desc) => (Code::BAD_REQUEST, desc),
    };
    Step::from_answer(
        refuse(
            node,
            session,
            env.id_json(),
            SESSION,
            env.from(),
            code,
            &desc,
        )
        .await,
    )
}

#[cfg(test)]
mod tests {
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
}
