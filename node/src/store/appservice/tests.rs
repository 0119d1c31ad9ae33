//! The queue's own file: rows an older node left in `rethink.db` are moved to `appservice.db`
//! (nothing queued is lost by the upgrade), and a queue write does not wait for `rethink.db`'s
//! write lock; and the queue itself on both backends (`crate::store::tests`).

use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use tempfile::TempDir;

use super::*;
use crate::store::sqlite::SqliteStore;
use crate::store::tests::{Opened, Place};

/// The queue tables as `rethink.db`'s migrations 0009 and 0010 left them.
const OLD_TABLES: &str = "CREATE TABLE appservice_state (as_id TEXT PRIMARY KEY NOT NULL, \
     stream_pos INTEGER NOT NULL, next_txn INTEGER NOT NULL, \
     bus_seq INTEGER NOT NULL DEFAULT 0); \
     CREATE TABLE appservice_txns (as_id TEXT NOT NULL, txn_id INTEGER NOT NULL, \
     body TEXT NOT NULL, items INTEGER NOT NULL, PRIMARY KEY (as_id, txn_id));";

fn store(s: &SqliteStore) -> AppserviceStore {
    AppserviceStore::new(s.appservice_pool().clone(), s.pool().clone())
}

/// A data directory written before the split (queues in rethink.db) keeps its services'
/// positions, transaction IDs and undelivered transactions.
#[tokio::test]
async fn queues_left_in_the_matrix_file_are_moved_to_appservice_db() -> anyhow::Result<()> {
    let dir = TempDir::new()?;
    {
        // Today's layout, then the old one rebuilt by hand: the queues in rethink.db only.
        let s = SqliteStore::open(dir.path()).await?;
        s.close().await;
    }
    std::fs::remove_file(dir.path().join("appservice.db"))?;
    let old = SqlitePool::connect_with(
        SqliteConnectOptions::new().filename(dir.path().join("rethink.db")),
    )
    .await?;
    // The tables as rethink.db's migrations 0009 and 0010 left them.
    sqlx::raw_sql(OLD_TABLES).execute(&old).await?;
    sqlx::raw_sql(
        "INSERT INTO appservice_state VALUES ('bridge', 40, 8, 3); \
         INSERT INTO appservice_txns VALUES ('bridge', 6, '{\"events\":[6]}', 1), \
         ('bridge', 7, '{\"events\":[7]}', 1);",
    )
    .execute(&old)
    .await?;
    old.close().await;

    for _ in 0..2 {
        // Twice: the second start finds nothing left to move.
        let s = SqliteStore::open(dir.path()).await?;
        let q = store(&s);
        let pos = q.position("bridge", 99).await?;
        assert_eq!((pos.stream, pos.bus_seq), (40, 3), "the position is kept");
        let oldest = q.oldest("bridge").await?.expect("a queued transaction");
        assert_eq!(
            (oldest.txn_id, oldest.body.as_str()),
            (6, "{\"events\":[6]}")
        );
        let left: Option<String> =
            sqlx::query_scalar("SELECT name FROM sqlite_master WHERE name = 'appservice_state'")
                .fetch_optional(s.pool())
                .await?;
        assert_eq!(left, None, "rethink.db keeps no queue table");
        s.close().await;
    }
    let s = SqliteStore::open(dir.path()).await?;
    let q = store(&s);
    q.delivered("bridge", 6).await?;
    q.delivered("bridge", 7).await?;
    let pos = AsPosition {
        stream: 41,
        bus_seq: 3,
    };
    let id = q.advance("bridge", &pos, Some(("{}", 1))).await?;
    assert_eq!(id, Some(8), "transaction IDs go on: none is given twice");
    s.close().await;
    Ok(())
}

/// The queue writes to its own file: a transaction holding rethink.db's write lock (as the
/// Matrix stream writer does while committing) does not block it.
#[tokio::test]
async fn queue_writes_do_not_wait_for_the_matrix_write_lock() -> anyhow::Result<()> {
    let dir = TempDir::new()?;
    let s = SqliteStore::open(dir.path()).await?;
    let q = store(&s);
    let mut matrix = s.stream_pool().begin().await?;
    sqlx::query("CREATE TABLE lock_holder (x INTEGER)")
        .execute(&mut *matrix)
        .await?;
    // rethink.db's write lock is now held until `matrix` ends. With the queue in rethink.db,
    // these writes would wait BUSY_TIMEOUT and then fail with "database is locked".
    let start = q.position("bridge", 5).await?;
    let upto = AsPosition { stream: 9, ..start };
    assert_eq!(q.advance("bridge", &upto, Some(("{}", 1))).await?, Some(1));
    q.delivered("bridge", 1).await?;
    matrix.rollback().await?;
    assert_eq!(q.position("bridge", 0).await?.stream, 9);
    assert!(q.oldest("bridge").await?.is_none());
    s.close().await;
    Ok(())
}

/// The store of an opened place: `appservice.db` and `rethink.db`, or the one PostgreSQL
/// database.
fn store_of(opened: &Opened) -> AppserviceStore {
    match opened {
        Opened::Sqlite(s) => store(s),
        Opened::Postgres(s) => AppserviceStore::new(s.pool().clone(), s.pool().clone()),
    }
}

mod cases {
    use super::*;

    /// A service's position, its transaction IDs and its undelivered transactions, across a
    /// reopen; an ID is never given twice.
    pub(super) async fn the_queue_keeps_positions_and_transactions(
        place: Place,
    ) -> anyhow::Result<()> {
        let opened = place.open().await?;
        let q = store_of(&opened);
        let start = q.position("bridge", 7).await?;
        assert_eq!(
            start,
            AsPosition {
                stream: 7,
                bus_seq: 0
            }
        );
        assert_eq!(q.position("bridge", 99).await?.stream, 7, "first seen at 7");
        let upto = AsPosition {
            stream: 10,
            bus_seq: 2,
        };
        assert_eq!(
            q.advance("bridge", &upto, Some(("{\"a\":1}", 3))).await?,
            Some(1)
        );
        let upto = AsPosition {
            stream: 12,
            bus_seq: 2,
        };
        assert_eq!(q.advance("bridge", &upto, None).await?, None);
        let upto = AsPosition {
            stream: 15,
            bus_seq: 4,
        };
        assert_eq!(
            q.advance("bridge", &upto, Some(("{\"a\":2}", 1))).await?,
            Some(2)
        );
        assert!(q.oldest("other").await?.is_none());
        opened.close().await;

        let opened = place.open().await?;
        let q = store_of(&opened);
        assert_eq!(
            q.position("bridge", 0).await?,
            AsPosition {
                stream: 15,
                bus_seq: 4
            }
        );
        let oldest = q.oldest("bridge").await?.expect("the first transaction");
        assert_eq!(
            (oldest.txn_id, oldest.body.as_str(), oldest.items),
            (1, "{\"a\":1}", 3)
        );
        q.delivered("bridge", 1).await?;
        assert_eq!(q.oldest("bridge").await?.map(|t| t.txn_id), Some(2));
        q.delivered("bridge", 2).await?;
        assert!(q.oldest("bridge").await?.is_none());
        let upto = AsPosition {
            stream: 16,
            bus_seq: 4,
        };
        assert_eq!(q.advance("bridge", &upto, Some(("{}", 1))).await?, Some(3));
        Ok(())
    }
}

crate::store::tests::on_both_backends!(
    cases: [the_queue_keeps_positions_and_transactions],
);
