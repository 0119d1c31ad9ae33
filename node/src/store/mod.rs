//! Storage: what the node persists so that no accepted message is lost across a dropped
//! connection, a graceful restart or a killed process.
//!
//! This module owns the storage *interface*: the [`SessionStore`] trait (one backend per
//! database), the [`StoreOp`] write operations, the [`PersistedSession`] image loaded at start,
//! and the group-commit [`writer`] that batches operations into transactions. The embedded default
//! backend is [`sqlite::SqliteStore`]; with `store.url = "postgres://..."` the bus's store is
//! [`postgres::PgStore`] instead, and so are Matrix accounts, devices and access tokens
//! ([`accounts::AccountStore`], over a [`db::Db`]: one SQL text for both backends), rooms and
//! their events ([`pdu::Pdu`], by [`rooms::RoomStore`]), the stream head and the application
//! services' queues ([`appservice::AppserviceStore`]); the Matrix user data stays SQLite in
//! `data_dir` for now. Writes that take a Matrix stream position are [`StreamOp`]s, which the
//! stream writer (`crate::stream`) commits.
//!
//! Writes are asynchronous: the bus submits [`StoreOp`]s to the writer and goes on; the writer
//! commits them in groups. An outbox entry can carry a [`Settle`] signal that the commit fires:
//! `urgent` when the caller waits for the commit itself (a message for a disconnected session:
//! the batch is committed at once), not urgent when the recipient's connection may fire it first
//! by writing the frame to its socket (the batch keeps its commit delay).

pub mod accounts;
pub mod appservice;
pub mod db;
pub mod pdu;
pub mod postgres;
pub mod rooms;
pub mod sqlite;
pub mod writer;

use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio::sync::oneshot;

use db::Conn;

pub use writer::{StoreWriter, WriterConfig, spawn_writer};

/// A session's identifier: a UUID v4 in its hyphenated text form.
pub type SessionKey = Arc<str>;

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A write on one of the SQLite connections of our own (the bus's hot path).
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The PostgreSQL database of `store.url` cannot be reached (`database`: where, no password).
    #[error("cannot connect to the database of `store.url` ({database}): {source}")]
    Connect {
        database: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("the store writer has stopped")]
    WriterStopped,
    /// A group of writes failed to commit: every write of the group fails with it.
    #[error("the group commit failed: {0}")]
    GroupCommit(#[source] Arc<sqlx::Error>),
    /// A stored value that cannot be read back (a corrupt database, or a bug that stored it).
    #[error("stored {what} {id}: {source}")]
    Corrupt {
        what: &'static str,
        id: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StoreError {
    /// Whether the error says the database cannot be reached or is not serving (a connection
    /// refused or lost, no free connection in time, the pool closed, the server shutting down or
    /// out of connections; on SQLite a file locked past the busy timeout, a full disk, an I/O
    /// error or a file that cannot be opened), rather than that a query failed: the edges answer
    /// it 503, and the same request may succeed once the database is back.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Database(e) => sqlx_unavailable(e),
            StoreError::GroupCommit(e) => sqlx_unavailable(e),
            StoreError::Sqlite(e) => e
                .sqlite_error()
                .is_some_and(|e| sqlite_code_unavailable(e.extended_code)),
            StoreError::Connect { .. } | StoreError::WriterStopped => true,
            StoreError::DataDir { .. } | StoreError::Migrate(_) | StoreError::Corrupt { .. } => {
                false
            }
        }
    }
}

/// [`StoreError::is_unavailable`] for an error of sqlx, on either backend.
fn sqlx_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // SQLite's code is its extended result code, in decimal.
        sqlx::Error::Database(e) if e.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() => {
            e.code()
                .and_then(|code| code.parse::<i32>().ok())
                .is_some_and(sqlite_code_unavailable)
        }
        sqlx::Error::Database(e) => {
            // SQLSTATE classes 08 (connection exception), 53 (insufficient resources: too many
            // connections, out of memory or disk), 57 (operator intervention: shutdown, cannot
            // connect now, database dropped); 3D000: the database does not exist.
            e.code().is_some_and(|code| {
                code.starts_with("08")
                    || code.starts_with("53")
                    || code.starts_with("57")
                    || code == "3D000"
            })
        }
        _ => false,
    }
}

/// Whether a SQLite result code (primary or extended: the primary code is its low byte) says
/// the database is not serving rather than that the statement is wrong: BUSY (locked by another
/// connection past the busy timeout), LOCKED, NOMEM, IOERR, FULL (the disk, or
/// `max_page_count`), CANTOPEN.
fn sqlite_code_unavailable(code: i32) -> bool {
    use rusqlite::ffi;
    matches!(
        code & 0xff,
        ffi::SQLITE_BUSY
            | ffi::SQLITE_LOCKED
            | ffi::SQLITE_NOMEM
            | ffi::SQLITE_IOERR
            | ffi::SQLITE_FULL
            | ffi::SQLITE_CANTOPEN
    )
}

