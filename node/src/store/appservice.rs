//! The transaction queues of application services (`appservice_state`, `appservice_txns`):
//! where each service's
//! transactions were made up to, and those not yet delivered.
//!
//! On SQLite they are in their own file `appservice.db` (migrations `appservice_migrations/`).
//! Under Matrix load the stream
//! writer holds `rethink.db`'s write lock for most of each second, and a queue write waiting
//! for it slept in SQLite's busy handler (p99 141 ms from commit to transaction; BENCHMARKS.md):
//! with a file of its own, a queue write waits for nothing but the other services' queue writes,
//! and those wait in the pool (one connection), not in the busy handler.
//!
//! Nodes before the split kept these tables in `rethink.db`; `MOVE` moves their
//! rows here at start, so a queued transaction survives the upgrade.
//!
//! Besides the room stream position, a service's state holds the highest seq of its bus
//! session taken into a transaction (`bus_seq`), advanced in the transaction's commit. The
//! ephemeral data of a stream range (receipts, presence, to-device messages: rows of the user
//! data tables in `rethink.db`, carrying the stream position of their change) is read here too,
//! from the Matrix database.
//!
//! On PostgreSQL (`store.url`) the queues and the ephemeral rows are in the one database
//! (`pg_migrations/0012_matrix_appservice.sql`): no write lock of a file to avoid there. One SQL
//! text serves both backends ([`Db`]).

use super::StoreError;
use super::db::{Db, on_db, on_tx};

/// Copies the queue tables of an older node's `rethink.db` (attached as `old`) into
/// `appservice.db`.
const MOVE_COPY: [&str; 2] = [
    "INSERT OR IGNORE INTO main.appservice_state (as_id, stream_pos, next_txn, bus_seq) \
     SELECT as_id, stream_pos, next_txn, bus_seq FROM old.appservice_state",
    "INSERT OR IGNORE INTO main.appservice_txns (as_id, txn_id, body, items) \
     SELECT as_id, txn_id, body, items FROM old.appservice_txns",
];
/// Drops them from `rethink.db`.
const MOVE_DROP: [&str; 2] = [
    "DROP TABLE IF EXISTS appservice_txns",
    "DROP TABLE IF EXISTS appservice_state",
];

/// The queue tables that a node before the split kept in `rethink.db`, into `appservice.db`
/// ([`super::sqlite::move_tables`]: idempotent). On a fresh data directory the tables are the
/// empty ones `rethink.db`'s migrations 0009 and 0010 created.
pub(super) const MOVE: super::sqlite::TableMove = super::sqlite::TableMove {
    marker: "appservice_state",
    copies: &MOVE_COPY,
    drops: &MOVE_DROP,
    what: "application service queues moved from rethink.db to appservice.db",
};

/// A transaction waiting for delivery.
#[derive(Debug, Clone)]
pub struct StoredAsTxn {
    pub txn_id: i64,
    pub body: String,
    pub items: i64,
}

/// Where a service's transactions were made up to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AsPosition {
    /// The room stream position.
    pub stream: i64,
    /// The highest seq of the service's bus session put in a transaction.
    pub bus_seq: i64,
}

/// A receipt changed in a stream range.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ReceiptRow {
    pub room_id: String,
    pub user_id: String,
    /// `m.read` or `m.read.private`.
    #[sqlx(rename = "type")]
    pub kind: String,
    pub thread: String,
    pub event_id: String,
    pub ts: i64,
}

/// A presence set in a stream range.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PresenceRow {
    pub user_id: String,
    pub presence: String,
    pub status_msg: Option<String>,
    pub last_active_ms: i64,
}

/// A to-device message sent in a stream range, still waiting for its device.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ToDeviceRow {
    pub user_id: String,
    pub device_id: String,
    /// `{"type", "sender", "content"}`.
    pub json: String,
}

/// The queues (`appservice.db`, or PostgreSQL) and the ephemeral rows (the Matrix database).
#[derive(Debug, Clone)]
pub struct AppserviceStore {
    /// `appservice.db` ([`super::sqlite::SqliteStore::appservice_pool`]), or PostgreSQL.
    queue: Db,
    /// The Matrix database (`rethink.db`'s shared pool, or PostgreSQL), for the ephemeral rows.
    pool: Db,
}

impl AppserviceStore {
    /// The store over `queue` (`appservice.db`, or PostgreSQL) and `matrix` (the database of
    /// the user-data tables: `rethink.db`, or PostgreSQL). On PostgreSQL both are the one
    /// database of `store.url`.
    pub fn new(queue: impl Into<Db>, matrix: impl Into<Db>) -> Self {
        Self {
            queue: queue.into(),
            pool: matrix.into(),
        }
    }

