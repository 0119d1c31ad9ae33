//! The embedded default backend: SQLite through `sqlx`, and, for the bus's hot path
//! (`HotPath`) and the stubs' key-value batches (`stubhost::kv::SqliteBatches`), connections
//! of our own through rusqlite (the same SQLite library), committed on the thread that has the
//! batch.
//!
//! Four database files in the data directory, each in WAL mode with `synchronous = NORMAL` (a
//! commit survives a killed process):
//!
//! - `bus.db`: sessions, their addresses, subscriptions and outboxes (the bus's group-commit
//!   [`writer`](super::writer)), and the start counter;
//! - `rethink.db`: everything Matrix (accounts, rooms, events, stream positions, user data), written
//!   by the Matrix stream writer;
//! - `appservice.db`: the application services' transaction queues
//!   ([`appservice`](super::appservice), which also moves them out of an older `rethink.db`);
//! - `stubs.db`: the stubs' key-value store ([`SqliteStore::kv_pool`]; moved out of an older
//!   `bus.db` by `moves.rs`).
//!
//! SQLite has one write lock per database file, and a writer that finds it taken sleeps in its
//! busy handler (1, 2, 5, 10 ... 100 ms steps). With both writers on one file, a bus carrying tens
//! of thousands of messages per second held the lock for most of each second, and Matrix sends
//! waited for it: p99 of seconds (issue 10, defect 10). Two files, two locks: neither path waits
//! for the other. Each file's schema lives in its own migrations directory (`migrations/`,
//! `bus_migrations/`), embedded at build time and applied by [`SqliteStore::open`]. Nodes before
//! the split kept the session tables in `rethink.db`; `open` moves them to `bus.db` once.
//!
//! Checkpoints (copying the WAL back into the database file, with its fsync) are not left to
//! SQLite's automatic checkpoint, which runs inside the commit that crosses the threshold and
//! stalled that commit (and every request waiting for it) for milliseconds: automatic
//! checkpoints are off and [`SqliteStore::checkpoints`] runs a passive one beside the writers,
//! ten times a second on the message paths' files (`bus.db`, `stubs.db`: a larger checkpoint
//! stalled the commits it overlapped), every second on the others.
//!
//! Pools: the bus pool (`bus.db`: the session writer and the start-time load), the shared
//! Matrix pool (`rethink.db` readers and checkpoints; small page caches, since SQLite drops a
//! connection's cache whenever another one committed) and the Matrix stream writer's own single
//! connection, whose cache stays valid across its commits; and for `appservice.db` one
//! connection for the queues and one for its checkpoints.
//!
//! Sequence numbers are `u64` in the interface and `INTEGER` (i64) in the database; they stay
//! far below 2^53.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Sqlite};

use super::{PersistedSession, SessionKey, SessionStore, StoreError, StoreOp};
use moves::{BUS_TABLES, KV_TABLES};
pub(super) use moves::{TableMove, move_tables};

/// Name of the Matrix database file inside the data directory.
const DB_FILE: &str = "rethink.db";
/// Name of the bus's database file (sessions and outboxes) inside the data directory.
const BUS_DB_FILE: &str = "bus.db";
/// Name of the application services' queue file inside the data directory.
const AS_DB_FILE: &str = "appservice.db";
/// Name of the stubs' key-value file inside the data directory.
const KV_DB_FILE: &str = "stubs.db";
/// Connections in the shared Matrix pool (readers, checkpoints), besides the Matrix stream
/// writer's own.
const MAX_CONNECTIONS: u32 = 3;
/// Connections to `bus.db`: the session writer's, and one for loads and checkpoints.
const BUS_CONNECTIONS: u32 = 2;
/// How long a statement waits for a lock held by another connection.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Page cache of the Matrix stream writer's connection: 1 MiB (SQLite's default is 2 MiB). It is
/// the only connection whose cache survives the commits (see [`SqliteStore::stream_pool`]).
const STREAM_CACHE_KIB: &str = "-1024";
/// Page cache of each shared connection: 256 KiB. SQLite drops it whenever another connection
/// committed, which under Matrix load is every few milliseconds, and hot Matrix reads are served
/// from the room caches, so a larger one would only hold memory.
const CACHE_KIB: &str = "-256";
/// How often the WAL of `bus.db` and `stubs.db` is checkpointed. Every second, a checkpoint
/// of the bus's WAL at 5,000 cross-domain messages a second took 13-30 ms, and the commits it
/// overlapped took 4-15 ms instead of tens of µs (p99.9 of the messages 11-24 ms); ten times a
/// second each is small (BENCHMARKS.md, 2026-12-03 late night).
const HOT_CHECKPOINT_EVERY: Duration = Duration::from_millis(100);
/// How often the other files' WAL is checkpointed (`rethink.db`, `appservice.db`: checkpointed
/// ten times a second, the Matrix sends lost 6% of their peak).
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// Rows per multi-row outbox `INSERT` (3 parameters each).
const ENQUEUE_CHUNK: usize = 64;
/// Sessions per multi-row ack statement (2 parameters each).
const ACK_CHUNK: usize = 128;

