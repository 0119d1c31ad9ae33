//! The handshake of a connection (phase 1 of [`super`]): the first message must be `open` or
//! `re-open` to `mn:/session`; anything else is refused directly on the socket (with `seq` 0,
//! since no session exists yet). `re-open` must present the identity the session was opened
//! with, and resumes the session's outbox after `lastSeq`; with clustering, a session another
//! node holds is checked so before it is taken over (`crate::cluster::handover`).

use super::*;

/// Sends a refusal directly on the socket, before a session exists (`seq` 0). False if the
/// socket failed.
async fn refuse_direct<S, SE>(
    node: &Node,
    sink: &mut S,
    id_json: &str,
    to: &str,
    e: &SessionError,
) -> bool
where
    S: Sink<Message, Error = SE> + Unpin,
{
    let reply = codec::refusal(id_json, SESSION, to, e);
    node.metrics().refuse(codec::session_code(e).as_u16());
    tracing::debug!(error = %e, "handshake refused");
    sink.send(Message::Text(reply.frame(0).into()))
        .await
        .is_ok()
}

pub(super) async fn handshake<S, R, SE, RE>(
    node: &Node,
    sink: &mut S,
    stream: &mut R,
    pre_auth: Option<&Identity>,
    conn_id: u64,
) -> Handshake
where
    S: Sink<Message, Error = SE> + Unpin,
    R: Stream<Item = Result<Message, RE>> + Unpin,
    RE: ReadError,
{
    let idle = node.config().session.idle_timeout;
    let mut strikes = 0;
    while strikes < MAX_STRIKES {
        let msg = match tokio::time::timeout(idle, stream.next()).await {
            Ok(Some(Ok(m))) => m,
            Ok(Some(Err(e))) if e.is_invalid_utf8() => {
                return Handshake::Close(close_code::INVALID_DATA, "invalid UTF-8 in a text frame");
            }
            Err(_) => return Handshake::Close(close_code::GOING_AWAY, "idle timeout"),
            Ok(Some(Err(_)) | None) => return Handshake::PeerGone,
        };
        let text = match msg {
            Message::Text(t) => t,
            Message::Close(_) => return Handshake::PeerGone,
            Message::Ping(_) | Message::Pong(_) => continue,
            Message::Binary(_) => {
                strikes += 1;
                if !refuse_direct(node, sink, "null", SESSION, &SessionError::Binary).await {
                    return Handshake::PeerGone;
                }
                continue;
            }
        };
        strikes += 1;
        let (id, to, error) = match parse_frame(&text) {
            Frame::Single(Ok(env)) => {
                match handshake_message(node, &env, pre_auth, conn_id).await {
                    Ok((session, cancel, reply)) => {
                        return Handshake::Attached {
                            session,
                            cancel,
                            reply,
                        };
                    }
                    Err(e) => (env.id_json().to_owned(), env.from().to_owned(), e),
                }
            }
            Frame::Single(Err(rej)) => (
                rej.id_json.unwrap_or_else(|| "null".to_owned()),
                rej.from.unwrap_or_else(|| SESSION.to_owned()),
                SessionError::Parse(rej.error),
            ),
            Frame::Batch(_) | Frame::Invalid(_) => (
                "null".to_owned(),
                SESSION.to_owned(),
                SessionError::NotAHandshake,
            ),
        };
        if !refuse_direct(node, sink, &id, &to, &error).await {
            return Handshake::PeerGone;
        }
    }
    Handshake::Close(close_code::POLICY, "too many invalid messages")
}

/// Acts on the first message of a connection: only `open` and `re-open` are served.
async fn handshake_message(
    node: &Node,
    env: &Envelope,
    pre_auth: Option<&Identity>,
    conn_id: u64,
) -> Result<(Arc<Session>, CancellationToken, Envelope), SessionError> {
    if !(env.to().len() == 1 && env.first_to() == SESSION) {
        return Err(SessionError::NoSession);
    }
    match control::parse(env)? {
        Control::Open { token } => open(node, env, pre_auth, token, conn_id).await,
        Control::ReOpen {
            runtime_token,
            last_seq,
            token,
        } => {
            reopen(
                node,
                env,
                pre_auth,
                token,
                &runtime_token,
                last_seq,
                conn_id,
            )
            .await
        }
        Control::Close | Control::Ack { .. } | Control::Sync => Err(SessionError::NoSession),
    }
}