/// A write that takes a stream position. Implemented by each store of a concern (rooms, account
/// data, ...), which owns its SQL.
pub trait StreamOp: Send + 'static {
    /// Applies the write inside the writer's transaction, at stream position `pos`.
    fn apply<'c>(
        self: Box<Self>,
        conn: Conn<'c>,
        pos: i64,
    ) -> BoxFuture<'c, Result<(), sqlx::Error>>;

    /// Whether the op needs a savepoint of its own so that a failure rolls back only its own
    /// writes. An op of one SQL statement does not: SQLite undoes a failed statement alone and
    /// keeps the transaction open. Default `true`. SQLite only: on PostgreSQL, where a failed
    /// statement aborts the whole transaction, the stream writer gives every op a savepoint.
    fn needs_savepoint(&self) -> bool {
        true
    }

    /// A copy of the op to apply again if its group is rolled back: on PostgreSQL a group whose
    /// every op has one runs without savepoints first (see `stream/commit.rs`). Default `None`.
    fn try_clone(&self) -> Option<Box<dyn StreamOp>> {
        None
    }
}

/// The persisted image of one resumable session, as loaded at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistedSession {
    pub id: SessionKey,
    /// The runtime URL given in `open` (`hyperty-runtime://D/...`).
    pub runtime_url: String,
    /// SHA-256 of the session's `runtimeToken` (the token itself is never stored).
    pub token_hash: [u8; 32],
    /// The authenticated identity, as JSON written by the auth layer.
    pub identity_json: String,
    /// Highest `seq` acknowledged by the runtime.
    pub acked_seq: u64,
    /// Highest `cseq` handled for the session ([`StoreOp::Handled`]; 0 when none).
    pub cseq: u64,
    /// Addresses allocated to the session, in allocation order.
    pub addresses: Vec<String>,
    /// The `allocationKey` of those addresses that were allocated under one: address → key.
    pub allocation_keys: std::collections::HashMap<String, String>,
    /// Addresses the session subscribes to.
    pub subscriptions: Vec<String>,
    /// Unacknowledged outbox entries `(seq, frame JSON without seq)`, ascending by seq.
    pub outbox: Vec<(u64, String)>,
}

/// One write. Operations on one session are applied in submission order.
#[derive(Debug)]
pub enum StoreOp {
    /// A session was opened.
    CreateSession {
        id: SessionKey,
        runtime_url: String,
        token_hash: [u8; 32],
        identity_json: String,
    },
    /// A session was closed or expired: remove it with its addresses, subscriptions and outbox.
    DeleteSession { id: SessionKey },
    /// A message was put in a session's outbox.
    Enqueue {
        session: SessionKey,
        seq: u64,
        json: Arc<str>,
        /// Fired once the entry is committed (or known acknowledged, so never needed).
        durable: Option<Settle>,
        /// Somebody waits for nothing but this commit: commit the batch without delay.
        urgent: bool,
    },
    /// The runtime acknowledged every entry up to `seq`.
    Ack { session: SessionKey, seq: u64 },
    /// Addresses allocated to a session, under an `allocationKey` or none.
    AddAddresses {
        session: SessionKey,
        addresses: Vec<String>,
        key: Option<String>,
    },
    /// Addresses released by a session.
    RemoveAddresses {
        session: SessionKey,
        addresses: Vec<String>,
    },
    /// Subscriptions added by a session.
    AddSubscriptions {
        session: SessionKey,
        addresses: Vec<String>,
    },
    /// Subscriptions removed by a session.
    RemoveSubscriptions {
        session: SessionKey,
        addresses: Vec<String>,
    },
    /// A barrier: fired once everything submitted before it is committed.
    Flush { done: oneshot::Sender<()> },
    /// Messages of the session numbered up to `cseq` are handled (a node session's: what its
    /// node sends again up to it is dropped, also after a restart).
    Handled { session: SessionKey, cseq: u64 },
    /// Ops committed in one transaction: the writer puts them in one batch, in order (a
    /// node session's message with the outbox entries it made and its [`StoreOp::Handled`]).
    Group(Vec<StoreOp>),
}

/// A one-shot signal with several possible firers: the first [`Settle::fire`] of any clone wakes
/// the waiter, later ones do nothing. An outbox entry for a connected runtime is settled by its
/// connection's writer (the frame reached the socket) or by the store writer (the entry is
/// committed), whichever comes first.
#[derive(Debug, Clone)]
pub struct Settle(Arc<std::sync::Mutex<Option<oneshot::Sender<()>>>>);

impl Settle {
    /// A signal and the receiver its first firing wakes.
    pub fn new() -> (Self, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        (Self(Arc::new(std::sync::Mutex::new(Some(tx)))), rx)
    }

    /// Fires the signal (once; later calls do nothing).
    pub fn fire(&self) {
        if let Some(tx) = crate::locks::lock(&self.0).take() {
            // The waiter may have gone away; nothing to do then.
            let _ = tx.send(());
        }
    }
}

/// A storage backend for sessions and outboxes.
///
/// `apply` receives a batch already coalesced by the writer (no `Flush`, no `durable`
/// notifiers) and must apply it in one transaction, in order.
pub trait SessionStore: Send + Sync + 'static {
    /// Increments and returns the node's start counter (the epoch), durably, before serving.
    fn next_epoch(&self) -> BoxFuture<'_, Result<u64, StoreError>>;
    /// Loads every persisted session.
    fn load_sessions(&self) -> BoxFuture<'_, Result<Vec<PersistedSession>, StoreError>>;
    /// Applies a batch of writes in one transaction.
    fn apply<'a>(&'a self, batch: &'a [StoreOp]) -> BoxFuture<'a, Result<(), StoreError>>;
}

#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
pub(crate) mod unavailable_tests;
