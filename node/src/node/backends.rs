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
    /// `node`: the cluster node id, with clustering.
    pub(super) async fn open(
        backend: &StoreBackend,
        sqlite: &Arc<SqliteStore>,
        node: Option<&str>,
    ) -> Result<Self, StoreError> {
        Ok(match backend {
            StoreBackend::Sqlite => BusStore::Sqlite(Arc::clone(sqlite)),
            StoreBackend::Postgres(options) => {
                let mut store = PgStore::open((**options).clone()).await?;
                if let Some(node) = node {
                    store = store.for_node(node);
                }
                tracing::info!(
                    database = %describe_postgres(options),
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
