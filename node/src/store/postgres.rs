//! The PostgreSQL backend of the bus's store (`store.url = "postgres://..."`): sessions, their
//! addresses, subscriptions and outboxes, and the start counter, in the tables of
//! `pg_migrations/` (embedded at build time, applied by [`PgStore::open`]). The stubs' key-value
//! store (`stubhost::PgKv`) and every Matrix store (accounts, rooms and events, the stream, the
//! user data, the application services' queues, through [`Db`](super::db::Db);
//! `node/backends.rs`) share the pool.
//!
//! The batch of the group-commit writer is applied in one transaction with a few statements
//! whatever its size (`postgres/apply.rs`; a batch of one statement without `BEGIN`/`COMMIT`):
//! PostgreSQL is a network round trip away, so the cost of a batch is its number of statements,
//! not its number of rows.
//!
//! Two pools: the shared one ([`PgStore::pool`]: the stubs' key-value store, the Matrix stores,
//! the start-time load) and the bus's ([`PgStore::bus_pool`]: the group-commit writer and the
//! cluster's hot path, `cluster/`). The bus's connections run with
//! - `plan_cache_mode = force_generic_plan`: its statements are few, prepared once per
//!   connection and executed thousands of times a second with arrays of every size, and with
//!   custom plans PostgreSQL planned them again at every execution (measured: more CPU planning
//!   than executing them, BENCHMARKS.md "2026-12-03 (later)");
//! - `enable_seqscan = off`: every bus statement reads rows by key, and its queue tables
//!   (`outbox`, `cluster_inbox`) hold few live rows among many dead ones between two vacuums,
//!   so that the planner's estimates (from their size) chose sequential scans of the whole
//!   table for a few rows (measured: 1 ms and 8 ms statements), and a generic plan made while a
//!   table was empty would keep its sequential scan for the connection's life;
//! - `enable_bitmapscan = off`: a bitmap scan does not mark the index entries of dead rows as
//!   dead, so every read of a session's queue visited again the dead rows of everything
//!   drained from it before (the drain's read grew to 0.7 ms at 10,000 msg/s); a plain index
//!   scan marks them and skips them afterwards;
//! - `jit = off`: a plan left with a sequential scan (a table without a usable index, e.g.
//!   `cluster_nodes` by heartbeat) is costed above `jit_above_cost` by `enable_seqscan = off`,
//!   and its JIT compilation took 240 ms for two rows (measured).
//!
//! The statements are written for those plans: `= ANY($n)` on indexed columns, and rows of other
//! tables read by key in correlated subqueries or `LATERAL` rather than joins.
//!
//! Sequence numbers are `u64` in the interface and `BIGINT` in the database; they stay far below
//! 2^53.

mod apply;

use std::collections::HashMap;

use futures_util::future::BoxFuture;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::{PersistedSession, SessionKey, SessionStore, StoreError, StoreOp};

/// Connections to the database: the session writer's, the stubs' key-value store (a few
/// concurrent calls), the Matrix account store (logins, uncached token lookups), and the
/// start-time load.
const CONNECTIONS: u32 = 8;
/// Connections of the bus's pool: the session writer (one batch at a time), and with
/// clustering the forwarder and the drain (one statement at a time each), the address-book
/// lookups on a miss, the claims of new sessions and the heartbeat.
const BUS_CONNECTIONS: u32 = 6;
/// How long an operation waits for a free connection (or for a new one to be made) before it
/// fails: the writer then retries, the key-value store answers 503.
const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long a health check may take before the database counts as down.
const HEALTH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The PostgreSQL store. Cheap to clone (it wraps the connection pool).
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// The bus's pool, with generic plans (see the module documentation).
    bus: PgPool,
    /// One health check at a time (`/healthz` callers queue), so that they hold at most one
    /// connection of the pool.
    health: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// With clustering, this node's id: sessions it creates are written as held by it, and it
    /// loads at start only the sessions it holds (and those of no node, which it takes).
    node: Option<std::sync::Arc<str>>,
}

