//! Refusals on arrival, answered: a message the holder's node refuses (its policies, or the
//! sending session not owning `from`) gets the response a refusal on one node would get (the
//! code and description of `crate::ws::codec`, e.g. 403), from the recipient to the sender,
//! unless it is a `response` itself or came from no session (a node's own message). The answer
//! is queued for the sending session by the statement that takes the refused message out of
//! the queue (`drain.rs`; so it is never lost nor sent twice), then the sender's node is told.

use std::collections::BTreeMap;

use super::link::Link;
use crate::bus::Denied;
use crate::ws::codec;
use rethink_proto::{Envelope, MessageType};

/// One answer to queue: the refused message's id in the queue, the sending session, its node,
/// the response's `from`, `to` and JSON.
#[derive(Debug)]
struct Answer {
    id: i64,
    session: String,
    node: String,
    from: String,
    to: String,
    json: String,
}

/// The answers of [`Refusals::columns`]: per answer, the refused message's id, the sending
/// session, the answer's JSON, `from` and `to`.
#[derive(Debug, Default)]
pub(super) struct Columns<'a> {
    pub ids: Vec<i64>,
    pub sessions: Vec<&'a str>,
    pub jsons: Vec<&'a str>,
    pub froms: Vec<&'a str>,
    pub tos: Vec<&'a str>,
}

/// The answers to the messages one drain refused.
#[derive(Debug, Default)]
pub(super) struct Refusals {
    answers: Vec<Answer>,
}

impl Refusals {
    /// Answers `json` (queued as `id`), sent by `sender` (on `sender_node`) and routed for
    /// `recipient`, refused with `denied`.
    pub(super) fn add(
        &mut self,
        id: i64,
        json: &str,
        recipient: &str,
        sender: Option<(String, String)>,
        denied: &Denied,
    ) {
        let Some((session, node)) = sender else {
            return;
        };
        let Ok(env) = Envelope::parse(json) else {
            return;
        };
        if *env.kind() == MessageType::Response {
            return;
        }
        let reply = codec::error_response(
            env.id_json(),
            recipient,
            env.from(),
            denied.code(),
            &denied.to_string(),
        );
        self.answers.push(Answer {
            id,
            session,
            node,
            from: recipient.to_owned(),
            to: env.from().to_owned(),
            json: reply.json().to_owned(),
        });
    }

    /// Adds the answers of `other`.
    pub(super) fn extend(&mut self, other: Refusals) {
        self.answers.extend(other.answers);
    }

    /// The answers as the columns the drain's statement queues them from.
    pub(super) fn columns(&self) -> Columns<'_> {
        let mut c = Columns::default();
        for a in &self.answers {
            c.ids.push(a.id);
            c.sessions.push(&a.session);
            c.jsons.push(&a.json);
            c.froms.push(&a.from);
            c.tos.push(&a.to);
        }
        c
    }

    /// Tells the senders' nodes (after the commit).
    pub(super) fn notify(self, link: &Link) {
        let mut by_node: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for a in &self.answers {
            let list = by_node.entry(&a.node).or_default();
            if !list.contains(&&*a.session) {
                list.push(&a.session);
            }
        }
        for (node, sessions) in by_node {
            link.notify(node, &sessions);
        }
    }
}
