//! The stubs' key-value store (table `stub_kv`), persisted so a stub's data survives its restarts
//! and the node's: [`SqliteKv`] in a SQLite file of its own, `stubs.db` (`store/kv_migrations/`;
//! in `bus.db` its writes waited for the bus writer's lock, see `SqliteStore::kv_pool`), [`PgKv`]
//! in PostgreSQL (`store.url`). Sizes are counted in bytes (keys and values)
//! by both; a database failure is a 503 to the stub. Each stub's total is kept in
//! `stub_kv_total` (`kv_migrations/0001_stub_kv.sql` for `stubs.db`, `0003_stub_kv_total.sql`
//! in PostgreSQL), changed in the transaction of every
//! write and delete, so a write's quota check costs one row, not a sum over the stub's keys.
//! A batch ([`KvStore::apply`], the host's write-behind for other domains' stubs) is one
//! transaction; each key's last op counts, the total is changed once and checked before the
//! commit (413 and nothing applied beyond the quota).
//! - On SQLite, [`SqliteBatches`]: a connection of its own (rusqlite, on the SQLite library sqlx
//!   links) that commits on the calling thread, one cached statement per key. The host's
//!   write-behind runs it on a thread of its own ([`KvStore::batches`]), so a stub's writes are
//!   committed without a hand-off to sqlx's worker thread and back (each a thread wake-up:
//!   about 150 µs a trip on a loaded 2-vCPU machine, BENCHMARKS.md); [`SqliteKv`]'s own `apply`
//!   runs it in a blocking task.
//! - On PostgreSQL, per chunk of up to 64 keys one `DELETE ... RETURNING` of the old values'
//!   sizes and one multi-row `INSERT` of the new values, after the stub's advisory lock.

use std::sync::Arc;

use rethink_stubs::{BoxFuture, Failure, KvBatches, KvOp, KvStore, within_quota};
use sqlx::{PgPool, SqlitePool};

use crate::store::StoreError;

/// The bytes a key and its value count for.
fn size_of(key: &str, value: &[u8]) -> i64 {
    i64::try_from(key.len() + value.len()).unwrap_or(i64::MAX)
}

/// Adds to the stub's total the size of the new value (bind 2) less that of the value it
/// replaces, and returns the new total (binds: stub, size, stub, key). A write first, so the
/// transaction takes the write lock at once (waiting for any other writer of the file); a
/// read first would have to upgrade its snapshot, which SQLite refuses (SQLITE_BUSY) when the
/// file was written meanwhile.
const SQLITE_ADD_TO_TOTAL: &str = "INSERT INTO stub_kv_total (stub, bytes) VALUES (?, ? - \
     COALESCE((SELECT length(CAST(key AS BLOB)) + length(value) FROM stub_kv \
     WHERE stub = ? AND key = ?), 0)) \
     ON CONFLICT (stub) DO UPDATE SET bytes = bytes + excluded.bytes RETURNING bytes";

/// Takes from the stub's total the size of the value deleted (binds: stub, key, stub).
const SQLITE_SUB_FROM_TOTAL: &str = "UPDATE stub_kv_total SET bytes = bytes - \
     COALESCE((SELECT length(CAST(key AS BLOB)) + length(value) FROM stub_kv \
     WHERE stub = ? AND key = ?), 0) WHERE stub = ?";

/// One stub's writes wait for each other (a lock held to the commit): the size a write
/// replaces is read after the previous write of that stub committed.
const PG_LOCK_STUB: &str = "SELECT pg_advisory_xact_lock(hashtextextended('stub_kv/' || $1, 0))";

/// As [`SQLITE_ADD_TO_TOTAL`] (binds: stub, size, key).
const PG_ADD_TO_TOTAL: &str = "INSERT INTO stub_kv_total (stub, bytes) VALUES ($1, $2 - \
     COALESCE((SELECT octet_length(key) + octet_length(value) FROM stub_kv \
     WHERE stub = $1 AND key = $3), 0)) \
     ON CONFLICT (stub) DO UPDATE SET bytes = stub_kv_total.bytes + EXCLUDED.bytes \
     RETURNING bytes";

/// As [`SQLITE_SUB_FROM_TOTAL`] (binds: stub, key).
const PG_SUB_FROM_TOTAL: &str = "UPDATE stub_kv_total SET bytes = bytes - \
     COALESCE((SELECT octet_length(key) + octet_length(value) FROM stub_kv \
     WHERE stub = $1 AND key = $2), 0) WHERE stub = $1";