/// Raises the acknowledged seq of the sessions listed by `VALUES (session, seq), ...`.
const ACK_UPDATE_HEAD: &str = "UPDATE sessions SET acked_seq = max(acked_seq, v.column2) FROM (";
const ACK_UPDATE_TAIL: &str = ") AS v WHERE sessions.id = v.column1";
/// Deletes the outbox entries up to each listed session's seq (a range of the primary key).
const ACK_DELETE_HEAD: &str = "DELETE FROM outbox WHERE (session, seq) IN \
     (SELECT o.session, o.seq FROM (";
const ACK_DELETE_TAIL: &str =
    ") AS v JOIN outbox AS o ON o.session = v.column1 AND o.seq <= v.column2)";

/// Inserts a run of outbox entries, skipping those of sessions that do not exist (deleted) or
/// that are already acknowledged. Completed with `VALUES (...), ...` and [`ENQUEUE_TAIL`].
const ENQUEUE_HEAD: &str = "INSERT OR REPLACE INTO outbox (session, seq, json) \
     SELECT v.column1, v.column2, v.column3 FROM (";
const ENQUEUE_TAIL: &str = ") AS v JOIN sessions AS s ON s.id = v.column1 \
     WHERE v.column2 > s.acked_seq";

/// The SQLite store. Cheap to clone (it wraps the connection pools).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// `bus.db`: sessions and outboxes.
    bus_pool: SqlitePool,
    /// `rethink.db`: the Matrix data, shared by its readers.
    pool: SqlitePool,
    /// One connection, for the Matrix stream writer alone (see [`SqliteStore::stream_pool`]).
    stream_pool: SqlitePool,
    /// `appservice.db`: the queues (see [`SqliteStore::appservice_pool`]).
    appservice_pool: SqlitePool,
    /// `appservice.db` again, for its checkpoints only.
    appservice_checkpoints: SqlitePool,
    /// `stubs.db`: the stubs' key-value store (see [`SqliteStore::kv_pool`]).
    kv_pool: SqlitePool,
    /// `stubs.db` again, for its checkpoints only.
    kv_checkpoints: SqlitePool,
    /// The session writer's own connection to `bus.db` for the hot path (see
    /// [`HotPath`]), opened at its first batch.
    hot: Arc<std::sync::Mutex<HotPath>>,
}

/// The hot path's writes to `bus.db` (`Enqueue`, `Ack`, `Handled`), committed on a connection
/// of their own (rusqlite, on the SQLite library sqlx links), one cached statement per op. A
/// batch of up to [`IN_PLACE`] ops is committed in place by the session writer's task: no
/// hand-off to sqlx's worker thread and back (a thread wake-up each way, about 150 µs a trip on
/// a loaded 2-vCPU machine, BENCHMARKS.md); such a commit takes tens of µs: checkpoints run
/// elsewhere ([`SqliteStore::checkpoints`]), and the write lock is the writer's alone (its other
/// batches are its own, in turn), so it waits for nothing but the disk; the busy timeout is
/// short all the same ([`HOT_BUSY_TIMEOUT`]: a failed commit is retried by the writer). A
/// larger batch (a busy node) goes to a blocking task, so as not to hold the worker thread.
#[derive(Debug)]
struct HotPath {
    file: std::path::PathBuf,
    conn: Option<rusqlite::Connection>,
}

/// How long the hot path's commit waits for the write lock of `bus.db`.
const HOT_BUSY_TIMEOUT: Duration = Duration::from_millis(100);

