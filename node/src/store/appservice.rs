//! The transaction queues of application services (`appservice_state`, `appservice_txns` in
//! `rethink.db`): where each service's transactions were made up to, and those not yet
//! delivered. Written directly (not through the stream writer): nothing here is reported by
//! `/sync`. Besides the room stream position, a service's state holds the highest seq of its bus
//! session taken into a transaction (`bus_seq`, migration 0010), advanced in the transaction's
//! commit. The ephemeral data of a stream range (receipts, presence, to-device messages: rows
//! of the user data tables carrying the stream position of their change) is read here too.

use sqlx::Row as _;
use sqlx::sqlite::SqlitePool;

use super::StoreError;

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

/// An `m.read` receipt changed in a stream range.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ReceiptRow {
    pub room_id: String,
    pub user_id: String,
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

/// SQL over the node's pool.
#[derive(Debug, Clone)]
pub struct AppserviceStore {
    pool: SqlitePool,
}

impl AppserviceStore {
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
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
        .execute(&self.pool)
        .await?;
        let row = sqlx::query("SELECT stream_pos, bus_seq FROM appservice_state WHERE as_id = ?")
            .bind(as_id)
            .fetch_one(&self.pool)
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
        .fetch_optional(&self.pool)
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
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// In one commit: records that everything up to `upto` was looked at and, if `txn` is
    /// given (body, item count), queues it under the next transaction ID.
    pub async fn advance(
        &self,
        as_id: &str,
        upto: &AsPosition,
        txn: Option<(&str, i64)>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        if let Some((body, items)) = txn {
            sqlx::query(
                "INSERT INTO appservice_txns (as_id, txn_id, body, items) \
                 SELECT as_id, next_txn, ?, ? FROM appservice_state WHERE as_id = ?",
            )
            .bind(body)
            .bind(items)
            .bind(as_id)
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE appservice_state SET next_txn = next_txn + 1 WHERE as_id = ?")
                .bind(as_id)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("UPDATE appservice_state SET stream_pos = ?, bus_seq = ? WHERE as_id = ?")
            .bind(upto.stream)
            .bind(upto.bus_seq)
            .bind(as_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The `m.read` receipts changed in `(after, upto]`, in stream order.
    pub async fn receipts_between(
        &self,
        after: i64,
        upto: i64,
    ) -> Result<Vec<ReceiptRow>, StoreError> {
        Ok(sqlx::query_as::<_, ReceiptRow>(
            "SELECT room_id, user_id, thread, event_id, ts FROM receipts \
             WHERE stream > ? AND stream <= ? AND type = 'm.read' ORDER BY stream",
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
