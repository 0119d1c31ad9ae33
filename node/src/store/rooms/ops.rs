//! The room writes that take a stream position: [`AppendEvent`] (an event, its state, its
//! membership, its client transaction and a redaction's rewrite, in one commit) and
//! [`PruneTxns`]. One SQL text for both backends, but the pruning (SQLite's `rowid` is
//! PostgreSQL's `id` column).

use futures_util::future::BoxFuture;

use crate::store::StreamOp;
use crate::store::db::{Conn, on_conn};

/// A new event to store, with what it changes.
#[derive(Debug, Clone)]
pub struct AppendEvent {
    pub event_id: String,
    pub room_id: String,
    pub kind: String,
    pub state_key: Option<String>,
    /// The room's previous event (the one `prev_events` names; none for the create event):
    /// unique per room (`events_chain`), so two events built on one predecessor cannot both be
    /// stored.
    pub prev_event: Option<String>,
    pub sender: String,
    pub json: String,
    /// The client transaction: device, scope (`send` or `redact`), ID. Stored in `room_txns`
    /// too, unique per key: the op fails if a live transaction of the same key is stored.
    pub txn: Option<(String, &'static str, String)>,
    /// A stored transaction of the same key accepted before this time (unix ms) is past its
    /// retention: it is replaced.
    pub txn_expired_before: i64,
    /// When the node accepted the event (unix ms).
    pub received_ms: i64,
    /// For `m.room.member`: the new membership of `state_key`.
    pub membership: Option<String>,
    /// For `m.room.create`: the room version.
    pub create_version: Option<String>,
    /// For an accepted redaction: the target, its redacted JSON, and the client form of this
    /// redaction (the target's `unsigned.redacted_because`).
    pub redaction: Option<(String, String, String)>,
}

impl StreamOp for AppendEvent {
    fn apply<'c>(
        self: Box<Self>,
        mut conn: Conn<'c>,
        pos: i64,
    ) -> BoxFuture<'c, Result<(), sqlx::Error>> {
        Box::pin(async move {
            on_conn!(&mut conn, |conn| {
                if let Some(version) = &self.create_version {
                    sqlx::query(
                        "INSERT INTO rooms (room_id, version, creator) VALUES ($1, $2, $3)",
                    )
                    .bind(&self.room_id)
                    .bind(version)
                    .bind(&self.sender)
                    .execute(&mut *conn)
                    .await?;
                }
                let (txn_device, txn_scope, txn_id) = match &self.txn {
                    Some((device, scope, txn)) => {
                        (Some(device.as_str()), Some(*scope), Some(txn.as_str()))
                    }
                    None => (None, None, None),
                };
                sqlx::query(
                    "INSERT INTO events (stream, event_id, room_id, type, state_key, sender, json, \
                 txn_device, txn_scope, txn_id, received_ms, prev_event) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                )
                .bind(pos)
                .bind(&self.event_id)
                .bind(&self.room_id)
                .bind(&self.kind)
                .bind(&self.state_key)
                .bind(&self.sender)
                .bind(&self.json)
                .bind(txn_device)
                .bind(txn_scope)
                .bind(txn_id)
                .bind(self.received_ms)
                .bind(&self.prev_event)
                .execute(&mut *conn)
                .await?;
                if let Some(state_key) = &self.state_key {
                    sqlx::query(
                        "INSERT INTO room_state (room_id, type, state_key, event_id, stream) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (room_id, type, state_key) \
                     DO UPDATE SET event_id = excluded.event_id, stream = excluded.stream",
                    )
                    .bind(&self.room_id)
                    .bind(&self.kind)
                    .bind(state_key)
                    .bind(&self.event_id)
                    .bind(pos)
                    .execute(&mut *conn)
                    .await?;
                    if let Some(membership) = &self.membership {
                        sqlx::query(
                            "INSERT INTO memberships (room_id, user_id, membership, stream) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT (room_id, user_id) DO UPDATE SET \
                         membership = excluded.membership, stream = excluded.stream, forgotten = 0",
                        )
                        .bind(&self.room_id)
                        .bind(state_key)
                        .bind(membership)
                        .bind(pos)
                        .execute(&mut *conn)
                        .await?;
                    }
                }
                if let Some((device, scope, txn)) = &self.txn {
                    sqlx::query(
                        "DELETE FROM room_txns WHERE sender = $1 AND device = $2 AND room_id = $3 \
                     AND scope = $4 AND txn_id = $5 AND received_ms < $6",
                    )
                    .bind(&self.sender)
                    .bind(device)
                    .bind(&self.room_id)
                    .bind(*scope)
                    .bind(txn)
                    .bind(self.txn_expired_before)
                    .execute(&mut *conn)
                    .await?;
                    sqlx::query(
                        "INSERT INTO room_txns (sender, device, room_id, scope, txn_id, event_id, \
                     received_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    )
                    .bind(&self.sender)
                    .bind(device)
                    .bind(&self.room_id)
                    .bind(*scope)
                    .bind(txn)
                    .bind(&self.event_id)
                    .bind(self.received_ms)
                    .execute(&mut *conn)
                    .await?;
                }
                if let Some((target, redacted, because)) = &self.redaction {
                    sqlx::query(
                        "UPDATE events SET json = $1, redacted_because = $2 WHERE event_id = $3",
                    )
                    .bind(redacted)
                    .bind(because)
                    .bind(target)
                    .execute(&mut *conn)
                    .await?;
                }
            });
            Ok(())
        })
    }

    /// A message event (no new room, no state, no redaction, no transaction) is the one
    /// `INSERT`.
    fn needs_savepoint(&self) -> bool {
        self.create_version.is_some()
            || self.state_key.is_some()
            || self.redaction.is_some()
            || self.txn.is_some()
    }

    fn try_clone(&self) -> Option<Box<dyn StreamOp>> {
        Some(Box::new(self.clone()))
    }
}

/// Most transactions one [`PruneTxns`] deletes (the rest is left to the next).
pub const PRUNE_BATCH: i64 = 5_000;

/// Forgets client transactions accepted before `before_ms` (at most [`PRUNE_BATCH`], oldest
/// first): past their retention, a repeated transaction ID is a new event.
#[derive(Debug, Clone)]
pub struct PruneTxns {
    pub before_ms: i64,
}

impl StreamOp for PruneTxns {
    fn apply<'c>(
        self: Box<Self>,
        mut conn: Conn<'c>,
        _pos: i64,
    ) -> BoxFuture<'c, Result<(), sqlx::Error>> {
        Box::pin(async move {
            // The oldest first, by the row's identity: SQLite's rowid, PostgreSQL's `id`.
            let deleted = match &mut conn {
                Conn::Sqlite(conn) => sqlx::query(
                    "DELETE FROM room_txns WHERE rowid IN (SELECT rowid FROM room_txns \
                         WHERE received_ms < $1 ORDER BY received_ms LIMIT $2)",
                )
                .bind(self.before_ms)
                .bind(PRUNE_BATCH)
                .execute(&mut **conn)
                .await?
                .rows_affected(),
                Conn::Postgres(conn) => sqlx::query(
                    "DELETE FROM room_txns WHERE id IN (SELECT id FROM room_txns \
                         WHERE received_ms < $1 ORDER BY received_ms LIMIT $2)",
                )
                .bind(self.before_ms)
                .bind(PRUNE_BATCH)
                .execute(&mut **conn)
                .await?
                .rows_affected(),
            };
            if deleted > 0 {
                tracing::debug!(deleted, "expired matrix transactions pruned");
            }
            Ok(())
        })
    }

    fn needs_savepoint(&self) -> bool {
        false
    }

    fn try_clone(&self) -> Option<Box<dyn StreamOp>> {
        Some(Box::new(self.clone()))
    }
}