/// A rusqlite connection of our own to `file` (which sqlx created and migrated), with the
/// pools' settings: `busy` as the busy timeout, `synchronous = NORMAL`, no automatic
/// checkpoints ([`SqliteStore::checkpoints`] runs them), foreign keys on.
pub(crate) fn own_connection(
    file: &Path,
    busy: Duration,
) -> rusqlite::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open_with_flags(
        file,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(busy)?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    conn.pragma_update(None, "foreign_keys", true)?;
    Ok(conn)
}

/// The options of every pool of the store. No test before each acquire: a connection to a
/// local file does not go stale, and the test is a round trip to the connection's worker thread
/// (one more per transaction, on the hot paths of the bus and of the stubs' store).
fn pool_options() -> SqlitePoolOptions {
    SqlitePoolOptions::new().test_before_acquire(false)
}

impl SqliteStore {
    /// Opens (creating if needed) `<data_dir>/rethink.db` and `<data_dir>/bus.db`, brings their
    /// schemas up to date, and moves session tables left in `rethink.db` by an older node.
    pub async fn open(data_dir: &Path) -> Result<SqliteStore, StoreError> {
        tokio::fs::create_dir_all(data_dir)
            .await
            .map_err(|source| StoreError::DataDir {
                path: data_dir.display().to_string(),
                source,
            })?;
        let options = SqliteConnectOptions::new()
            .filename(data_dir.join(DB_FILE))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .pragma("wal_autocheckpoint", "0")
            .pragma("cache_size", CACHE_KIB)
            .foreign_keys(true);
        let pool = pool_options()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("src/store/migrations").run(&pool).await?;
        let bus_pool = pool_options()
            .max_connections(BUS_CONNECTIONS)
            .connect_with(options.clone().filename(data_dir.join(BUS_DB_FILE)))
            .await?;
        sqlx::migrate!("src/store/bus_migrations")
            .run(&bus_pool)
            .await?;
        move_tables(&pool, &bus_pool, &data_dir.join(DB_FILE), &BUS_TABLES).await?;
        let kv_options = options.clone().filename(data_dir.join(KV_DB_FILE));
        let kv_pool = pool_options()
            .max_connections(1)
            .connect_with(kv_options.clone())
            .await?;
        sqlx::migrate!("src/store/kv_migrations")
            .run(&kv_pool)
            .await?;
        move_tables(&bus_pool, &kv_pool, &data_dir.join(BUS_DB_FILE), &KV_TABLES).await?;
        let kv_checkpoints = pool_options()
            .max_connections(1)
            .connect_with(kv_options)
            .await?;
        let as_options = options.clone().filename(data_dir.join(AS_DB_FILE));
        let appservice_pool = pool_options()
            .max_connections(1)
            .connect_with(as_options.clone())
            .await?;
        sqlx::migrate!("src/store/appservice_migrations")
            .run(&appservice_pool)
            .await?;
        move_tables(
            &pool,
            &appservice_pool,
            &data_dir.join(DB_FILE),
            &super::appservice::MOVE,
        )
        .await?;
        let appservice_checkpoints = pool_options()
            .max_connections(1)
            .connect_with(as_options)
            .await?;
        let stream_pool = pool_options()
            .max_connections(1)
            .connect_with(options.pragma("cache_size", STREAM_CACHE_KIB))
            .await?;
        tracing::debug!(dir = %data_dir.display(), "sqlite store opened");
        Ok(SqliteStore {
            hot: Arc::new(std::sync::Mutex::new(HotPath {
                file: data_dir.join(BUS_DB_FILE),
                conn: None,
            })),
            bus_pool,
            pool,
            stream_pool,
            appservice_pool,
            appservice_checkpoints,
            kv_pool,
            kv_checkpoints,
        })
    }

