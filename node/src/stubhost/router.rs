//! A running stub's router task: what the stub sends passes `Bus::authorize` and `Bus::route`
//! with its session as origin (`Origin::Stub`, or `Origin::Node` for another domain's stub run
//! by a gateway), refusals come back to it as responses; the
//! senders of messages it lost, or that its pump refused, are answered (404 / 502 / 503 / 504
//! naming the stub). One router per
//! instance name: every version of the stub started for it sends through the same one.
//!
//! A stub let go of a message when the host took it, so the router of a stub (`Origin::Stub`)
//! does not wait for each message's frames to settle before routing the next: it keeps up to
//! [`SETTLING`] routes settling and waits for them in order (`bus::Settling`), which keeps the
//! order of frames and of bridge events and bounds what is in flight. One stub answering many
//! runtimes (the registry) is then not paced by one hand-off to a recipient's connection per
//! message. Another domain's stub (`Origin::Node`) waits for each, as a runtime's session does.
//!
//! While it waits for room in the stub's own outbox (to answer the stub) it says so
//! (`QueueRx::stuck`): the stub is then fed without waiting for room in this queue.

use std::collections::VecDeque;
use std::sync::Arc;

use rethink_proto::{Code, Envelope, MessageType};
use tokio::sync::watch;

use super::port::{LostRx, Outgoing, QueueRx};
use crate::bus::{Bus, Origin, PushError, Session, Settling};
use crate::ws::codec;

/// Routes what the stub sends with `origin` (its session's), and answers the senders of
/// messages it lost.
pub(crate) async fn route_stub(
    bus: Bus,
    session: Arc<Session>,
    origin: Origin,
    name: String,
    mut sends: QueueRx,
    mut lost: LostRx,
) {
    let window = if matches!(origin, Origin::Stub(_)) {
        SETTLING
    } else {
        1
    };
    let mut settling: VecDeque<Settling> = VecDeque::new();
    loop {
        if settling.len() >= window {
            if let Some(oldest) = settling.pop_front() {
                oldest.wait().await;
            }
            continue;
        }
        let item = tokio::select! {
            biased;
            Some(item) = lost.recv() => item,
            () = oldest(&mut settling), if !settling.is_empty() => {
                settling.pop_front();
                continue;
            }
            item = sends.rx.recv() => match item {
                Some(item) => item,
                None => match lost.try_recv() {
                    Ok(item) => item,
                    Err(_) => {
                        for s in settling {
                            s.wait().await;
                        }
                        return;
                    }
                },
            },
        };
        match item {
            Outgoing::Send(env) => {
                if let Some(s) = send(&bus, &session, &origin, &sends.stuck, env).await {
                    settling.push_back(s);
                }
            }
            Outgoing::Lost(env, reason) => {
                let description = format!("stub {name}: {reason}");
                answer_error(&bus, &origin, &env, Code(reason.code()), &description).await;
            }
        }
    }
}

/// Routes of a stub's messages settling at once, at most.
const SETTLING: usize = 64;

/// Waits for the oldest route of `settling` to settle (cancel safe).
async fn oldest(settling: &mut VecDeque<Settling>) {
    match settling.front_mut() {
        Some(s) => s.wait_mut().await,
        None => std::future::pending().await,
    }
}

/// Routes one message the stub sent; what is left of its route, if it was routed.
async fn send(
    bus: &Bus,
    session: &Arc<Session>,
    origin: &Origin,
    stuck: &watch::Sender<bool>,
    env: Envelope,
) -> Option<Settling> {
    let env = crate::bus::identity::stamp(&env, origin).unwrap_or(env);
    let (answer, settling) = match bus.authorize(&env, origin) {
        Err(denied) => {
            let refusal = codec::error_response(
                env.id_json(),
                env.first_to(),
                env.from(),
                denied.code(),
                &denied.to_string(),
            );
            (Some(refusal), None)
        }
        Ok(permit) => {
            let (report, settling) = bus.route_unsettled(permit).await;
            for reply in &report.replies {
                if answer_own(bus, session, stuck, reply).await.is_err() {
                    return Some(settling);
                }
            }
            (
                codec::failures_response(&env, &report.failures),
                Some(settling),
            )
        }
    };
    // A refusal of a response is not answered (a response never gets one).
    if let Some(a) = answer
        && *env.kind() != MessageType::Response
        && answer_own(bus, session, stuck, &a).await.is_err()
    {
        tracing::debug!("a stub's session ended before its answer");
    }
    settling
}

/// Puts the node's answer to the stub's own message in its session's outbox, waiting while
/// that is full (the pump frees it); meanwhile `stuck` is true, so that the stub is fed
/// without waiting for room in its outgoing queue (`NodePort::ready`): the pump then frees
/// the outbox.
async fn answer_own(
    bus: &Bus,
    session: &Arc<Session>,
    stuck: &watch::Sender<bool>,
    reply: &Envelope,
) -> Result<(), PushError> {
    match bus.try_answer(session, reply).await {
        Err(PushError::Full(_)) => {}
        done => return done,
    }
    stuck.send_replace(true);
    let answered = bus.answer(session, reply).await;
    stuck.send_replace(false);
    answered
}

/// Answers the sender of `env` (a message for the stub, not delivered) with `code`, from the
/// address it was sent to.
pub(crate) async fn answer_error(
    bus: &Bus,
    origin: &Origin,
    env: &Envelope,
    code: Code,
    description: &str,
) {
    if *env.kind() == MessageType::Response {
        tracing::warn!(%description, id = env.id_json(), "a response to a stub was not delivered");
        return;
    }
    let reply = codec::error_response(env.id_json(), env.first_to(), env.from(), code, description);
    match bus.authorize(&reply, origin) {
        Ok(permit) => {
            let report = bus.route(permit).await;
            for f in &report.failures {
                tracing::warn!(error = %f.error, "the answer to a message a stub did not take was not delivered");
            }
        }
        Err(denied) => {
            tracing::warn!(%denied, "the answer to a message a stub did not take was refused");
        }
    }
}