    /// Where the service's transactions were made up to; a service seen for the first time
    /// starts at stream position `start` (it is not sent the history before its registration).
    pub async fn position(&self, as_id: &str, start: i64) -> Result<AsPosition, StoreError> {
        on_db!(&self.queue, |e| sqlx::query(
            "INSERT INTO appservice_state (as_id, stream_pos, next_txn) VALUES ($1, $2, 1) \
             ON CONFLICT (as_id) DO NOTHING",
        )
        .bind(as_id)
        .bind(start)
        .execute(e)
        .await?
        .rows_affected());
        let (stream, bus_seq): (i64, i64) = on_db!(&self.queue, |e| sqlx::query_as(
            "SELECT stream_pos, bus_seq FROM appservice_state WHERE as_id = $1"
        )
        .bind(as_id)
        .fetch_one(e)
        .await?);
        Ok(AsPosition { stream, bus_seq })
    }

    /// The oldest undelivered transaction.
    pub async fn oldest(&self, as_id: &str) -> Result<Option<StoredAsTxn>, StoreError> {
        let row: Option<(i64, String, i64)> = on_db!(&self.queue, |e| sqlx::query_as(
            "SELECT txn_id, body, items FROM appservice_txns WHERE as_id = $1 \
             ORDER BY txn_id LIMIT 1",
        )
        .bind(as_id)
        .fetch_optional(e)
        .await?);
        Ok(row.map(|(txn_id, body, items)| StoredAsTxn {
            txn_id,
            body,
            items,
        }))
    }

    /// Forgets a delivered transaction.
    pub async fn delivered(&self, as_id: &str, txn_id: i64) -> Result<(), StoreError> {
        on_db!(&self.queue, |e| sqlx::query(
            "DELETE FROM appservice_txns WHERE as_id = $1 AND txn_id = $2"
        )
        .bind(as_id)
        .bind(txn_id)
        .execute(e)
        .await?
        .rows_affected());
        Ok(())
    }

    /// In one commit: records that everything up to `upto` was looked at and, if `txn` is
    /// given (body, item count), queues it under the next transaction ID, which it returns.
    pub async fn advance(
        &self,
        as_id: &str,
        upto: &AsPosition,
        txn: Option<(&str, i64)>,
    ) -> Result<Option<i64>, StoreError> {
        let Some((body, items)) = txn else {
            on_db!(&self.queue, |e| sqlx::query(
                "UPDATE appservice_state SET stream_pos = $1, bus_seq = $2 WHERE as_id = $3"
            )
            .bind(upto.stream)
            .bind(upto.bus_seq)
            .bind(as_id)
            .execute(e)
            .await?
            .rows_affected());
            return Ok(None);
        };
        let mut tx = self.queue.begin().await?;
        let txn_id: i64 = on_tx!(&mut tx, |c| {
            let txn_id: i64 = sqlx::query_scalar(
                "UPDATE appservice_state SET stream_pos = $1, bus_seq = $2, \
                 next_txn = next_txn + 1 WHERE as_id = $3 RETURNING next_txn - 1",
            )
            .bind(upto.stream)
            .bind(upto.bus_seq)
            .bind(as_id)
            .fetch_one(&mut *c)
            .await?;
            sqlx::query(
                "INSERT INTO appservice_txns (as_id, txn_id, body, items) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(as_id)
            .bind(txn_id)
            .bind(body)
            .bind(items)
            .execute(&mut *c)
            .await?;
            txn_id
        });
        tx.commit().await?;
        Ok(Some(txn_id))
    }

    /// The receipts (`m.read`, `m.read.private`) changed in `(after, upto]`, in stream order.
    pub async fn receipts_between(
        &self,
        after: i64,
        upto: i64,
    ) -> Result<Vec<ReceiptRow>, StoreError> {
        Ok(on_db!(&self.pool, |e| sqlx::query_as::<_, ReceiptRow>(
            "SELECT room_id, user_id, type, thread, event_id, ts FROM receipts \
             WHERE stream > $1 AND stream <= $2 ORDER BY stream",
        )
        .bind(after)
        .bind(upto)
        .fetch_all(e)
        .await?))
    }

    /// The presence set in `(after, upto]`, in stream order.
    pub async fn presence_between(
        &self,
        after: i64,
        upto: i64,
    ) -> Result<Vec<PresenceRow>, StoreError> {
        Ok(on_db!(&self.pool, |e| sqlx::query_as::<_, PresenceRow>(
            "SELECT user_id, presence, status_msg, last_active_ms FROM presence \
             WHERE stream > $1 AND stream <= $2 ORDER BY stream",
        )
        .bind(after)
        .bind(upto)
        .fetch_all(e)
        .await?))
    }

    /// The to-device messages sent in `(after, upto]` and not yet delivered, in order.
    pub async fn to_device_between(
        &self,
        after: i64,
        upto: i64,
    ) -> Result<Vec<ToDeviceRow>, StoreError> {
        Ok(on_db!(&self.pool, |e| sqlx::query_as::<_, ToDeviceRow>(
            "SELECT user_id, device_id, json FROM to_device \
             WHERE stream > $1 AND stream <= $2 ORDER BY stream, id",
        )
        .bind(after)
        .bind(upto)
        .fetch_all(e)
        .await?))
    }
}

#[cfg(test)]
mod tests;