    /// Runs a passive WAL checkpoint of `bus.db` and `stubs.db` every `HOT_CHECKPOINT_EVERY`,
    /// of the other files every `CHECKPOINT_EVERY`, until `shutdown`.
    pub async fn checkpoints(
        self: std::sync::Arc<Self>,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let mut tick = tokio::time::interval(HOT_CHECKPOINT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_cold = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => break,
            }
            let mut files = vec![
                (BUS_DB_FILE, &self.bus_pool),
                (KV_DB_FILE, &self.kv_checkpoints),
            ];
            if last_cold.elapsed() >= CHECKPOINT_EVERY {
                last_cold = tokio::time::Instant::now();
                files.push((DB_FILE, &self.pool));
                files.push((AS_DB_FILE, &self.appservice_checkpoints));
            }
            for (file, pool) in files {
                if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                    .execute(pool)
                    .await
                {
                    tracing::warn!(error = %e, file, "WAL checkpoint failed");
                }
            }
        }
    }

    /// The bus database's pool (`bus.db`).
    pub fn bus_pool(&self) -> &SqlitePool {
        &self.bus_pool
    }

    /// The stubs' key-value file (`stubs.db`), one connection. In `bus.db` their writes (the
    /// write-behind commits of another domain's stub, issue 13) took the file's write lock
    /// between the bus writer's commits and, finding it held, slept in SQLite's busy handler
    /// (1, 2, 5, 10 ... ms steps): hundreds of times a second on a node at a few thousand
    /// cross-domain messages per second, the tail of their latency. A file of their own, one
    /// connection: the stubs' writes wait for each other in the pool, never in the busy handler.
    pub fn kv_pool(&self) -> &SqlitePool {
        &self.kv_pool
    }

    /// The Matrix database's shared connection pool, for the stores of the Matrix concerns.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The Matrix stream writer's own connection (a pool of one). SQLite drops a connection's
    /// page cache whenever another connection has written since its last transaction; a writer
    /// that took any connection of the shared pool re-read, at nearly every commit, the pages
    /// its inserts touch (a dozen `pread`s per event in the Matrix bench). Its own connection
    /// keeps them cached.
    pub fn stream_pool(&self) -> &SqlitePool {
        &self.stream_pool
    }

    /// The application services' queue file (`appservice.db`), one connection: the services'
    /// queue writes wait for each other in the pool, never in SQLite's busy handler, and never
    /// for `rethink.db`'s write lock.
    pub fn appservice_pool(&self) -> &SqlitePool {
        &self.appservice_pool
    }

    /// Closes every connection of the pools, waiting for those in use to be returned.
    pub async fn close(&self) {
        self.appservice_pool.close().await;
        self.appservice_checkpoints.close().await;
        self.kv_pool.close().await;
        self.kv_checkpoints.close().await;
        self.stream_pool.close().await;
        self.pool.close().await;
        self.bus_pool.close().await;
    }

    async fn next_epoch_inner(&self) -> Result<u64, StoreError> {
        let mut tx = self.bus_pool.begin().await?;
        let epoch: i64 = sqlx::query_scalar(
            "INSERT INTO node_meta (key, value) VALUES ('epoch', 1) \
             ON CONFLICT (key) DO UPDATE SET value = COALESCE(value, 0) + 1 \
             RETURNING value",
        )
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(from_db(epoch))
    }

    async fn load_sessions_inner(&self) -> Result<Vec<PersistedSession>, StoreError> {
        // One read transaction: a consistent snapshot of the four tables.
        let mut tx = self.bus_pool.begin().await?;

        let rows: Vec<(String, String, Vec<u8>, String, i64, i64)> = sqlx::query_as(
            "SELECT id, runtime_url, token_hash, identity_json, acked_seq, cseq \
             FROM sessions ORDER BY id",
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut sessions = Vec::with_capacity(rows.len());
        let mut index: HashMap<String, usize> = HashMap::with_capacity(rows.len());
        for (id, runtime_url, token_hash, identity_json, acked_seq, cseq) in rows {
            let token_hash = <[u8; 32]>::try_from(token_hash.as_slice()).map_err(|_| {
                sqlx::Error::Decode(format!("session {id}: token_hash is not 32 bytes").into())
            })?;
            index.insert(id.clone(), sessions.len());
            sessions.push(PersistedSession {
                id: SessionKey::from(id),
                runtime_url,
                token_hash,
                identity_json,
                acked_seq: from_db(acked_seq),
                cseq: from_db(cseq),
                addresses: Vec::new(),
                allocation_keys: HashMap::new(),
                subscriptions: Vec::new(),
                outbox: Vec::new(),
            });
        }

        let addresses: Vec<(String, String, Option<String>)> = sqlx::query_as(
            "SELECT session, address, alloc_key FROM session_addresses ORDER BY session, ord",
        )
        .fetch_all(&mut *tx)
        .await?;
        for (session, address, key) in addresses {
            if let Some(&i) = index.get(&session) {
                if let Some(key) = key {
                    sessions[i].allocation_keys.insert(address.clone(), key);
                }
                sessions[i].addresses.push(address);
            }
        }

        let subscriptions: Vec<(String, String)> = sqlx::query_as(
            "SELECT session, address FROM session_subscriptions ORDER BY session, rowid",
        )
        .fetch_all(&mut *tx)
        .await?;
        for (session, address) in subscriptions {
            if let Some(&i) = index.get(&session) {
                sessions[i].subscriptions.push(address);
            }
        }

        let outbox: Vec<(String, i64, String)> = sqlx::query_as(
            "SELECT o.session, o.seq, o.json FROM outbox AS o \
             JOIN sessions AS s ON s.id = o.session \
             WHERE o.seq > s.acked_seq ORDER BY o.session, o.seq",
        )
        .fetch_all(&mut *tx)
        .await?;
        for (session, seq, json) in outbox {
            if let Some(&i) = index.get(&session) {
                sessions[i].outbox.push((from_db(seq), json));
            }
        }

        tx.commit().await?;
        Ok(sessions)
    }

    async fn apply_inner(&self, batch: &[StoreOp]) -> Result<(), StoreError> {
        if batch.iter().all(is_flow) {
            if batch.len() <= IN_PLACE {
                return hot_path(&self.hot, &HotOps::of(batch));
            }
            // A large batch (a busy node): its commit would hold the task's worker thread
            // too long; a blocking task of its own.
            let (hot, ops) = (Arc::clone(&self.hot), HotOps::of(batch));
            return tokio::task::spawn_blocking(move || hot_path(&hot, &ops))
                .await
                .unwrap_or(Err(StoreError::WriterStopped));
        }
        let mut tx = self.bus_pool.begin().await?;
        // Runs of consecutive Enqueue, Ack and Handled ops become one multi-statement query
        // (`flow`); everything else one by one. Each query is a trip to the connection's
        // worker thread and back: one per op cost ~100 µs per op on a loaded node.
        for run in batch.chunk_by(|a, b| is_flow(a) && is_flow(b)) {
            if run.first().is_some_and(is_flow) {
                flow(&mut tx, run).await?;
            } else {
                for op in run {
                    apply_op(&mut tx, op).await?;
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }
}

impl SessionStore for SqliteStore {
    fn next_epoch(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.next_epoch_inner())
    }

    fn load_sessions(&self) -> BoxFuture<'_, Result<Vec<PersistedSession>, StoreError>> {
        Box::pin(self.load_sessions_inner())
    }

    fn apply<'a>(&'a self, batch: &'a [StoreOp]) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.apply_inner(batch))
    }
}

