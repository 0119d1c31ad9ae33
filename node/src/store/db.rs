//! [`Db`]: the database of the Matrix stores, SQLite (`rethink.db` in `data_dir`, the default)
//! or PostgreSQL (`store.url`), with one SQL text per query for both.
//!
//! A Matrix store holds a `Db` (or, inside a transaction, a [`Tx`]) and runs each query through
//! `on_db!` or `on_tx!`: the macro expands its expression once per backend, so the query is
//! compiled against each driver's own executor and row types, and the SQLite path costs one
//! `match` more than direct sqlx code. The SQL is written in the dialect both engines accept:
//! numbered parameters `$1, $2, ...` (sqlx's SQLite driver binds `$N` by number), `ON CONFLICT
//! ... DO NOTHING / DO UPDATE`, `RETURNING`, `CAST(x AS BIGINT)` rather than `x::BIGINT`, no
//! `INSERT OR ...`, and column types that decode the same way (`TEXT`, `BIGINT` / `INTEGER`,
//! `BYTEA` / `BLOB`; PostgreSQL's `SELECT 1` is an `INT4`, so select a column or cast). A
//! statement that needs the dialect of one engine matches on the `Db` itself, next to its twin.
//!
//! The schemas are separate files (`migrations/` for SQLite, `pg_migrations/` for PostgreSQL),
//! with the same tables and columns in each engine's types.

use sqlx::postgres::{PgConnection, PgPool, Postgres};
use sqlx::sqlite::{Sqlite, SqliteConnection, SqlitePool};

/// The database of the Matrix stores. Cheap to clone (it wraps a connection pool).
#[derive(Debug, Clone)]
pub enum Db {
    /// `rethink.db` in `data_dir`.
    Sqlite(SqlitePool),
    /// The database of `store.url`.
    Postgres(PgPool),
}

/// An open transaction on a [`Db`]: rolled back when dropped without [`Tx::commit`].
#[derive(Debug)]
pub enum Tx {
    Sqlite(sqlx::Transaction<'static, Sqlite>),
    Postgres(sqlx::Transaction<'static, Postgres>),
}

impl Db {
    /// Starts a transaction.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        Ok(match self {
            Db::Sqlite(pool) => Tx::Sqlite(pool.begin().await?),
            Db::Postgres(pool) => Tx::Postgres(pool.begin().await?),
        })
    }

    /// Whether this is the PostgreSQL backend.
    pub fn is_postgres(&self) -> bool {
        matches!(self, Db::Postgres(_))
    }
}

impl From<SqlitePool> for Db {
    fn from(pool: SqlitePool) -> Self {
        Db::Sqlite(pool)
    }
}

impl From<PgPool> for Db {
    fn from(pool: PgPool) -> Self {
        Db::Postgres(pool)
    }
}

/// A connection inside an open transaction, as the stream writer hands it to a
/// [`StreamOp`](super::StreamOp): run queries on it with `on_conn!`.
#[derive(Debug)]
pub enum Conn<'c> {
    Sqlite(&'c mut SqliteConnection),
    Postgres(&'c mut PgConnection),
}

impl Tx {
    /// Commits the transaction.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(tx) => tx.commit().await,
            Tx::Postgres(tx) => tx.commit().await,
        }
    }
}

/// Runs `$body` with `$e` bound to the pool of a `&Db` (`&SqlitePool` or `&PgPool`, both sqlx
/// executors): `on_db!(&self.db, |e| sqlx::query("...").bind(x).execute(e).await)`.
macro_rules! on_db {
    ($db:expr, |$e:ident| $body:expr) => {
        match $db {
            $crate::store::db::Db::Sqlite($e) => $body,
            $crate::store::db::Db::Postgres($e) => $body,
        }
    };
}

/// Runs `$body` with `$e` bound to the connection of a `&mut Tx` (`&mut SqliteConnection` or
/// `&mut PgConnection`; reborrow it with `&mut *e` to use it more than once).
macro_rules! on_tx {
    ($tx:expr, |$e:ident| $body:expr) => {
        match $tx {
            $crate::store::db::Tx::Sqlite(tx) => {
                let $e = &mut **tx;
                $body
            }
            $crate::store::db::Tx::Postgres(tx) => {
                let $e = &mut **tx;
                $body
            }
        }
    };
}

/// Runs `$body` with `$e` bound to the connection of a `&mut Conn` (`&mut SqliteConnection` or
/// `&mut PgConnection`; reborrow it with `&mut *e` to use it more than once).
macro_rules! on_conn {
    ($conn:expr, |$e:ident| $body:expr) => {
        match $conn {
            $crate::store::db::Conn::Sqlite(conn) => {
                let $e = &mut **conn;
                $body
            }
            $crate::store::db::Conn::Postgres(conn) => {
                let $e = &mut **conn;
                $body
            }
        }
    };
}

pub(crate) use {on_conn, on_db, on_tx};
