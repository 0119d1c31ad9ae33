//! A running stub's router task: what the stub sends passes `Bus::authorize` and `Bus::route`
//! with its session as origin (`Origin::Stub`, or `Origin::Node` for another domain's stub run
//! by a gateway), refusals come back to it as responses; the
//! senders of messages it lost are answered (502 / 503 / 504 naming the stub). One router per
//! instance name: every version of the stub started for it sends through the same one.

use std::sync::Arc;

use rethink_proto::{Code, Envelope, MessageType};
use tokio::sync::mpsc;

use super::port::Outgoing;
use crate::bus::{Bus, Origin, Session};
use crate::ws::codec;

/// Routes what the stub sends with `origin` (its session's), and answers the senders of
/// messages it lost.
pub(crate) async fn route_stub(
    bus: Bus,
    session: Arc<Session>,
    origin: Origin,
    name: String,
    mut sends: mpsc::Receiver<Outgoing>,
    mut lost: mpsc::UnboundedReceiver<Outgoing>,
) {
    loop {
        let item = tokio::select! {
            biased;
            Some(item) = lost.recv() => item,
            item = sends.recv() => match item {
                Some(item) => item,
                None => match lost.try_recv() {
                    Ok(item) => item,
                    Err(_) => return,
                },
            },
        };
        match item {
            Outgoing::Send(env) => send(&bus, &session, &origin, env).await,
            Outgoing::Lost(env, reason) => {
                let description = format!("stub {name}: {reason}");
                answer_error(&bus, &origin, &env, Code(reason.code()), &description).await;
            }
        }
    }
}

async fn send(bus: &Bus, session: &Arc<Session>, origin: &Origin, env: Envelope) {
    let env = crate::bus::identity::stamp(&env, origin).unwrap_or(env);
    let answer = match bus.authorize(&env, origin) {
        Err(denied) => Some(codec::error_response(
            env.id_json(),
            env.first_to(),
            env.from(),
            codec::denied_code(&denied),
            &denied.to_string(),
        )),
        Ok(permit) => {
            let report = bus.route(permit).await;
            for reply in &report.replies {
                if bus.answer(session, reply).await.is_err() {
                    return;
                }
            }
            codec::failures_response(&env, &report.failures)
        }
    };
    // A refusal of a response is not answered (a response never gets one).
    if let Some(a) = answer
        && *env.kind() != MessageType::Response
        && bus.answer(session, &a).await.is_err()
    {
        tracing::debug!("a stub's session ended before its answer");
    }
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