/// The bytes of a row of `stub_kv` on SQLite (keys are counted in bytes, as on PostgreSQL).
const SQLITE_ROW_SIZE: &str = "length(CAST(key AS BLOB)) + length(value)";

/// As [`SQLITE_ROW_SIZE`].
const PG_ROW_SIZE: &str = "CAST(octet_length(key) + octet_length(value) AS BIGINT)";

/// Keys per statement of a batch: a chunk's deletion binds one parameter per key, its insertion
/// two per key (and the stub once), far below either engine's limit.
const KV_CHUNK: usize = 64;

/// The deletion of `n` keys of one stub, returning the bytes each held (binds: stub, then the
/// keys). A write first (see `SQLITE_ADD_TO_TOTAL`).
fn take_sql(row_size: &str, n: usize) -> String {
    let mut sql = String::from("DELETE FROM stub_kv WHERE stub = $1 AND key IN (");
    for i in 0..n {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!("${}", i + 2));
    }
    sql.push_str(") RETURNING ");
    sql.push_str(row_size);
    sql
}

/// The insertion of `n` keys of one stub (binds: stub, then key and value of each).
fn put_sql(n: usize) -> String {
    let mut sql = String::from("INSERT INTO stub_kv (stub, key, value) VALUES ");
    for i in 0..n {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!("($1, ${}, ${})", 2 * i + 2, 2 * i + 3));
    }
    sql
}

/// Each key's last op, in the order of those last ops: what applying `ops` in order leaves.
/// (The write-behind folds its batches already; another caller may not have.)
fn last_per_key(ops: &[KvOp]) -> Vec<&KvOp> {
    let mut last = std::collections::HashMap::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        last.insert(op.key(), i);
    }
    ops.iter()
        .enumerate()
        .filter(|(i, op)| last.get(op.key()) == Some(i))
        .map(|(_, op)| op)
        .collect()
}

/// A batch's change of the stub's total (binds: stub, change), returning the new total. The
/// same text on both engines.
const CHANGE_TOTAL: &str = "INSERT INTO stub_kv_total (stub, bytes) VALUES ($1, $2) \
     ON CONFLICT (stub) DO UPDATE SET bytes = stub_kv_total.bytes + excluded.bytes \
     RETURNING bytes";

/// [`KvStore::apply`] on PostgreSQL: the stub's writes wait for each other first
/// ([`PG_LOCK_STUB`]), then each key's old value is taken out (its size known), the new one
/// put in, the total changed once, checked, committed. (On SQLite: [`SqliteBatches`].)
async fn pg_apply_batch(
    pool: &PgPool,
    stub: &str,
    ops: &[KvOp],
    max_total: usize,
) -> Result<Result<usize, Failure>, sqlx::Error> {
    if ops.is_empty() {
        let total: Option<i64> =
            sqlx::query_scalar("SELECT bytes FROM stub_kv_total WHERE stub = $1")
                .bind(stub)
                .fetch_optional(pool)
                .await?;
        return Ok(Ok(as_size(total.unwrap_or(0))));
    }
    let ops = last_per_key(ops);
    let mut tx = pool.begin().await?;
    sqlx::query(PG_LOCK_STUB)
        .bind(stub)
        .execute(&mut *tx)
        .await?;
    // Per chunk of keys: their old values taken out in one statement (their sizes returned),
    // the new ones put in with another.
    let mut change: i64 = 0;
    for chunk in ops.chunks(KV_CHUNK) {
        let take = take_sql(PG_ROW_SIZE, chunk.len());
        let mut q = sqlx::query_scalar(sqlx::AssertSqlSafe(take)).bind(stub);
        for op in chunk {
            q = q.bind(op.key());
        }
        let old: Vec<i64> = q.fetch_all(&mut *tx).await?;
        change -= old.iter().sum::<i64>();
        let puts: Vec<(&str, &[u8])> = chunk
            .iter()
            .filter_map(|op| match op {
                KvOp::Set { key, value } => Some((key.as_str(), value.as_slice())),
                KvOp::Delete { .. } => None,
            })
            .collect();
        if puts.is_empty() {
            continue;
        }
        change += puts.iter().map(|(k, v)| size_of(k, v)).sum::<i64>();
        let put = put_sql(puts.len());
        let mut q = sqlx::query(sqlx::AssertSqlSafe(put)).bind(stub);
        for (key, value) in &puts {
            q = q.bind(*key).bind(*value);
        }
        q.execute(&mut *tx).await?;
    }
    let total: i64 = sqlx::query_scalar(CHANGE_TOTAL)
        .bind(stub)
        .bind(change)
        .fetch_one(&mut *tx)
        .await?;
    // Over the quota: dropping the transaction rolls the batch back.
    if let Err(f) = within_quota(as_size(total), max_total) {
        return Ok(Err(f));
    }
    tx.commit().await?;
    Ok(Ok(as_size(total)))
}