/// Hot-path batches of at most this many ops are committed on the writer task's own thread.
const IN_PLACE: usize = 32;

/// What a hot-path batch writes, owned (for a blocking task): each session's highest ack, the
/// entries, each session's highest handled `cseq`.
struct HotOps {
    acks: Vec<(Arc<str>, i64)>,
    entries: Vec<(Arc<str>, i64, Arc<str>)>,
    handled: Vec<(Arc<str>, i64)>,
}

impl HotOps {
    fn of(ops: &[StoreOp]) -> Self {
        let owned = |v: Vec<(&SessionKey, i64)>| -> Vec<(Arc<str>, i64)> {
            v.into_iter().map(|(s, n)| (Arc::clone(s), n)).collect()
        };
        HotOps {
            acks: owned(highest_per_session(ops.iter().filter_map(|op| match op {
                StoreOp::Ack { session, seq } => Some((session, to_db(*seq))),
                _ => None,
            }))),
            entries: ops
                .iter()
                .filter_map(|op| match op {
                    StoreOp::Enqueue {
                        session, seq, json, ..
                    } => Some((Arc::clone(session), to_db(*seq), Arc::clone(json))),
                    _ => None,
                })
                .collect(),
            handled: owned(highest_per_session(ops.iter().filter_map(|op| match op {
                StoreOp::Handled { session, cseq } => Some((session, to_db(*cseq))),
                _ => None,
            }))),
        }
    }
}