impl PgStore {
    /// Connects to the database and brings its schema up to date.
    pub async fn open(options: PgConnectOptions) -> Result<PgStore, StoreError> {
        let database = crate::config::describe_postgres(&options);
        let options = options.application_name("rethink-node");
        let pool = PgPoolOptions::new()
            .max_connections(CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await
            .map_err(|source| StoreError::Connect {
                database: database.clone(),
                source,
            })?;
        sqlx::migrate!("src/store/pg_migrations").run(&pool).await?;
        let bus = PgPoolOptions::new()
            .max_connections(BUS_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.options([
                ("plan_cache_mode", "force_generic_plan"),
                ("enable_seqscan", "off"),
                ("enable_bitmapscan", "off"),
                ("jit", "off"),
            ]))
            .await
            .map_err(|source| StoreError::Connect { database, source })?;
        Ok(PgStore {
            pool,
            bus,
            health: std::sync::Arc::default(),
            node: None,
        })
    }

    /// The same store for cluster node `node` (see the `node` field).
    pub fn for_node(mut self, node: &str) -> PgStore {
        self.node = Some(std::sync::Arc::from(node));
        self
    }

    /// Whether the database answers a query within `HEALTH_TIMEOUT` (for `/healthz`).
    pub async fn is_up(&self) -> bool {
        let _one_at_a_time = self.health.lock().await;
        let ping = sqlx::query("SELECT 1").execute(&self.pool);
        match tokio::time::timeout(HEALTH_TIMEOUT, ping).await {
            Ok(Ok(_)) => true,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "health check: the database is down");
                false
            }
            Err(_) => {
                tracing::warn!("health check: the database did not answer in time");
                false
            }
        }
    }

    /// The connection pool, for the stubs' key-value store.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The bus's pool (generic plans): the session writer's and the cluster's.
    pub fn bus_pool(&self) -> &PgPool {
        &self.bus
    }

    /// Closes every connection, waiting for those in use to be returned.
    pub async fn close(&self) {
        self.bus.close().await;
        self.pool.close().await;
    }

    async fn next_epoch_inner(&self) -> Result<u64, StoreError> {
        let epoch: i64 = sqlx::query_scalar(
            "INSERT INTO node_meta (key, value) VALUES ('epoch', 1) \
             ON CONFLICT (key) DO UPDATE SET value = COALESCE(node_meta.value, 0) + 1 \
             RETURNING value",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(from_db(epoch))
    }

    async fn load_sessions_inner(&self) -> Result<Vec<PersistedSession>, StoreError> {
        // One snapshot of the four tables.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .execute(&mut *tx)
            .await?;
        let node = self.node.as_deref();
        if node.is_some() {
            // Sessions of a node run without clustering become this node's.
            sqlx::query("UPDATE sessions SET node = $1 WHERE node IS NULL")
                .bind(node)
                .execute(&mut *tx)
                .await?;
        }

        let rows: Vec<(String, String, Vec<u8>, String, i64, i64)> = sqlx::query_as(
            "SELECT id, runtime_url, token_hash, identity_json, acked_seq, cseq \
             FROM sessions WHERE $1::text IS NULL OR node = $1 OR node IS NULL ORDER BY id",
        )
        .bind(node)
        .fetch_all(&mut *tx)
        .await?;
        let mut sessions = Vec::with_capacity(rows.len());
        let mut index: HashMap<String, usize> = HashMap::with_capacity(rows.len());
        for (id, runtime_url, token_hash, identity_json, acked_seq, cseq) in rows {
            let token_hash =
                <[u8; 32]>::try_from(token_hash.as_slice()).map_err(|_| StoreError::Corrupt {
                    what: "session",
                    id: id.clone(),
                    source: "token_hash is not 32 bytes".into(),
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
            "SELECT session, address FROM session_subscriptions ORDER BY session, ord",
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
        if apply::statements(batch) <= 1 {
            // One statement is a transaction of its own: no `BEGIN` and `COMMIT` round trips.
            let mut conn = self.bus.acquire().await?;
            apply::apply(&mut conn, batch, self.node.as_deref()).await?;
            return Ok(());
        }
        let mut tx = self.bus.begin().await?;
        apply::apply(&mut tx, batch, self.node.as_deref()).await?;
        tx.commit().await?;
        Ok(())
    }
}

impl SessionStore for PgStore {
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

/// A sequence number or counter as stored (saturating; real values stay below 2^53).
pub fn to_db(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A stored sequence number or counter (negative values cannot be written; read them as 0).
pub fn from_db(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}
