//! Tables that moved from one database file to another, moved once in an older node's data
//! directory: the session tables from `rethink.db` to `bus.db` (issue 10), the stubs' key-value
//! store from `bus.db` to `stubs.db` (issue 13: its writes waited in SQLite's busy handler for
//! the bus writer's lock), and the application services' queues (`super::super::appservice`).

use std::path::Path;

use sqlx::SqlitePool;

use super::StoreError;

/// Copies the tables that moved from `rethink.db` (attached as `old`) to `bus.db`, parents first.
const BUS_TABLES_COPY: [&str; 5] = [
    "INSERT OR IGNORE INTO main.node_meta SELECT * FROM old.node_meta",
    "INSERT OR IGNORE INTO main.sessions (id, runtime_url, token_hash, identity_json, acked_seq) \
     SELECT id, runtime_url, token_hash, identity_json, acked_seq FROM old.sessions",
    "INSERT OR IGNORE INTO main.session_addresses SELECT * FROM old.session_addresses",
    "INSERT OR IGNORE INTO main.session_subscriptions SELECT * FROM old.session_subscriptions",
    "INSERT OR IGNORE INTO main.outbox SELECT * FROM old.outbox",
];
/// Drops the moved tables from `rethink.db`, children first.
const BUS_TABLES_DROP: [&str; 5] = [
    "DROP TABLE IF EXISTS outbox",
    "DROP TABLE IF EXISTS session_subscriptions",
    "DROP TABLE IF EXISTS session_addresses",
    "DROP TABLE IF EXISTS sessions",
    "DROP TABLE IF EXISTS node_meta",
];
/// The session tables that a node before the split kept in `rethink.db`, into `bus.db`. On a
/// fresh data directory the tables are the empty ones migration 0001 created.
pub(super) const BUS_TABLES: TableMove = TableMove {
    marker: "sessions",
    copies: &BUS_TABLES_COPY,
    drops: &BUS_TABLES_DROP,
    what: "session tables moved from rethink.db to bus.db",
};

/// Copies the stubs' key-value tables from `bus.db` (attached as `old`) to `stubs.db`.
const KV_TABLES_COPY: [&str; 2] = [
    "INSERT OR IGNORE INTO main.stub_kv SELECT * FROM old.stub_kv",
    "INSERT OR IGNORE INTO main.stub_kv_total SELECT * FROM old.stub_kv_total",
];
/// Drops them from `bus.db`.
const KV_TABLES_DROP: [&str; 2] = [
    "DROP TABLE IF EXISTS stub_kv_total",
    "DROP TABLE IF EXISTS stub_kv",
];

/// The stubs' key-value tables that an older node kept in `bus.db`, into `stubs.db`. On a
/// fresh data directory the tables are the empty ones bus migrations 0002 and 0003 created.
pub(super) const KV_TABLES: TableMove = TableMove {
    marker: "stub_kv",
    copies: &KV_TABLES_COPY,
    drops: &KV_TABLES_DROP,
    what: "stub key-value tables moved from bus.db to stubs.db",
};

/// Tables that moved from one file to another: `marker` is one of them, `copies` read them from
/// the old file (attached as `old`), `drops` remove them from it; `what` is logged with the rows
/// moved.
pub(crate) struct TableMove {
    pub(crate) marker: &'static str,
    pub(crate) copies: &'static [&'static str],
    pub(crate) drops: &'static [&'static str],
    pub(crate) what: &'static str,
}

/// Moves the tables of `m` that an older node kept in another file (`from`, the file
/// `db_file`) into `to`: when `m.marker` is still a table of `from`, runs `m.copies` (reading
/// `old.<table>`) in one transaction of `to`, then `m.drops` in one of `from`. Idempotent: a
/// crash between the copy and the drop copies again at the next start (the copies are `INSERT
/// OR IGNORE`).
pub(crate) async fn move_tables(
    from: &SqlitePool,
    to: &SqlitePool,
    db_file: &Path,
    m: &TableMove,
) -> Result<(), StoreError> {
    let moved = copy_and_drop(from, to, db_file, m).await?;
    if moved > 0 {
        tracing::info!(rows = moved, "{}", m.what);
    }
    Ok(())
}

/// [`move_tables`]' work; the rows copied.
async fn copy_and_drop(
    from: &SqlitePool,
    to: &SqlitePool,
    db_file: &Path,
    m: &TableMove,
) -> Result<u64, StoreError> {
    let TableMove {
        marker,
        copies,
        drops,
        ..
    } = m;
    let left: Option<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?")
            .bind(marker)
            .fetch_optional(from)
            .await?;
    if left.is_none() {
        return Ok(0);
    }
    let mut conn = to.acquire().await?;
    sqlx::query("ATTACH DATABASE ? AS old")
        .bind(db_file.to_string_lossy().as_ref())
        .execute(&mut *conn)
        .await?;
    let copied = async {
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        let mut moved = 0u64;
        for &copy in *copies {
            moved += sqlx::query(copy).execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok::<u64, sqlx::Error>(moved)
    }
    .await;
    sqlx::query("DETACH DATABASE old")
        .execute(&mut *conn)
        .await?;
    let moved = copied?;
    drop(conn);
    let mut tx = from.begin().await?;
    for &drop_table in *drops {
        sqlx::query(drop_table).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(moved)
}