/// The blocking writer of batches on `stubs.db` ([`KvStore::batches`]): a connection of its
/// own (rusqlite on the SQLite library sqlx links), used by the host's write-behind from its
/// thread, and by [`SqliteKv`]'s own `apply` from a blocking task. Each op is a cached
/// statement run in place, so a batch costs no hand-off to another thread. The connection is
/// opened at the first batch; a batch that cannot open it fails (503) and the next one tries
/// again.
pub(super) struct SqliteBatches {
    file: std::path::PathBuf,
    conn: Option<rusqlite::Connection>,
}

impl std::fmt::Debug for SqliteBatches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteBatches")
    }
}

impl SqliteBatches {
    /// A writer on `file`, with the pool's settings (`store::sqlite::own_connection`).
    fn new(file: std::path::PathBuf) -> Self {
        Self { file, conn: None }
    }

    fn try_apply(
        &mut self,
        stub: &str,
        ops: &[KvOp],
        max_total: usize,
    ) -> rusqlite::Result<Result<usize, Failure>> {
        use rusqlite::OptionalExtension as _;
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => self.conn.insert(crate::store::sqlite::own_connection(
                &self.file,
                crate::store::sqlite::BUSY_TIMEOUT,
            )?),
        };
        if ops.is_empty() {
            let total: Option<i64> = conn
                .prepare_cached("SELECT bytes FROM stub_kv_total WHERE stub = ?1")?
                .query_row([stub], |r| r.get(0))
                .optional()?;
            return Ok(Ok(as_size(total.unwrap_or(0))));
        }
        // `IMMEDIATE`: the write lock at once (a read first would have to upgrade its snapshot;
        // see `SQLITE_ADD_TO_TOTAL`). Dropped without a commit, it rolls back.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut change: i64 = 0;
        {
            let mut old = tx.prepare_cached(&format!(
                "SELECT {SQLITE_ROW_SIZE} FROM stub_kv WHERE stub = ?1 AND key = ?2"
            ))?;
            let mut put = tx.prepare_cached(
                "INSERT INTO stub_kv (stub, key, value) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (stub, key) DO UPDATE SET value = excluded.value",
            )?;
            let mut delete =
                tx.prepare_cached("DELETE FROM stub_kv WHERE stub = ?1 AND key = ?2")?;
            for op in last_per_key(ops) {
                let held: Option<i64> = old.query_row((stub, op.key()), |r| r.get(0)).optional()?;
                change -= held.unwrap_or(0);
                match op {
                    KvOp::Set { key, value } => {
                        put.execute((stub, key, value))?;
                        change += size_of(key, value);
                    }
                    KvOp::Delete { key } => {
                        if held.is_some() {
                            delete.execute((stub, key))?;
                        }
                    }
                }
            }
        }
        let total: i64 = tx
            .prepare_cached(
                "INSERT INTO stub_kv_total (stub, bytes) VALUES (?1, ?2) \
                 ON CONFLICT (stub) DO UPDATE SET bytes = stub_kv_total.bytes + excluded.bytes \
                 RETURNING bytes",
            )?
            .query_row((stub, change), |r| r.get(0))?;
        if let Err(f) = within_quota(as_size(total), max_total) {
            return Ok(Err(f));
        }
        tx.commit()?;
        Ok(Ok(as_size(total)))
    }
}

impl KvBatches for SqliteBatches {
    fn apply(&mut self, stub: &str, ops: &[KvOp], max_total: usize) -> Result<usize, Failure> {
        self.try_apply(stub, ops, max_total)
            .unwrap_or_else(|e| Err(failed(e)))
    }
}

