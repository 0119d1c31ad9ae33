//! The transaction queues of application services (`appservice_state`, `appservice_txns` in
//! `rethink.db`): where each service's transactions were made up to, and those not yet
//! delivered. Written directly (not through the stream writer): nothing here is reported by
//! `/sync`.

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

/// SQL over the node's pool.
#[derive(Debug, Clone)]
pub struct AppserviceStore {
    pool: SqlitePool,
}

impl AppserviceStore {
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }

    /// The stream position the service's transactions were made up to; a service seen for the
    /// first time starts at `start` (it is not sent the history before its registration).
    pub async fn position(&self, as_id: &str, start: i64) -> Result<i64, StoreError> {
        sqlx::query(
            "INSERT INTO appservice_state (as_id, stream_pos, next_txn) VALUES (?, ?, 1) \
             ON CONFLICT (as_id) DO NOTHING",
        )
        .bind(as_id)
        .bind(start)
        .execute(&self.pool)
        .await?;
        Ok(
            sqlx::query_scalar("SELECT stream_pos FROM appservice_state WHERE as_id = ?")
                .bind(as_id)
                .fetch_one(&self.pool)
                .await?,
        )
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
        upto: i64,
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
            sqlx::query(
                "UPDATE appservice_state SET next_txn = next_txn + 1, stream_pos = ? \
                 WHERE as_id = ?",
            )
            .bind(upto)
            .bind(as_id)
            .execute(&mut *tx)
            .await?;
        } else {
            sqlx::query("UPDATE appservice_state SET stream_pos = ? WHERE as_id = ?")
                .bind(upto)
                .bind(as_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
