//! Tests of the bus's store, the stubs' key-value store and the Matrix stores ported to
//! [`Db`](super::db::Db) (`accounts`), one test body for both backends:
//! each test below runs on SQLite (a fresh data directory) and on PostgreSQL (a fresh database
//! on the server named by `PG_TEST_URL`, which `scripts/test` starts), so the two cannot drift.
//! The PostgreSQL tests fail, naming the variable, when it is not set. [`Place`], [`Opened`] and
//! [`on_both_backends!`] serve the two-backend tests of other modules too (`userdata`).

use std::sync::Arc;

use rethink_stubs::KvStore;
use sqlx::postgres::PgConnectOptions;
use tempfile::TempDir;

use super::postgres::PgStore;
use super::sqlite::SqliteStore;
use super::*;
use crate::stubhost::{PgKv, SqliteKv};

mod accounts;
mod cases;

/// The variable naming the test PostgreSQL server (an admin connection URL).
const PG_TEST_URL: &str = "PG_TEST_URL";

/// Where one test's data lives: a fresh directory or a fresh database, opened as often as the
/// test wants (a reopen sees what an earlier opening committed).
pub(crate) enum Place {
    Sqlite(TempDir),
    Postgres(Box<PgConnectOptions>),
}

/// An opened store of either backend.
pub(crate) enum Opened {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

impl Place {
    pub(crate) fn sqlite() -> anyhow::Result<Place> {
        Ok(Place::Sqlite(TempDir::new()?))
    }

    /// A database of its own on the test server, so that tests run in parallel.
    pub(crate) async fn postgres() -> anyhow::Result<Place> {
        let Some(url) = std::env::var(PG_TEST_URL).ok().filter(|u| !u.is_empty()) else {
            panic!(
                "{PG_TEST_URL} is not set: the PostgreSQL store tests need a server \
                 (scripts/test starts one; or scripts/pg-test-server start DIR and export \
                 {PG_TEST_URL}=$(cat DIR/url))"
            );
        };
        let admin: PgConnectOptions = url.parse()?;
        let name = format!("rethink_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect_with(&admin).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await?;
        sqlx::Connection::close(conn).await?;
        Ok(Place::Postgres(Box::new(admin.database(&name))))
    }

    pub(crate) async fn open(&self) -> anyhow::Result<Opened> {
        Ok(match self {
            Place::Sqlite(dir) => Opened::Sqlite(SqliteStore::open(dir.path()).await?),
            Place::Postgres(options) => Opened::Postgres(PgStore::open((**options).clone()).await?),
        })
    }
}

impl Opened {
    fn sessions(&self) -> &dyn SessionStore {
        match self {
            Opened::Sqlite(s) => s,
            Opened::Postgres(s) => s,
        }
    }

    /// The database of the Matrix stores: `rethink.db`, or the PostgreSQL database.
    pub(crate) fn matrix_db(&self) -> super::db::Db {
        match self {
            Opened::Sqlite(s) => super::db::Db::Sqlite(s.pool().clone()),
            Opened::Postgres(s) => super::db::Db::Postgres(s.pool().clone()),
        }
    }

    fn kv(&self) -> Arc<dyn KvStore> {
        match self {
            Opened::Sqlite(s) => Arc::new(SqliteKv::new(s.kv_pool().clone())),
            Opened::Postgres(s) => Arc::new(PgKv::new(s.pool().clone())),
        }
    }

    /// Rows of `table` (a bus table with a `session` column) that belong to `session`.
    async fn rows_of(&self, table: &str, session: &str) -> anyhow::Result<i64> {
        Ok(match self {
            Opened::Sqlite(s) => {
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT COUNT(*) FROM {table} WHERE session = ?"
                )))
                .bind(session)
                .fetch_one(s.bus_pool())
                .await?
            }
            Opened::Postgres(s) => {
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT COUNT(*) FROM {table} WHERE session = $1"
                )))
                .bind(session)
                .fetch_one(s.pool())
                .await?
            }
        })
    }

    pub(crate) async fn close(self) {
        match self {
            Opened::Sqlite(s) => s.close().await,
            Opened::Postgres(s) => s.close().await,
        }
    }
}

/// Each case (an `async fn(Place) -> anyhow::Result<()>` of `module`, a child of the calling
/// module), as a test on SQLite and a test on PostgreSQL.
macro_rules! on_both_backends {
    ($($module:ident: [$($case:ident),* $(,)?]),* $(,)?) => {
        mod sqlite {
            $($(
                #[tokio::test]
                async fn $case() -> anyhow::Result<()> {
                    super::$module::$case($crate::store::tests::Place::sqlite()?).await
                }
            )*)*
        }
        mod postgres {
            $($(
                #[tokio::test]
                async fn $case() -> anyhow::Result<()> {
                    super::$module::$case($crate::store::tests::Place::postgres().await?).await
                }
            )*)*
        }
    };
}

pub(crate) use on_both_backends;

on_both_backends!(
    cases: [
    epoch_increments_across_reopen,
    apply_and_load,
    remove_and_delete,
    data_survives_reopen,
    batch_with_everything_interleaved,
    kv_get_set_delete_and_namespaces,
    kv_keys_in_byte_order_with_prefix_and_limit,
    kv_quota_counts_bytes_of_the_other_keys,
    kv_survives_reopen,
    kv_says_when_the_store_cannot_answer,
    kv_quota_holds_under_concurrent_writes,
    kv_batch_is_all_or_nothing_within_the_quota,
    ],
    accounts: [
        a_localpart_or_subject_is_taken_once,
        a_new_login_on_a_device_replaces_its_token,
        deleting_devices_revokes_their_tokens,
        device_names_and_data_survive_reopen,
    ],
);