/// The identity of this connection: the token it was upgraded with, else `body.token` (a node
/// token proves another domain's node: `crossdomain`), else anonymous (if allowed).
async fn presented_identity(
    node: &Node,
    pre_auth: Option<&Identity>,
    body_token: Option<&str>,
) -> Result<Identity, AuthError> {
    match (pre_auth, body_token) {
        (Some(identity), _) => Ok(identity.clone()),
        (None, Some(t)) if rethink_crossdomain::proof::is_node_token(t) => {
            node.cross_domain().verify_node_token(node.bus(), t).await
        }
        (None, _) => node.auth().authenticate(body_token),
    }
}

async fn open(
    node: &Node,
    env: &Envelope,
    pre_auth: Option<&Identity>,
    body_token: Option<String>,
    conn_id: u64,
) -> Result<(Arc<Session>, CancellationToken, Envelope), SessionError> {
    let identity = presented_identity(node, pre_auth, body_token.as_deref()).await?;
    if identity.runtime.as_deref().is_some_and(|r| r != env.from()) {
        return Err(AuthError::WrongRuntime.into());
    }
    let bus = node.bus();
    let (session, token) = bus.open(env.from(), identity).await?;
    let window = node.config().session.resume_window.as_secs();
    let reply = env
        .reply(Code::OK)
        .value(json!({
            "runtimeToken": token,
            "resumeWindow": window,
            "session": session.key().as_ref(),
        }))
        .build()
        .map_err(SessionError::Internal)?;
    let cancel = bus.attach(&session, conn_id, None).await;
    bus.publish_status(&session, crate::bus::RuntimeStatus::Live)
        .await;
    tracing::debug!(session = %session.key(), runtime = %env.from(), "session opened");
    Ok((session, cancel, reply))
}

async fn reopen(
    node: &Node,
    env: &Envelope,
    pre_auth: Option<&Identity>,
    body_token: Option<String>,
    runtime_token: &str,
    last_seq: u64,
    conn_id: u64,
) -> Result<(Arc<Session>, CancellationToken, Envelope), SessionError> {
    let bus = node.bus();
    // The runtimeToken alone does not carry the identity over to another connection.
    let presented = presented_identity(node, pre_auth, body_token.as_deref()).await?;
    let check = |runtime: &str, identity: &Identity| {
        if runtime != env.from() {
            Err(SessionError::OtherRuntime)
        } else if presented.subject != identity.subject {
            Err(SessionError::OtherIdentity)
        } else {
            Ok(())
        }
    };
    let session = match bus.find_by_token(runtime_token) {
        Some(session) => session,
        // With clustering, a session of another node is taken over here (its node releases
        // it, or is gone), once the re-open is known to be its runtime's: a wrong one leaves
        // it where it is.
        None => {
            let (runtime, identity) = bus
                .find_elsewhere(runtime_token)
                .await?
                .ok_or(SessionError::UnknownRuntimeToken)?;
            check(&runtime, &identity)?;
            bus.adopt_by_token(runtime_token)
                .await?
                .ok_or(SessionError::UnknownRuntimeToken)?
        }
    };
    check(session.runtime_url(), session.identity())?;
    if session
        .identity()
        .expires_at
        .is_some_and(|exp| exp <= node.clock().unix_secs())
    {
        bus.end_session(&session).await;
        return Err(SessionError::CredentialExpired);
    }
    // The `cseq` answered is committed (`bus/handled.rs`).
    if bus.node_domain(&session).is_some() {
        bus.save_handled(&session).await;
    }
    let reply = env
        .reply(Code::OK)
        .value(json!({
            "resumed": true,
            "cseq": session.cseq(),
            "session": session.key().as_ref(),
            "resumeWindow": node.config().session.resume_window.as_secs(),
        }))
        .build()
        .map_err(SessionError::Internal)?;
    let cancel = bus.attach(&session, conn_id, Some(last_seq)).await;
    bus.publish_status(&session, crate::bus::RuntimeStatus::Live)
        .await;
    tracing::debug!(session = %session.key(), last_seq, "session resumed");
    Ok((session, cancel, reply))
}
