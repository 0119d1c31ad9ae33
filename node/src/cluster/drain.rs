//! `drain`, on the holder: moves the queued messages of the sessions a notice names (all at
//! once) into their outboxes, with the seqs the sessions give them, *held* (not written to the
//! sockets) until the move is committed; so a message is delivered from the outbox or from the
//! queue, never both. A message refused there (the sender did not own its `from`, or policy) is
//! answered to its sender (`refusal.rs`).
//!
//! Two statements and no explicit transaction: a read of the queues (with what the checks on
//! arrival need of each sender), then, once the checks are made and the seqs given, one
//! statement that deletes the messages read from the queues of the sessions this node still
//! holds (their rows locked `FOR KEY SHARE`, as by a forward, so a takeover waits for it), inserts
//! into the outboxes those of them that were moved and queues the answers to those refused.
//! Its answer names the sessions whose messages it took: a session another node took over
//! meanwhile (or that ended) keeps its queue whole, and its held frames are dropped here.
//!
//! The notices (`rethink.node.<node_id>`) are read by one task ([`Link::run_receiver`]); the
//! notices that arrived while a drain ran are drained together, in one drain.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;

use super::link::Link;
use super::refusal::Refusals;
use crate::bus::remote::{Arrival, NODE_NOTICE};
use crate::bus::{Bus, Denied, Session};

/// The most sessions one drain takes from the notices that have gathered.
const MAX_SESSIONS: usize = 512;

/// Adds the session keys of a notice (one a line) that `keys` does not have yet.
fn add_keys(keys: &mut Vec<String>, payload: &[u8]) {
    if let Ok(text) = std::str::from_utf8(payload) {
        for key in text.lines() {
            if !keys.iter().any(|k| k == key) {
                keys.push(key.to_owned());
            }
        }
    }
}

/// A queued message as the holder reads it: its session, id, JSON, whether the sender owns
/// its `from`, the address it was routed for, the sender's transport, runtime URL and identity
/// (JSON), the sending session and its node (`None`: a message the sender's node made, or a
/// session gone).
type Row = (
    String,
    i64,
    String,
    bool,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// The `from` of a message's JSON, for a log line.
fn json_from(json: &str) -> String {
    rethink_proto::Envelope::parse(json)
        .map_or_else(|_| "(unparsable)".into(), |e| e.from().to_owned())
}

/// What one drain takes from the queues: the ids of the messages to delete, and of those
/// the rows to insert into outboxes (id, session, seq, JSON).
#[derive(Default)]
struct Move<'a> {
    ids: Vec<i64>,
    moved_ids: Vec<i64>,
    owners: Vec<&'a str>,
    seqs: Vec<i64>,
    jsons: Vec<Arc<str>>,
}

impl Link {
    /// Reads the notices of other nodes until `stop`, and drains the sessions they name: those
    /// of every notice that arrived meanwhile at once.
    pub(super) async fn run_receiver(
        self: Arc<Self>,
        mut notices: async_nats::Subscriber,
        bus: Bus,
        stop: CancellationToken,
    ) {
        let mut keys: Vec<String> = Vec::new();
        while let Some(first) = super::next_until(&mut notices, &stop).await {
            let mut closed = false;
            keys.clear();
            add_keys(&mut keys, &first.payload);
            while keys.len() < MAX_SESSIONS {
                match notices.next().now_or_never() {
                    Some(Some(more)) => add_keys(&mut keys, &more.payload),
                    Some(None) => {
                        closed = true;
                        break;
                    }
                    None => break,
                }
            }
            let sessions: Vec<_> = keys.iter().filter_map(|k| bus.session(k)).collect();
            if !sessions.is_empty()
                && let Err(e) = self.drain_sessions(&sessions).await
            {
                // The messages stay queued; the next notice or heartbeat retries.
                tracing::warn!(error = %e, "cluster: moving queued messages failed");
            }
            if closed {
                return;
            }
        }
    }