/// The total of a quota check, as a size.
fn as_size(total: i64) -> usize {
    usize::try_from(total).unwrap_or(0)
}

/// The stubs' persisted key-value store.
#[derive(Debug, Clone)]
pub struct SqliteKv {
    pool: SqlitePool,
    /// The file behind `pool`, for [`SqliteBatches`].
    file: std::path::PathBuf,
    /// The batch writer of `apply`.
    batches: Arc<std::sync::Mutex<SqliteBatches>>,
}

impl SqliteKv {
    /// The store in the database behind `pool` (`stubs.db`, one connection).
    pub fn new(pool: SqlitePool) -> Self {
        let file = pool.connect_options().get_filename().to_path_buf();
        Self {
            pool,
            batches: Arc::new(std::sync::Mutex::new(SqliteBatches::new(file.clone()))),
            file,
        }
    }
}

/// What a store call answers when the database fails (logged): 503 when it is unavailable
/// (it may answer again: the host ends the instance that asked, and the next one asks again,
/// without counting it against an event), 500 for any other failure (an ordinary failure of
/// the call, counted as a trap).
fn failed(e: impl Into<StoreError>) -> Failure {
    let e = e.into();
    tracing::error!(error = %e, "stub key-value store");
    if e.is_unavailable() {
        Failure::new(503, "the key-value store is unavailable")
    } else {
        Failure::new(500, "the key-value store failed")
    }
}

/// A store task that did not finish (it panicked): a failure of the call.
fn task_failed(e: &tokio::task::JoinError) -> Failure {
    tracing::error!(error = %e, "stub key-value store task");
    Failure::new(500, "the key-value store failed")
}

impl KvStore for SqliteKv {
    fn get<'a>(
        &'a self,
        stub: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, Failure>> {
        Box::pin(async move {
            sqlx::query_scalar("SELECT value FROM stub_kv WHERE stub = ? AND key = ?")
                .bind(stub)
                .bind(key)
                .fetch_optional(&self.pool)
                .await
                .map_err(failed)
        })
    }

    fn set<'a>(
        &'a self,
        stub: &'a str,
        key: &'a str,
        value: Vec<u8>,
        max_total: usize,
    ) -> BoxFuture<'a, Result<(), Failure>> {
        Box::pin(async move {
            // The count first: a write (see `SQLITE_ADD_TO_TOTAL`).
            let mut tx = self.pool.begin().await.map_err(failed)?;
            let total: i64 = sqlx::query_scalar(SQLITE_ADD_TO_TOTAL)
                .bind(stub)
                .bind(size_of(key, &value))
                .bind(stub)
                .bind(key)
                .fetch_one(&mut *tx)
                .await
                .map_err(failed)?;
            // Over the quota: dropping the transaction rolls the count back.
            within_quota(usize::try_from(total).unwrap_or(usize::MAX), max_total)?;
            sqlx::query(
                "INSERT INTO stub_kv (stub, key, value) VALUES (?, ?, ?) \
                 ON CONFLICT (stub, key) DO UPDATE SET value = excluded.value",
            )
            .bind(stub)
            .bind(key)
            .bind(value)
            .execute(&mut *tx)
            .await
            .map_err(failed)?;
            tx.commit().await.map_err(failed)
        })
    }

    fn delete<'a>(&'a self, stub: &'a str, key: &'a str) -> BoxFuture<'a, Result<(), Failure>> {
        Box::pin(async move {
            let deleted = async {
                let mut tx = self.pool.begin().await?;
                sqlx::query(SQLITE_SUB_FROM_TOTAL)
                    .bind(stub)
                    .bind(key)
                    .bind(stub)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM stub_kv WHERE stub = ? AND key = ?")
                    .bind(stub)
                    .bind(key)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await
            };
            deleted.await.map_err(failed)
        })
    }

    fn keys<'a>(
        &'a self,
        stub: &'a str,
        prefix: &'a str,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<String>, Failure>> {
        Box::pin(async move {
            // Keys at or after the prefix, in byte order, while they start with it.
            let rows: Vec<String> = sqlx::query_scalar(
                "SELECT key FROM stub_kv WHERE stub = ? AND key >= ? ORDER BY key LIMIT ?",
            )
            .bind(stub)
            .bind(prefix)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(failed)?;
            Ok(rows
                .into_iter()
                .take_while(|k| k.starts_with(prefix))
                .collect())
        })
    }

    fn apply<'a>(
        &'a self,
        stub: &'a str,
        ops: &'a [KvOp],
        max_total: usize,
    ) -> BoxFuture<'a, Result<usize, Failure>> {
        let batches = Arc::clone(&self.batches);
        let (stub, ops) = (stub.to_owned(), ops.to_vec());
        Box::pin(async move {
            let applied = tokio::task::spawn_blocking(move || {
                let mut writer = batches.lock().unwrap_or_else(|p| p.into_inner());
                writer.apply(&stub, &ops, max_total)
            });
            applied.await.unwrap_or_else(|e| Err(task_failed(&e)))
        })
    }

    fn batches(&self) -> Option<Box<dyn KvBatches>> {
        Some(Box::new(SqliteBatches::new(self.file.clone())))
    }
}

