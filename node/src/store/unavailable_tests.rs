//! Tests of [`StoreError::is_unavailable`] on SQLite: the errors of a database that is locked,
//! full or closed are provoked on a real file and must count as unavailable (answered 503),
//! those of a wrong statement must not. [`sqlite_busy`] serves the edges' tests.

use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use tempfile::TempDir;

use super::StoreError;

/// A pool on `file` whose connections wait `busy` for a lock.
async fn pool(file: &Path, busy: Duration, connections: u32) -> SqlitePool {
    let options = SqliteConnectOptions::new()
        .filename(file)
        .create_if_missing(true)
        .busy_timeout(busy);
    SqlitePoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(Duration::from_millis(100))
        .connect_with(options)
        .await
        .unwrap()
}

/// A table `t (k INTEGER PRIMARY KEY, v BLOB)` in a fresh database file.
async fn database() -> (TempDir, std::path::PathBuf) {
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("t.db");
    let pool = pool(&file, Duration::from_secs(5), 1).await;
    sqlx::query("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    (dir, file)
}

/// The error of a write to a database another connection holds `BEGIN EXCLUSIVE` on, past a
/// busy timeout of 50 ms (`SQLITE_BUSY`).
pub(crate) async fn sqlite_busy() -> StoreError {
    let (_dir, file) = database().await;
    let holder = rusqlite::Connection::open(&file).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let pool = pool(&file, Duration::from_millis(50), 1).await;
    let error = sqlx::query("INSERT INTO t (k) VALUES (1)")
        .execute(&pool)
        .await
        .unwrap_err();
    StoreError::Database(error)
}

#[tokio::test]
async fn a_database_locked_by_another_connection_is_unavailable() {
    let busy = sqlite_busy().await;
    let StoreError::Database(sqlx::Error::Database(e)) = &busy else {
        panic!("expected a database error: {busy:?}");
    };
    assert_eq!(e.code().as_deref(), Some("5"), "{busy}");
    assert!(busy.is_unavailable(), "{busy}");

    // The same on the rusqlite connections of the bus's hot path.
    let (_dir, file) = database().await;
    let holder = rusqlite::Connection::open(&file).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let writer = rusqlite::Connection::open(&file).unwrap();
    writer.busy_timeout(Duration::from_millis(50)).unwrap();
    let error = writer
        .execute("INSERT INTO t (k) VALUES (1)", [])
        .unwrap_err();
    let error = StoreError::Sqlite(error);
    assert!(error.is_unavailable(), "{error}");
}

#[tokio::test]
async fn a_full_database_is_unavailable() {
    let (_dir, file) = database().await;
    let pool = pool(&file, Duration::from_secs(5), 1).await;
    // The file may not grow: as a full disk does, it answers SQLITE_FULL.
    sqlx::query("PRAGMA max_page_count = 4")
        .execute(&pool)
        .await
        .unwrap();
    let error = sqlx::query("INSERT INTO t (k, v) VALUES (1, zeroblob(100000))")
        .execute(&pool)
        .await
        .unwrap_err();
    let sqlx::Error::Database(e) = &error else {
        panic!("expected a database error: {error:?}");
    };
    assert_eq!(e.code().as_deref(), Some("13"), "{error}");
    let error = StoreError::Database(error);
    assert!(error.is_unavailable(), "{error}");
}

#[tokio::test]
async fn a_closed_or_exhausted_pool_is_unavailable() {
    let (_dir, file) = database().await;
    let pool = pool(&file, Duration::from_secs(5), 1).await;
    let held = pool.acquire().await.unwrap();
    let error = StoreError::Database(pool.acquire().await.unwrap_err());
    assert!(
        matches!(error, StoreError::Database(sqlx::Error::PoolTimedOut)),
        "{error:?}"
    );
    assert!(error.is_unavailable(), "{error}");
    drop(held);
    pool.close().await;
    let error = sqlx::query("SELECT 1").execute(&pool).await.unwrap_err();
    let error = StoreError::Database(error);
    assert!(
        matches!(error, StoreError::Database(sqlx::Error::PoolClosed)),
        "{error:?}"
    );
    assert!(error.is_unavailable(), "{error}");
}

#[tokio::test]
async fn a_wrong_statement_is_not_unavailable() {
    let (_dir, file) = database().await;
    let pool = pool(&file, Duration::from_secs(5), 1).await;
    sqlx::query("INSERT INTO t (k) VALUES (1)")
        .execute(&pool)
        .await
        .unwrap();
    // SQLITE_CONSTRAINT_PRIMARYKEY (1555): its low byte is 19, not one of an outage.
    let duplicate = sqlx::query("INSERT INTO t (k) VALUES (1)")
        .execute(&pool)
        .await
        .unwrap_err();
    let duplicate = StoreError::Database(duplicate);
    assert!(!duplicate.is_unavailable(), "{duplicate}");
    let syntax = sqlx::query("SELEC 1").execute(&pool).await.unwrap_err();
    let syntax = StoreError::Database(syntax);
    assert!(!syntax.is_unavailable(), "{syntax}");
}

#[test]
fn extended_codes_count_by_their_primary_code() {
    use rusqlite::ffi;
    let error =
        |code| StoreError::Sqlite(rusqlite::Error::SqliteFailure(ffi::Error::new(code), None));
    for code in [
        ffi::SQLITE_BUSY,
        ffi::SQLITE_BUSY_RECOVERY,
        ffi::SQLITE_BUSY_SNAPSHOT,
        ffi::SQLITE_LOCKED,
        ffi::SQLITE_LOCKED_SHAREDCACHE,
        ffi::SQLITE_NOMEM,
        ffi::SQLITE_IOERR,
        ffi::SQLITE_IOERR_WRITE,
        ffi::SQLITE_IOERR_FSYNC,
        ffi::SQLITE_FULL,
        ffi::SQLITE_CANTOPEN,
        ffi::SQLITE_CANTOPEN_ISDIR,
    ] {
        assert!(error(code).is_unavailable(), "code {code}");
    }
    for code in [
        ffi::SQLITE_ERROR,
        ffi::SQLITE_CONSTRAINT,
        ffi::SQLITE_CONSTRAINT_UNIQUE,
        ffi::SQLITE_MISMATCH,
        ffi::SQLITE_CORRUPT,
    ] {
        assert!(!error(code).is_unavailable(), "code {code}");
    }
}
