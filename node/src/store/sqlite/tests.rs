//! Tests of the SQLite store: operations applied and loaded back, reopen, the move of bus
//! tables out of the Matrix file.

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

fn ack(id: &str, seq: u64) -> StoreOp {
    StoreOp::Ack {
        session: key(id),
        seq,
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
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

#[tokio::test]
async fn epoch_increments_across_reopen() -> anyhow::Result<()> {
    let dir = TempDir::new()?;
    let data = dir.path().join("nested").join("data");
    let store = SqliteStore::open(&data).await?;
    assert_eq!(store.next_epoch().await?, 1);
    assert_eq!(store.next_epoch().await?, 2);
    store.close().await;
    drop(store);

    let store = SqliteStore::open(&data).await?;
    assert_eq!(store.next_epoch().await?, 3);
    store.close().await;
    Ok(())
}

#[tokio::test]
async fn apply_and_load() -> anyhow::Result<()> {
    let dir = TempDir::new()?;
    let store = SqliteStore::open(dir.path()).await?;
    assert!(store.load_sessions().await?.is_empty());

    store
        .apply(&[
            create("s1"),
            StoreOp::AddAddresses {
                session: key("s1"),
                addresses: strings(&["hyperty://example.org/b", "hyperty://example.org/a"]),
                key: Some("k1".into()),
            },
            StoreOp::AddSubscriptions {
                session: key("s1"),
                addresses: strings(&["comm://example.org/room/changes"]),
            },
            enqueue("s1", 1),
            enqueue("s1", 2),
            enqueue("s1", 3),
            ack("s1", 1),
        ])
        .await?;

    let sessions = store.load_sessions().await?;
    assert_eq!(sessions.len(), 1);
    let s = &sessions[0];
    assert_eq!(&*s.id, "s1");
    assert_eq!(s.runtime_url, "hyperty-runtime://example.org/s1");
    assert_eq!(s.token_hash, [7; 32]);
    assert_eq!(s.identity_json, r#"{"user":"alice"}"#);
    assert_eq!(s.acked_seq, 1);
    assert_eq!(
        s.addresses,
        strings(&["hyperty://example.org/b", "hyperty://example.org/a"])
    );
    assert_eq!(
        s.allocation_keys
            .get("hyperty://example.org/a")
            .map(String::as_str),
        Some("k1")
    );
    assert_eq!(
        s.subscriptions,
        strings(&["comm://example.org/room/changes"])
    );
    assert_eq!(
        s.outbox,
        vec![(2, r#"{"n":2}"#.to_owned()), (3, r#"{"n":3}"#.to_owned())]
    );
    store.close().await;
    Ok(())
}

#[tokio::test]
async fn remove_and_delete() -> anyhow::Result<()> {
    let dir = TempDir::new()?;
    let store = SqliteStore::open(dir.path()).await?;
    store
        .apply(&[
            create("s1"),
            create("s2"),
            StoreOp::AddAddresses {
                session: key("s1"),
                addresses: strings(&["a1", "a2", "a3"]),
                key: None,
            },
            StoreOp::AddSubscriptions {
                session: key("s1"),
                addresses: strings(&["t1", "t2"]),
            },
            enqueue("s1", 1),
            enqueue("s2", 1),
        ])
        .await?;
    store
        .apply(&[
            StoreOp::RemoveAddresses {
                session: key("s1"),
                addresses: strings(&["a2", "unknown"]),
            },
            StoreOp::RemoveSubscriptions {
                session: key("s1"),
                addresses: strings(&["t1"]),
            },
            // Re-adding an address puts it last; adding a present one changes nothing.
            StoreOp::AddAddresses {
                session: key("s1"),
                addresses: strings(&["a2", "a1"]),
                key: None,
            },
        ])
        .await?;
    let sessions = store.load_sessions().await?;
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions[0].addresses, strings(&["a1", "a3", "a2"]));
    assert_eq!(sessions[0].subscriptions, strings(&["t2"]));

    store
        .apply(&[
            StoreOp::DeleteSession { id: key("s1") },
            // Ops on a deleted session affect nothing and do not fail the batch.
            enqueue("s1", 2),
            ack("s1", 1),
            StoreOp::AddAddresses {
                session: key("s1"),
                addresses: strings(&["a9"]),
                key: None,
            },
            StoreOp::AddSubscriptions {
                session: key("s1"),
                addresses: strings(&["t9"]),
            },
            enqueue("s2", 2),
        ])
        .await?;
    let sessions = store.load_sessions().await?;
    assert_eq!(sessions.len(), 1);
    assert_eq!(&*sessions[0].id, "s2");
    assert_eq!(seqs(&sessions[0]), vec![1, 2]);
    for table in ["outbox", "session_addresses", "session_subscriptions"] {
        let left: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM {table} WHERE session = 's1'"
        )))
        .fetch_one(&store.bus_pool)
        .await?;
        assert_eq!(left, 0, "rows of the deleted session left in {table}");
    }

    // A session can be created again after its deletion, in the same batch.
    store
        .apply(&[
            StoreOp::DeleteSession { id: key("s2") },
            create("s2"),
            enqueue("s2", 5),
        ])
        .await?;
    let sessions = store.load_sessions().await?;
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].acked_seq, 0);
    assert_eq!(seqs(&sessions[0]), vec![5]);
    store.close().await;
    Ok(())
}

#[tokio::test]
async fn data_survives_reopen() -> anyhow::Result<()> {
    let dir = TempDir::new()?;
    let store = SqliteStore::open(dir.path()).await?;
    let mut batch = vec![create("s1")];
    // More than one chunk of multi-row inserts.
    batch.extend((1..=200).map(|seq| enqueue("s1", seq)));
    batch.push(ack("s1", 150));
    batch.push(enqueue("s1", 100)); // already acknowledged: not written
    batch.push(enqueue("s1", 201));
    store.apply(&batch).await?;
    store.close().await;
    drop(store);

    let store = SqliteStore::open(dir.path()).await?;
    let sessions = store.load_sessions().await?;
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].acked_seq, 150);
    assert_eq!(seqs(&sessions[0]), (151..=201).collect::<Vec<_>>());
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox")
        .fetch_one(&store.bus_pool)
        .await?;
    assert_eq!(rows, 51);
    store.close().await;
    Ok(())
}