/// Commits a batch of `Enqueue`, `Ack` and `Handled` ops on the hot path's connection (see
/// [`HotPath`]), with the effect of [`flow`]: each session's highest ack (its `acked_seq`
/// raised, its entries up to it deleted), then the entries above their session's acknowledged
/// seq (of sessions that exist), then each session's highest handled `cseq`.
fn hot_path(hot: &std::sync::Mutex<HotPath>, ops: &HotOps) -> Result<(), StoreError> {
    let mut hot = hot.lock().unwrap_or_else(|p| p.into_inner());
    let HotPath { file, conn } = &mut *hot;
    let conn = match conn {
        Some(conn) => conn,
        None => conn.insert(own_connection(file, HOT_BUSY_TIMEOUT)?),
    };
    // Dropped without a commit (an error), the transaction rolls back.
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    {
        if !ops.acks.is_empty() {
            let mut raise = tx.prepare_cached(
                "UPDATE sessions SET acked_seq = max(acked_seq, ?2) WHERE id = ?1",
            )?;
            let mut delete =
                tx.prepare_cached("DELETE FROM outbox WHERE session = ?1 AND seq <= ?2")?;
            for (session, seq) in &ops.acks {
                raise.execute((&**session, seq))?;
                delete.execute((&**session, seq))?;
            }
        }
        if !ops.entries.is_empty() {
            let mut enqueue = tx.prepare_cached(
                "INSERT OR REPLACE INTO outbox (session, seq, json) \
                 SELECT id, ?2, ?3 FROM sessions WHERE id = ?1 AND acked_seq < ?2",
            )?;
            for (session, seq, json) in &ops.entries {
                enqueue.execute((&**session, seq, &**json))?;
            }
        }
        if !ops.handled.is_empty() {
            let mut record =
                tx.prepare_cached("UPDATE sessions SET cseq = max(cseq, ?2) WHERE id = ?1")?;
            for (session, cseq) in &ops.handled {
                record.execute((&**session, cseq))?;
            }
        }
    }
    tx.commit()?;
    Ok(())
}

/// An op of the bus's hot path: `Enqueue`, `Ack` or `Handled` (see [`flow`]).
fn is_flow(op: &StoreOp) -> bool {
    matches!(
        op,
        StoreOp::Enqueue { .. } | StoreOp::Ack { .. } | StoreOp::Handled { .. }
    )
}

