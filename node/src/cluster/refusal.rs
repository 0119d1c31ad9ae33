//! Refusals on arrival, answered: a message the holder's node refuses (its policies, or the
//! sending session not owning `from`) gets the response a refusal on one node would get (the
//! code and description of `crate::ws::codec`, e.g. 403), from the recipient to the sender,
//! unless it is a `response` itself or came from no session (a node's own message). The answer
//! is queued for the sending session in the same transaction that takes the refused message
//! out of the queue (so it is never lost nor sent twice), then the sender's node is told.

use std::collections::BTreeMap;

use rethink_proto::{Envelope, MessageType};
use sqlx::PgConnection;

use super::link::Link;
use crate::bus::Denied;
use crate::bus::remote::NODE_NOTICE;
use crate::ws::codec;

/// One answer to queue: the sending session, its node, the response's `from`, `to` and JSON.
#[derive(Debug)]
struct Answer {
    session: String,
    node: String,
    from: String,
    to: String,
    json: String,
}

/// The answers to the messages one drain refused.
#[derive(Debug, Default)]
pub(super) struct Refusals {
    answers: Vec<Answer>,
}

impl Refusals {
    /// Answers `json`, sent by `sender` (on `sender_node`) and routed for `recipient`, refused
    /// with `denied`.
    pub(super) fn add(
        &mut self,
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
            codec::denied_code(denied),
            &denied.to_string(),
        );
        self.answers.push(Answer {
            session,
            node,
            from: recipient.to_owned(),
            to: env.from().to_owned(),
            json: reply.json().to_owned(),
        });
    }

    /// Queues the answers for their sessions (inside the drain's transaction).
    pub(super) async fn queue(&self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        for a in &self.answers {
            sqlx::query(
                "INSERT INTO cluster_inbox (session, json, sender, sender_from, recipient, transport) \
                 VALUES ($1, $2, NULL, $3, $4, $5)",
            )
            .bind(&a.session)
            .bind(&a.json)
            .bind(&a.from)
            .bind(&a.to)
            .bind(NODE_NOTICE)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }

    /// Tells the senders' nodes (after the commit).
    pub(super) async fn notify(self, link: &Link) {
        let mut by_node: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for a in &self.answers {
            let list = by_node.entry(&a.node).or_default();
            if !list.contains(&&*a.session) {
                list.push(&a.session);
            }
        }
        for (node, sessions) in by_node {
            link.notify(node, &sessions).await;
        }
    }
}
