//! [`BusStore`]: where the bus's store, the stubs' key-value store and the Matrix stores live,
//! SQLite in `data_dir` or the PostgreSQL database of `store.url`, and the handles each part is
//! built with.

use std::sync::Arc;

use crate::config::{StoreBackend, describe_postgres};
use crate::store::db::Db;
use crate::store::postgres::PgStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{SessionStore, StoreError};

/// Where the bus's store and the stubs' key-value store live (`store.url`).
#[derive(Debug, Clone)]
pub(super) enum BusStore {
    /// `bus.db` beside the Matrix database.
    Sqlite(Arc<SqliteStore>),
    /// A PostgreSQL database.
    Postgres(Arc<PgStore>),
}

impl BusStore {
    /// `node`: the cluster node id and `cluster.membership_timeout`, with clustering. A
    /// transaction of this node left idle longer than that timeout is ended by PostgreSQL
    /// (`idle_in_transaction_session_timeout`): a node silent that long is taken for gone, and
    /// the locks of a transaction it was in the middle of (frozen, cut off) must not hold up
    /// the node taking its work over.
    pub(super) async fn open(
        backend: &StoreBackend,
        sqlite: &Arc<SqliteStore>,
        node: Option<(&str, std::time::Duration)>,
    ) -> Result<Self, StoreError> {
        Ok(match backend {
            StoreBackend::Sqlite => BusStore::Sqlite(Arc::clone(sqlite)),
            StoreBackend::Postgres(options) => {
                let mut options = (**options).clone();
                if let Some((_, timeout)) = node {
                    let ms = timeout.as_millis().max(1).to_string();
                    options = options.options([("idle_in_transaction_session_timeout", ms)]);
                }
                let database = describe_postgres(&options);
                let mut store = PgStore::open(options).await?;
                if let Some((node, _)) = node {
                    store = store.for_node(node);
                }
                tracing::info!(
                    %database,
                    "bus store, stubs' key-value store and the Matrix store (accounts, user data, \
                     the server key, rooms, events, the stream, application-service queues) in PostgreSQL"
                );
                BusStore::Postgres(Arc::new(store))
            }
        })
    }

    pub(super) fn sessions(&self) -> Arc<dyn SessionStore> {
        match self {
            BusStore::Sqlite(store) => Arc::clone(store) as Arc<dyn SessionStore>,
            BusStore::Postgres(store) => Arc::clone(store) as Arc<dyn SessionStore>,
        }
    }

    /// The database of the Matrix stores ported to PostgreSQL (accounts, devices, tokens,
    /// profiles, filters, the server key, rooms and their events, memberships, aliases, bridged
    /// objects, room transactions, the stream head, and the user data of `crate::userdata`): the
    /// PostgreSQL database when there is one, else `rethink.db`.
    pub(super) fn matrix_db(&self) -> Db {
        match self {
            BusStore::Sqlite(store) => Db::Sqlite(store.pool().clone()),
            BusStore::Postgres(store) => Db::Postgres(store.pool().clone()),
        }
    }

    /// The database of the Matrix stream writer: on SQLite `rethink.db` through the writer's
    /// own one-connection pool, else the PostgreSQL database (`crate::stream`).
    pub(super) fn stream_db(&self) -> Db {
        match self {
            BusStore::Sqlite(store) => Db::Sqlite(store.stream_pool().clone()),
            BusStore::Postgres(store) => Db::Postgres(store.pool().clone()),
        }
    }

    /// The database of the application services' queues: `appservice.db` on SQLite, else the
    /// PostgreSQL database (`store::appservice`).
    pub(super) fn appservice_db(&self) -> Db {
        match self {
            BusStore::Sqlite(store) => Db::Sqlite(store.appservice_pool().clone()),
            BusStore::Postgres(store) => Db::Postgres(store.pool().clone()),
        }
    }

    pub(super) fn kv(&self) -> Arc<dyn rethink_stubs::KvStore> {
        match self {
            BusStore::Sqlite(store) => {
                Arc::new(crate::stubhost::SqliteKv::new(store.kv_pool().clone()))
            }
            BusStore::Postgres(store) => Arc::new(crate::stubhost::PgKv::new(store.pool().clone())),
        }
    }

    /// Closes the PostgreSQL pool (the SQLite store is closed with the Matrix store).
    pub(super) async fn close(&self) {
        if let BusStore::Postgres(store) = self {
            store.close().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::tests::Place;

    /// A transaction a cluster node leaves idle (the node frozen, or cut off, in the middle of
    /// it) is ended by PostgreSQL after `cluster.membership_timeout`, on both of the node's
    /// pools, so that its locks do not hold up the node taking its work over: here another
    /// connection waiting for an advisory lock the idle transaction holds gets it.
    #[tokio::test]
    async fn a_cluster_nodes_idle_transaction_ends_after_the_membership_timeout()
    -> anyhow::Result<()> {
        let Place::Postgres(options) = Place::postgres().await? else {
            unreachable!("a PostgreSQL place");
        };
        let dir = tempfile::TempDir::new()?;
        let sqlite = Arc::new(SqliteStore::open(dir.path()).await?);
        let backend = StoreBackend::Postgres(options.clone());
        let timeout = Duration::from_millis(300);
        let BusStore::Postgres(store) =
            BusStore::open(&backend, &sqlite, Some(("n1", timeout))).await?
        else {
            unreachable!("a PostgreSQL store");
        };
        let mut other = <sqlx::PgConnection as sqlx::Connection>::connect_with(&options).await?;
        for pool in [store.pool(), store.bus_pool()] {
            let mut frozen = pool.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock(42)")
                .execute(&mut *frozen)
                .await?;
            let taker = sqlx::query("SELECT pg_advisory_xact_lock(42)").execute(&mut other);
            tokio::time::timeout(Duration::from_secs(20), taker)
                .await
                .map_err(|_| anyhow::anyhow!("the idle transaction still holds its lock"))??;
            assert!(
                sqlx::query("SELECT 1").execute(&mut *frozen).await.is_err(),
                "the idle transaction was ended"
            );
            // `other` runs in autocommit: its lock ended with its statement.
        }
        Ok(())
    }
}