/// A sequence number or counter as stored (saturating; real values stay below 2^53).
fn to_db(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A stored sequence number or counter (negative values cannot be written; read them as 0).
fn from_db(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// Applies a run of `Enqueue`, `Ack` and `Handled` ops as one multi-statement query, one
/// trip to the connection's worker thread (sqlx runs a query's statements in one go, binding
/// the `?`s in order): each session's highest ack (its `acked_seq`, and its entries up to it
/// deleted), the entries above the sessions' acknowledged seq ([`ENQUEUE_TAIL`]), each
/// session's highest handled `cseq`. That gives what applying them one by one gives: an entry
/// survives when its seq is above the session's final acknowledged seq, whatever the order of
/// the entry and the ack in the run, and `Handled` touches nothing else. (A batch of these ops
/// only is committed by [`SqliteStore::hot_path`]; this serves the runs in a mixed batch.)
async fn flow(conn: &mut SqliteConnection, ops: &[StoreOp]) -> Result<(), StoreError> {
    let mut query = QueryBuilder::<Sqlite>::new("");
    let mut statements = 0;
    let mut next = |query: &mut QueryBuilder<Sqlite>, head: &str| {
        if statements > 0 {
            query.push("; ");
        }
        statements += 1;
        query.push(head);
    };
    let acks = highest_per_session(ops.iter().filter_map(|op| match op {
        StoreOp::Ack { session, seq } => Some((&**session, to_db(*seq))),
        _ => None,
    }));
    for chunk in acks.chunks(ACK_CHUNK) {
        for (head, tail) in [
            (ACK_UPDATE_HEAD, ACK_UPDATE_TAIL),
            (ACK_DELETE_HEAD, ACK_DELETE_TAIL),
        ] {
            next(&mut query, head);
            query.push_values(chunk, |mut row, (session, seq)| {
                row.push_bind(*session).push_bind(*seq);
            });
            query.push(tail);
        }
    }
    let entries: Vec<(&str, i64, &str)> = ops
        .iter()
        .filter_map(|op| match op {
            StoreOp::Enqueue {
                session, seq, json, ..
            } => Some((&**session, to_db(*seq), &**json)),
            _ => None,
        })
        .collect();
    for chunk in entries.chunks(ENQUEUE_CHUNK) {
        next(&mut query, ENQUEUE_HEAD);
        query.push_values(chunk, |mut row, (session, seq, json)| {
            row.push_bind(*session).push_bind(*seq).push_bind(*json);
        });
        query.push(ENQUEUE_TAIL);
    }
    let handled = highest_per_session(ops.iter().filter_map(|op| match op {
        StoreOp::Handled { session, cseq } => Some((&**session, to_db(*cseq))),
        _ => None,
    }));
    for (session, cseq) in handled {
        next(&mut query, "UPDATE sessions SET cseq = max(cseq, ");
        query.push_bind(cseq);
        query.push(") WHERE id = ");
        query.push_bind(session);
    }
    if statements > 0 {
        query.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// The highest value of each session among `items`, in the order of their first appearance.
fn highest_per_session<K: Copy + Eq + std::hash::Hash>(
    items: impl Iterator<Item = (K, i64)>,
) -> Vec<(K, i64)> {
    let mut out: Vec<(K, i64)> = Vec::new();
    let mut at: HashMap<K, usize> = HashMap::new();
    for (session, value) in items {
        match at.get(&session) {
            Some(&i) => out[i].1 = out[i].1.max(value),
            None => {
                at.insert(session, out.len());
                out.push((session, value));
            }
        }
    }
    out
}

/// Applies one op other than a run of `Enqueue`s. Ops on a session that does not exist affect
/// nothing.
async fn apply_op(conn: &mut SqliteConnection, op: &StoreOp) -> Result<(), StoreError> {
    match op {
        StoreOp::CreateSession {
            id,
            runtime_url,
            token_hash,
            identity_json,
        } => {
            sqlx::query(
                "INSERT INTO sessions (id, runtime_url, token_hash, identity_json) \
                 VALUES (?, ?, ?, ?) \
                 ON CONFLICT (id) DO UPDATE SET runtime_url = excluded.runtime_url, \
                 token_hash = excluded.token_hash, identity_json = excluded.identity_json",
            )
            .bind(&**id)
            .bind(runtime_url.as_str())
            .bind(&token_hash[..])
            .bind(identity_json.as_str())
            .execute(&mut *conn)
            .await?;
        }
        StoreOp::DeleteSession { id } => {
            for sql in [
                "DELETE FROM outbox WHERE session = ?",
                "DELETE FROM session_addresses WHERE session = ?",
                "DELETE FROM session_subscriptions WHERE session = ?",
                "DELETE FROM sessions WHERE id = ?",
            ] {
                sqlx::query(sql).bind(&**id).execute(&mut *conn).await?;
            }
        }
        StoreOp::Enqueue { .. } | StoreOp::Ack { .. } | StoreOp::Handled { .. } => {
            flow(conn, std::slice::from_ref(op)).await?;
        }
        StoreOp::AddAddresses {
            session,
            addresses,
            key,
        } => {
            for address in addresses {
                sqlx::query(
                    "INSERT OR IGNORE INTO session_addresses (session, address, ord, alloc_key) \
                     SELECT ?1, ?2, \
                     COALESCE((SELECT MAX(ord) FROM session_addresses WHERE session = ?1), -1) + 1, \
                     ?3 WHERE EXISTS (SELECT 1 FROM sessions WHERE id = ?1)",
                )
                .bind(&**session)
                .bind(address.as_str())
                .bind(key.as_deref())
                .execute(&mut *conn)
                .await?;
            }
        }
        StoreOp::RemoveAddresses { session, addresses } => {
            for address in addresses {
                sqlx::query("DELETE FROM session_addresses WHERE session = ? AND address = ?")
                    .bind(&**session)
                    .bind(address.as_str())
                    .execute(&mut *conn)
                    .await?;
            }
        }
        StoreOp::AddSubscriptions { session, addresses } => {
            for address in addresses {
                sqlx::query(
                    "INSERT OR IGNORE INTO session_subscriptions (session, address) \
                     SELECT ?1, ?2 WHERE EXISTS (SELECT 1 FROM sessions WHERE id = ?1)",
                )
                .bind(&**session)
                .bind(address.as_str())
                .execute(&mut *conn)
                .await?;
            }
        }
        StoreOp::RemoveSubscriptions { session, addresses } => {
            for address in addresses {
                sqlx::query("DELETE FROM session_subscriptions WHERE session = ? AND address = ?")
                    .bind(&**session)
                    .bind(address.as_str())
                    .execute(&mut *conn)
                    .await?;
            }
        }
        StoreOp::Group(ops) => {
            for op in ops {
                Box::pin(apply_op(conn, op)).await?;
            }
        }
        // The writer answers barriers itself; nothing to write.
        StoreOp::Flush { .. } => {}
    }
    Ok(())
}

mod moves;
#[cfg(test)]
mod tests;
