//! The transaction queues of application services (`appservice_state`, `appservice_txns`),
//! in their own file `appservice.db` (migrations `appservice_migrations/`): where each service's
//! transactions were made up to, and those not yet delivered. Under Matrix load the stream
//! writer holds `rethink.db`'s write lock for most of each second, and a queue write waiting
//! for it slept in SQLite's busy handler (p99 141 ms from commit to transaction; BENCHMARKS.md):
//! with a file of its own, a queue write waits for nothing but the other services' queue writes,
//! and those wait in the pool (one connection), not in the busy handler.
//!
//! Nodes before the split kept these tables in `rethink.db`; `move_from_matrix_db` moves their
//! rows here at start, so a queued transaction survives the upgrade.
//!
//! Besides the room stream position, a service's state holds the highest seq of its bus
//! session taken into a transaction (`bus_seq`), advanced in the transaction's commit. The
//! ephemeral data of a stream range (receipts, presence, to-device messages: rows of the user
//! data tables in `rethink.db`, carrying the stream position of their change) is read here too,
//! from the Matrix pool.

use std::path::Path;

use sqlx::Row as _;
use sqlx::sqlite::SqlitePool;

use super::StoreError;

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

/// Moves the rows of the queue tables that a node before the split kept in `rethink.db`
/// (`matrix`, the file `db_file`) into `appservice.db` (`queue`), then drops those tables from
/// `rethink.db` ([`super::sqlite::move_tables`]: idempotent). On a fresh data directory the
/// tables are the empty ones `rethink.db`'s migrations 0009 and 0010 created.
pub(super) async fn move_from_matrix_db(
    matrix: &SqlitePool,
    queue: &SqlitePool,
    db_file: &Path,
) -> Result<(), StoreError> {
    let moved = super::sqlite::move_tables(
        matrix,
        queue,
        db_file,
        "appservice_state",
        &MOVE_COPY,
        &MOVE_DROP,
    )
    .await?;
    if moved > 0 {
        tracing::info!(
            rows = moved,
            "application service queues moved from rethink.db to appservice.db"
        );
    }
    Ok(())
}

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

/// The queues (`appservice.db`) and the ephemeral rows (`rethink.db`).
#[derive(Debug, Clone)]
pub struct AppserviceStore {
    /// `appservice.db` ([`super::sqlite::SqliteStore::appservice_pool`]).
    queue: SqlitePool,
    /// `rethink.db`'s shared pool, for the ephemeral rows.
    pool: SqlitePool,
}

impl AppserviceStore {
    /// The store over `queue` (`appservice.db`) and `matrix` (`rethink.db`).
    pub fn new(queue: SqlitePool, matrix: SqlitePool) -> Self {
        Self {
            queue,
            pool: matrix,
        }
    }

    /// Where the service's transactions were made up to; a service seen for the first time
    /// starts at stream position `start` (it is not sent the history before its registration).
    pub async fn position(&self, as_id: &str, start: i64) -> Result<AsPosition, StoreError> {
        sqlx::query(
            "INSERT INTO appservice_state (as_id, stream_pos, next_txn) VALUES (?, ?, 1) \
             ON CONFLICT (as_id) DO NOTHING",
        )
        .bind(as_id)
        .bind(start)
        .execute(&self.queue)
        .await?;
        let row = sqlx::query("SELECT stream_pos, bus_seq FROM appservice_state WHERE as_id = ?")
            .bind(as_id)
            .fetch_one(&self.queue)
            .await?;
        Ok(AsPosition {
            stream: row.try_get("stream_pos")?,
            bus_seq: row.try_get("bus_seq")?,
        })
    }

    /// The oldest undelivered transaction.
    pub async fn oldest(&self, as_id: &str) -> Result<Option<StoredAsTxn>, StoreError> {
        let row = sqlx::query(
            "SELECT txn_id, body, items FROM appservice_txns WHERE as_id = ? \
             ORDER BY txn_id LIMIT 1",
        )
        .bind(as_id)
        .fetch_optional(&self.queue)
        .await?;
        row.map(|r| {
            Ok(StoredAsTxn {
                txn_id: r.try_get("txn_id")?,
                body: r.try_get("body")?,
                items: r.try_get("items")?,
            })
        })
        .transpose()
    }

    /// Forgets a delivered transaction.
    pub async fn delivered(&self, as_id: &str, txn_id: i64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM appservice_txns WHERE as_id = ? AND txn_id = ?")
            .bind(as_id)
            .bind(txn_id)
            .execute(&self.queue)
            .await?;
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
            sqlx::query("UPDATE appservice_state SET stream_pos = ?, bus_seq = ? WHERE as_id = ?")
                .bind(upto.stream)
                .bind(upto.bus_seq)
                .bind(as_id)
                .execute(&self.queue)
                .await?;
            return Ok(None);
        };
        let mut tx = self.queue.begin().await?;
        let txn_id: i64 = sqlx::query_scalar(
            "UPDATE appservice_state SET stream_pos = ?, bus_seq = ?, next_txn = next_txn + 1 \
             WHERE as_id = ? RETURNING next_txn - 1",
        )
        .bind(upto.stream)
        .bind(upto.bus_seq)
        .bind(as_id)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO appservice_txns (as_id, txn_id, body, items) VALUES (?, ?, ?, ?)")
            .bind(as_id)
            .bind(txn_id)
            .bind(body)
            .bind(items)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(txn_id))
    }

    /// The receipts (`m.read`, `m.read.private`) changed in `(after, upto]`, in stream order.
    pub async fn receipts_between(
        &self,
        after: i64,
        upto: i64,
    ) -> Result<Vec<ReceiptRow>, StoreError> {
        Ok(sqlx::query_as::<_, ReceiptRow>(
            "SELECT room_id, user_id, type, thread, event_id, ts FROM receipts \
             WHERE stream > ? AND stream <= ? ORDER BY stream",
        )
        .bind(after)
        .bind(upto)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The presence set in `(after, upto]`, in stream order.
    pub async fn presence_between(
        &self,
        after: i64,
        upto: i64,
    ) -> Result<Vec<PresenceRow>, StoreError> {
        Ok(sqlx::query_as::<_, PresenceRow>(
            "SELECT user_id, presence, status_msg, last_active_ms FROM presence \
             WHERE stream > ? AND stream <= ? ORDER BY stream",
        )
        .bind(after)
        .bind(upto)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The to-device messages sent in `(after, upto]` and not yet delivered, in order.
    pub async fn to_device_between(
        &self,
        after: i64,
        upto: i64,
    ) -> Result<Vec<ToDeviceRow>, StoreError> {
        Ok(sqlx::query_as::<_, ToDeviceRow>(
            "SELECT user_id, device_id, json FROM to_device \
             WHERE stream > ? AND stream <= ? ORDER BY stream, id",
        )
        .bind(after)
        .bind(upto)
        .fetch_all(&self.pool)
        .await?)
    }
}

#[cfg(test)]
mod tests;
