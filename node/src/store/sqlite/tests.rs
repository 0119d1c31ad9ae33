//! Tests of what only the SQLite store does: its files, the move of bus tables out of the Matrix
//! file. What both backends do is tested on both in `store/tests.rs`.

use std::sync::Arc;

use tempfile::TempDir;

use super::*;

fn key(id: &str) -> SessionKey {
    SessionKey::from(id)
}

fn create(id: &str) -> StoreOp {
    StoreOp::CreateSession {
        id: key(id),
        runtime_url: format!("hyperty-runtime://example.org/{id}"),
        token_hash: [7; 32],
        identity_json: r#"{"user":"alice"}"#.to_owned(),
    }
}

fn enqueue(id: &str, seq: u64) -> StoreOp {
    StoreOp::Enqueue {
        session: key(id),
        seq,
        json: Arc::from(format!(r#"{{"n":{seq}}}"#)),
        durable: None,
        urgent: false,
    }
}

fn seqs(session: &PersistedSession) -> Vec<u64> {
    session.outbox.iter().map(|(seq, _)| *seq).collect()
}

/// A data directory written before the split (session tables in rethink.db) keeps its
/// sessions, outboxes and start counter: they are moved to bus.db once, and rethink.db no
/// longer has them.
#[tokio::test]
async fn sessions_left_in_the_matrix_file_are_moved_to_bus_db() -> anyhow::Result<()> {
    let dir = TempDir::new()?;
    {
        // Today's layout, then the old one rebuilt by hand: sessions in rethink.db only.
        let store = SqliteStore::open(dir.path()).await?;
        store.close().await;
    }
    std::fs::remove_file(dir.path().join(BUS_DB_FILE))?;
    let old =
        SqlitePool::connect_with(SqliteConnectOptions::new().filename(dir.path().join(DB_FILE)))
            .await?;
    sqlx::raw_sql(include_str!("../bus_migrations/0001_sessions.sql"))
        .execute(&old)
        .await?;
    sqlx::raw_sql(
        "INSERT INTO node_meta VALUES ('epoch', 41); \
         INSERT INTO sessions VALUES ('s1', 'hyperty-runtime://example.org/s1', zeroblob(32), '{}', 1); \
         INSERT INTO outbox VALUES ('s1', 1, '{\"n\":1}'), ('s1', 2, '{\"n\":2}');",
    )
    .execute(&old)
    .await?;
    old.close().await;

    for _ in 0..2 {
        // Twice: the second start finds nothing left to move.
        let store = SqliteStore::open(dir.path()).await?;
        let sessions = store.load_sessions().await?;
        assert_eq!(sessions.len(), 1);
        assert_eq!(seqs(&sessions[0]), [2], "acked frames stay acked");
        let left: Option<String> =
            sqlx::query_scalar("SELECT name FROM sqlite_master WHERE name = 'sessions'")
                .fetch_optional(store.pool())
                .await?;
        assert_eq!(left, None, "rethink.db keeps no session table");
        store.close().await;
    }
    let store = SqliteStore::open(dir.path()).await?;
    assert_eq!(store.next_epoch().await?, 42, "the start counter goes on");
    store.close().await;
    Ok(())
}

/// A data directory written before the stubs' key-value store had its own file (its tables in
/// bus.db) keeps each stub's keys and total: they are moved to stubs.db once, and bus.db no
/// longer has them.
#[tokio::test]
async fn stub_keys_left_in_the_bus_file_are_moved_to_stubs_db() -> anyhow::Result<()> {
    use rethink_stubs::KvStore;
    let dir = TempDir::new()?;
    {
        let store = SqliteStore::open(dir.path()).await?;
        store.close().await;
    }
    // The old layout rebuilt by hand: the tables (and a stub's keys) in bus.db only.
    std::fs::remove_file(dir.path().join(KV_DB_FILE))?;
    let old = SqlitePool::connect_with(
        SqliteConnectOptions::new().filename(dir.path().join(BUS_DB_FILE)),
    )
    .await?;
    sqlx::raw_sql(include_str!("../kv_migrations/0001_stub_kv.sql"))
        .execute(&old)
        .await?;
    sqlx::raw_sql(
        "INSERT INTO stub_kv VALUES ('s', 'k', x'7631'); \
         INSERT INTO stub_kv_total VALUES ('s', 3);",
    )
    .execute(&old)
    .await?;
    old.close().await;

    for _ in 0..2 {
        // Twice: the second start finds nothing left to move.
        let store = SqliteStore::open(dir.path()).await?;
        let kv = crate::stubhost::SqliteKv::new(store.kv_pool().clone());
        assert_eq!(kv.get("s", "k").await.unwrap().as_deref(), Some(&b"v1"[..]));
        let total: i64 = sqlx::query_scalar("SELECT bytes FROM stub_kv_total WHERE stub = 's'")
            .fetch_one(store.kv_pool())
            .await?;
        assert_eq!(total, 3, "the stub's total moves with its keys");
        let left: Option<String> =
            sqlx::query_scalar("SELECT name FROM sqlite_master WHERE name = 'stub_kv'")
                .fetch_optional(store.bus_pool())
                .await?;
        assert_eq!(left, None, "bus.db keeps no stub_kv table");
        store.close().await;
    }
    Ok(())
}

/// The bus writes to its own file: a transaction holding rethink.db's write lock (as the
/// Matrix stream writer does while committing) does not block a session write.
#[tokio::test]
async fn bus_writes_do_not_wait_for_the_matrix_write_lock() -> anyhow::Result<()> {
    let dir = TempDir::new()?;
    let store = SqliteStore::open(dir.path()).await?;
    let mut matrix = store.stream_pool().begin().await?;
    sqlx::query("CREATE TABLE lock_holder (x INTEGER)")
        .execute(&mut *matrix)
        .await?;
    // rethink.db's write lock is now held until `matrix` ends. With one file, this write
    // would wait BUSY_TIMEOUT and then fail with "database is locked"; with two it commits.
    store.apply(&[create("s1"), enqueue("s1", 1)]).await?;
    matrix.rollback().await?;
    assert_eq!(seqs(&store.load_sessions().await?[0]), [1]);
    store.close().await;
    Ok(())
}

/// The data directory is created, parents included.
#[tokio::test]
async fn open_creates_the_data_directory() -> anyhow::Result<()> {
    let dir = TempDir::new()?;
    let data = dir.path().join("nested").join("data");
    let store = SqliteStore::open(&data).await?;
    assert_eq!(store.next_epoch().await?, 1);
    store.close().await;
    assert!(data.join(BUS_DB_FILE).is_file());
    Ok(())
}

/// The hot path's batches and the stubs' key-value batches are committed on connections of
/// their own (`HotPath`, `SqliteBatches`). A statement failing in the middle (here a trigger's
/// `RAISE`) must leave none of the batch and no transaction open on the connection: the next
/// batch commits (an open transaction would hold the file's write lock and make it fail with
/// "database is locked").
#[tokio::test]
async fn a_batch_failing_midway_leaves_nothing_and_the_next_one_commits() -> anyhow::Result<()> {
    use rethink_stubs::{KvOp, KvStore};
    let dir = TempDir::new()?;
    let store = SqliteStore::open(dir.path()).await?;
    store.apply(&[create("s1")]).await?;
    sqlx::raw_sql(
        "CREATE TRIGGER refuse_13 BEFORE INSERT ON outbox WHEN NEW.seq = 13 \
         BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
    )
    .execute(store.bus_pool())
    .await?;
    // Ops of several statements (entries and an ack): wrapped in BEGIN ... COMMIT.
    let failing = [
        enqueue("s1", 12),
        StoreOp::Ack {
            session: key("s1"),
            seq: 1,
        },
        enqueue("s1", 13),
    ];
    for _ in 0..3 {
        // More times than the pool has connections.
        assert!(store.apply(&failing).await.is_err());
    }
    store
        .apply(&[
            enqueue("s1", 2),
            StoreOp::Ack {
                session: key("s1"),
                seq: 1,
            },
        ])
        .await?;
    let restored = store.load_sessions().await?;
    assert_eq!(seqs(&restored[0]), [2], "nothing of the failed batches");

    let kv = crate::stubhost::SqliteKv::new(store.kv_pool().clone());
    sqlx::raw_sql(
        "CREATE TRIGGER refuse_boom BEFORE INSERT ON stub_kv WHEN NEW.key = 'boom' \
         BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
    )
    .execute(store.kv_pool())
    .await?;
    let set = |k: &str| KvOp::Set {
        key: k.into(),
        value: b"v".to_vec(),
    };
    for _ in 0..3 {
        assert!(
            kv.apply("s", &[set("a"), set("boom")], 1 << 20)
                .await
                .is_err()
        );
    }
    assert_eq!(
        kv.apply("s", &[set("b")], 1 << 20)
            .await
            .map_err(|f| f.code),
        Ok(2)
    );
    assert_eq!(kv.keys("s", "", 10).await.unwrap(), ["b"]);
    store.close().await;
    Ok(())
}

/// The stubs' key-value batch writer opens its connection at its first batch: a batch that
/// cannot open it (here the file is gone) fails with 503, through `apply` and through the
/// write-behind's own writer alike, and nothing panics.
#[tokio::test]
async fn a_key_value_batch_that_cannot_open_its_connection_is_a_503() -> anyhow::Result<()> {
    use rethink_stubs::{KvOp, KvStore};
    let dir = TempDir::new()?;
    let store = SqliteStore::open(dir.path()).await?;
    let kv = crate::stubhost::SqliteKv::new(store.kv_pool().clone());
    std::fs::remove_file(dir.path().join(KV_DB_FILE))?;
    let set = || KvOp::Set {
        key: "k".into(),
        value: b"v".to_vec(),
    };
    let refused = kv.apply("s", &[set()], 1 << 20).await;
    assert_eq!(refused.map_err(|f| f.code), Err(503));
    let mut writer = kv.batches().expect("a blocking writer");
    let refused = tokio::task::spawn_blocking(move || writer.apply("s", &[set()], 1 << 20)).await?;
    assert_eq!(refused.map_err(|f| f.code), Err(503));
    store.close().await;
    Ok(())
}