    /// Moves what other nodes queued for `sessions` (held here) into their outboxes (see the
    /// module documentation). A session that ended, or that another node took over, keeps
    /// its queue. Returns how many messages moved.
    pub(super) async fn drain_sessions(
        &self,
        sessions: &[Arc<Session>],
    ) -> Result<usize, sqlx::Error> {
        let _one_at_a_time = self.draining.lock().await;
        let keys: Vec<&str> = sessions.iter().map(|s| &**s.key()).collect();
        // Ownership of `from`: a sender session that has ended cannot be checked any more and
        // is taken on its node's word. The senders' rows are read by key, one by one (`LATERAL`):
        // a join could scan the whole table.
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT i.session, i.id, i.json, \
             i.sender IS NULL OR s.id IS NULL OR i.sender_from = s.runtime_url \
             OR starts_with(i.sender_from, s.runtime_url || '/') \
             OR EXISTS (SELECT 1 FROM session_addresses AS a WHERE a.session = i.sender \
                 AND (i.sender_from = a.address OR starts_with(i.sender_from, a.address || '/'))), \
             i.recipient, i.transport, s.runtime_url, s.identity_json, i.sender, s.node \
             FROM cluster_inbox AS i LEFT JOIN LATERAL (SELECT id, runtime_url, identity_json, \
                 node FROM sessions WHERE id = i.sender) AS s ON true \
             WHERE i.session = ANY($1::text[]) ORDER BY i.id",
        )
        .bind(&keys)
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut by_session: BTreeMap<String, Vec<Row>> = BTreeMap::new();
        for row in rows {
            by_session.entry(row.0.clone()).or_default().push(row);
        }
        let mut plan = Move::default();
        let mut refusals = Refusals::default();
        let mut touched: Vec<&Arc<Session>> = Vec::new();
        for (key, rows) in by_session {
            let Some(session) = sessions.iter().find(|s| **s.key() == *key) else {
                continue;
            };
            // Of one session, all or nothing: a session ended meanwhile keeps its queue.
            let mut mine = Move::default();
            let mut answers = Refusals::default();
            if self.check_and_number(session, rows, &mut mine, &mut answers) {
                touched.push(session);
                plan.ids.extend(mine.ids);
                plan.moved_ids.extend(mine.moved_ids);
                plan.owners.extend(mine.owners);
                plan.seqs.extend(mine.seqs);
                plan.jsons.extend(mine.jsons);
                refusals.extend(answers);
            } else {
                session.drop_moved();
            }
        }
        if plan.ids.is_empty() {
            return Ok(0);
        }
        let json_refs: Vec<&str> = plan.jsons.iter().map(|j| &**j).collect();
        let answers = refusals.columns();
        let taken: Result<Vec<String>, sqlx::Error> = sqlx::query_scalar(
            "WITH held AS (SELECT id FROM sessions WHERE id = ANY($1::text[]) AND node = $2 \
                 FOR KEY SHARE), \
             d AS (DELETE FROM cluster_inbox AS i WHERE i.id = ANY($3::bigint[]) \
                 AND i.session IN (SELECT id FROM held) RETURNING i.id, i.session), \
             o AS (INSERT INTO outbox (session, seq, json) SELECT v.session, v.seq, v.json \
                 FROM UNNEST($4::bigint[], $5::text[], $6::bigint[], $7::text[]) \
                 AS v (id, session, seq, json) WHERE v.id IN (SELECT id FROM d)), \
             r AS (INSERT INTO cluster_inbox \
                 (session, json, sender, sender_from, recipient, transport) \
                 SELECT r.session, r.json, NULL, r.sender_from, r.recipient, $8 \
                 FROM UNNEST($9::bigint[], $10::text[], $11::text[], $12::text[], $13::text[]) \
                 AS r (id, session, json, sender_from, recipient) \
                 WHERE r.id IN (SELECT id FROM d) ORDER BY r.id) \
             SELECT DISTINCT session FROM d",
        )
        .bind(&keys)
        .bind(&*self.node)
        .bind(&plan.ids)
        .bind(&plan.moved_ids)
        .bind(&plan.owners)
        .bind(&plan.seqs)
        .bind(&json_refs)
        .bind(NODE_NOTICE)
        .bind(&answers.ids)
        .bind(&answers.sessions)
        .bind(&answers.jsons)
        .bind(&answers.froms)
        .bind(&answers.tos)
        .fetch_all(&self.pool)
        .await;
        let taken = match taken {
            Ok(taken) => taken,
            Err(e) => {
                for s in &touched {
                    s.drop_moved();
                }
                return Err(e);
            }
        };
        let mut moved = 0;
        for s in touched {
            if taken.iter().any(|k| *k == **s.key()) {
                moved += plan.owners.iter().filter(|o| ***o == **s.key()).count();
                s.release_moved();
            } else {
                // Taken over by another node, or ended: its queue was left whole.
                s.drop_moved();
            }
        }
        self.metrics.received.inc_by(moved as u64);
        refusals.notify(self);
        Ok(moved)
    }

    /// Checks the queued messages `rows` of `session` on arrival and gives the accepted ones
    /// their seqs (held), adding them to `plan` and the refused ones' answers to `refusals`.
    /// False when the session ended meanwhile (nothing of it is to move).
    fn check_and_number<'a>(
        &self,
        session: &'a Arc<Session>,
        rows: Vec<Row>,
        plan: &mut Move<'a>,
        refusals: &mut Refusals,
    ) -> bool {
        for row in rows {
            let (_, id, json, owned, recipient, transport, runtime, identity, sender, sender_node) =
                row;
            plan.ids.push(id);
            let user = identity
                .and_then(|i| serde_json::from_str::<crate::auth::Identity>(&i).ok())
                .and_then(|i| i.subject);
            let arrival = Arrival {
                json: &json,
                recipient: &recipient,
                sender_runtime: runtime.as_deref(),
                sender_user: user.as_deref(),
                transport: &transport,
            };
            // A node session owns no addresses: what it sends from its domain's is its own.
            let owned = owned
                || runtime.as_deref().is_some_and(|r| {
                    self.bus.get().is_some_and(|bus| {
                        let from = json_from(&json);
                        bus.node_sends_from(r, user.as_deref(), &from)
                    })
                });
            let refused = match owned {
                false => Some(Denied::Spoofed {
                    from: json_from(&json),
                }),
                // The node's own notices, as on one node.
                true if sender.is_none() && transport == NODE_NOTICE => None,
                true => self.bus_policy(session, &arrival),
            };
            if let Some(why) = refused {
                self.metrics.refused_on_arrival.inc();
                tracing::warn!(id, session = %session.key(), %why, "cluster: a message from another node was refused on arrival");
                refusals.add(id, &json, &recipient, sender.zip(sender_node), &why);
                continue;
            }
            let json: Arc<str> = Arc::from(json);
            match session.push_moved(Arc::clone(&json)) {
                Ok(seq) => {
                    plan.moved_ids.push(id);
                    plan.owners.push(&**session.key());
                    plan.seqs.push(crate::store::postgres::to_db(seq));
                    plan.jsons.push(json);
                }
                Err(_) => return false,
            }
        }
        true
    }
}
