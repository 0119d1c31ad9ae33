//! `drain`, on the holder: one transaction deletes the queued messages of the sessions a
//! notice names (all at once) and inserts them into their outboxes with the seqs the sessions
//! gave them, *held* (not written to the sockets) until the commit; so a message is delivered
//! from the outbox or from the queue, never both. A message refused there (the sender did not
//! own its `from`, or policy) is answered to its sender (`refusal.rs`).

use std::sync::Arc;

use super::link::Link;
use super::refusal::Refusals;
use crate::bus::remote::{Arrival, NODE_NOTICE};
use crate::bus::{Denied, Session};

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

/// Why a drain stopped before its commit.
enum Stop {
    /// A session ended meanwhile: nothing moved, everything stays queued.
    Ended,
    Db(sqlx::Error),
}

impl Link {
    /// Moves what other nodes queued for `sessions` (held here) into their outboxes, in one
    /// transaction. A session that ended meanwhile leaves everything queued for the others to
    /// be moved one session at a time. Returns how many messages moved.
    pub(super) async fn drain_sessions(
        &self,
        sessions: &[Arc<Session>],
    ) -> Result<usize, sqlx::Error> {
        let _one_at_a_time = self.draining.lock().await;
        match self.drain_locked(sessions).await {
            Ok(moved) => Ok(moved),
            Err(Stop::Db(e)) => Err(e),
            Err(Stop::Ended) if sessions.len() == 1 => Ok(0),
            Err(Stop::Ended) => {
                let mut moved = 0;
                for session in sessions {
                    match self.drain_locked(std::slice::from_ref(session)).await {
                        Ok(n) => moved += n,
                        Err(Stop::Ended) => {}
                        Err(Stop::Db(e)) => return Err(e),
                    }
                }
                Ok(moved)
            }
        }
    }

    async fn drain_locked(&self, sessions: &[Arc<Session>]) -> Result<usize, Stop> {
        let keys: Vec<&str> = sessions.iter().map(|s| &**s.key()).collect();
        let mut tx = self.pool.begin().await.map_err(Stop::Db)?;
        // Only while this node holds the session; a sender that did not own its `from` (on
        // its own node's word) is refused here. A sender session that has ended cannot be
        // checked any more and is taken on its node's word.
        let mut rows: Vec<Row> = sqlx::query_as(
            "WITH held AS (SELECT id FROM sessions WHERE id = ANY($1) AND node = $2 \
                 FOR KEY SHARE) \
             DELETE FROM cluster_inbox AS i USING held WHERE i.session = held.id \
             RETURNING i.session, i.id, i.json, i.sender IS NULL \
             OR NOT EXISTS (SELECT 1 FROM sessions AS s WHERE s.id = i.sender) \
             OR EXISTS (SELECT 1 FROM sessions AS s WHERE s.id = i.sender \
                 AND (i.sender_from = s.runtime_url \
                     OR starts_with(i.sender_from, s.runtime_url || '/'))) \
             OR EXISTS (SELECT 1 FROM session_addresses AS a WHERE a.session = i.sender \
                 AND (i.sender_from = a.address OR starts_with(i.sender_from, a.address || '/'))), \
             i.recipient, i.transport, \
             (SELECT runtime_url FROM sessions WHERE id = i.sender), \
             (SELECT identity_json FROM sessions WHERE id = i.sender), \
             i.sender, (SELECT node FROM sessions WHERE id = i.sender)",
        )
        .bind(&keys)
        .bind(&*self.node)
        .fetch_all(&mut *tx)
        .await
        .map_err(Stop::Db)?;
        if rows.is_empty() {
            return Ok(0);
        }
        rows.sort_unstable_by_key(|r| r.1);
        let mut owners = Vec::with_capacity(rows.len());
        let mut seqs = Vec::with_capacity(rows.len());
        let mut jsons: Vec<Arc<str>> = Vec::with_capacity(rows.len());
        let mut touched: Vec<&Arc<Session>> = Vec::new();
        let mut refusals = Refusals::default();
        let undo = |touched: &[&Arc<Session>]| {
            for s in touched {
                s.drop_moved();
            }
        };
        for row in rows {
            let (
                key,
                id,
                json,
                owned,
                recipient,
                transport,
                runtime,
                identity,
                sender,
                sender_node,
            ) = row;
            let Some(session) = sessions.iter().find(|s| **s.key() == *key) else {
                continue;
            };
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
                refusals.add(&json, &recipient, sender.zip(sender_node), &why);
                continue;
            }
            let json: Arc<str> = Arc::from(json);
            if !touched.iter().any(|t| Arc::ptr_eq(t, session)) {
                touched.push(session);
            }
            match session.push_moved(Arc::clone(&json)) {
                Ok(seq) => {
                    owners.push(&**session.key());
                    seqs.push(crate::store::postgres::to_db(seq));
                    jsons.push(json);
                }
                // Ended meanwhile: the rollback leaves the queue as it was.
                Err(_) => {
                    undo(&touched);
                    return Err(Stop::Ended);
                }
            }
        }
        if let Err(e) = refusals.queue(&mut tx).await {
            undo(&touched);
            return Err(Stop::Db(e));
        }
        if seqs.is_empty() {
            tx.commit().await.map_err(Stop::Db)?;
            refusals.notify(self).await;
            return Ok(0);
        }
        let json_refs: Vec<&str> = jsons.iter().map(|j| &**j).collect();
        let inserted = sqlx::query(
            "INSERT INTO outbox (session, seq, json) SELECT v.session, v.seq, v.json \
             FROM UNNEST($1::text[], $2::bigint[], $3::text[]) AS v (session, seq, json)",
        )
        .bind(&owners)
        .bind(&seqs)
        .bind(&json_refs)
        .execute(&mut *tx)
        .await;
        let committed = match inserted {
            Ok(_) => tx.commit().await,
            Err(e) => Err(e),
        };
        if let Err(e) = committed {
            undo(&touched);
            return Err(Stop::Db(e));
        }
        self.metrics.received.inc_by(seqs.len() as u64);
        for s in &touched {
            s.release_moved();
        }
        refusals.notify(self).await;
        Ok(seqs.len())
    }
}