/// The stubs' key-value store in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgKv {
    pool: PgPool,
}

impl PgKv {
    /// The store in the database behind `pool` (the bus's store's).
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

impl KvStore for PgKv {
    fn get<'a>(
        &'a self,
        stub: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, Failure>> {
        Box::pin(async move {
            sqlx::query_scalar("SELECT value FROM stub_kv WHERE stub = $1 AND key = $2")
                .bind(stub)
                .bind(key)
                .fetch_optional(&self.pool)
                .await
                .map_err(failed)
        })
    }

    fn set<'a>(
        &'a self,
        stub: &'a str,
        key: &'a str,
        value: Vec<u8>,
        max_total: usize,
    ) -> BoxFuture<'a, Result<(), Failure>> {
        Box::pin(async move {
            let mut tx = self.pool.begin().await.map_err(failed)?;
            // Two writes of one stub would both pass the quota check on what the other has not
            // committed yet: one stub's writes wait for each other (a lock held to the commit).
            sqlx::query(PG_LOCK_STUB)
                .bind(stub)
                .execute(&mut *tx)
                .await
                .map_err(failed)?;
            let total: i64 = sqlx::query_scalar(PG_ADD_TO_TOTAL)
                .bind(stub)
                .bind(size_of(key, &value))
                .bind(key)
                .fetch_one(&mut *tx)
                .await
                .map_err(failed)?;
            // Over the quota: dropping the transaction rolls the count back.
            within_quota(usize::try_from(total).unwrap_or(usize::MAX), max_total)?;
            sqlx::query(
                "INSERT INTO stub_kv (stub, key, value) VALUES ($1, $2, $3) \
                 ON CONFLICT (stub, key) DO UPDATE SET value = EXCLUDED.value",
            )
            .bind(stub)
            .bind(key)
            .bind(value)
            .execute(&mut *tx)
            .await
            .map_err(failed)?;
            tx.commit().await.map_err(failed)
        })
    }

    fn delete<'a>(&'a self, stub: &'a str, key: &'a str) -> BoxFuture<'a, Result<(), Failure>> {
        Box::pin(async move {
            let deleted = async {
                let mut tx = self.pool.begin().await?;
                sqlx::query(PG_LOCK_STUB)
                    .bind(stub)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(PG_SUB_FROM_TOTAL)
                    .bind(stub)
                    .bind(key)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM stub_kv WHERE stub = $1 AND key = $2")
                    .bind(stub)
                    .bind(key)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await
            };
            deleted.await.map_err(failed)
        })
    }

    fn keys<'a>(
        &'a self,
        stub: &'a str,
        prefix: &'a str,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<String>, Failure>> {
        Box::pin(async move {
            // The column compares in byte order (COLLATE "C"): the keys with the prefix are the
            // run that starts at the prefix.
            let rows: Vec<String> = sqlx::query_scalar(
                "SELECT key FROM stub_kv WHERE stub = $1 AND key >= $2 ORDER BY key LIMIT $3",
            )
            .bind(stub)
            .bind(prefix)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(failed)?;
            Ok(rows
                .into_iter()
                .take_while(|k| k.starts_with(prefix))
                .collect())
        })
    }

    fn apply<'a>(
        &'a self,
        stub: &'a str,
        ops: &'a [KvOp],
        max_total: usize,
    ) -> BoxFuture<'a, Result<usize, Failure>> {
        Box::pin(async move {
            pg_apply_batch(&self.pool, stub, ops, max_total)
                .await
                .unwrap_or_else(|e| Err(failed(e)))
        })
    }
}
