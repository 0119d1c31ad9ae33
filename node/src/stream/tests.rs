//! The stream writer: group commits with failing ops, and two writers (two nodes) on one
//! PostgreSQL database, on both backends where both apply (`crate::store::tests`).

use super::*;
use crate::store::db::on_conn;
use crate::store::tests::{Opened, Place, on_both_backends};

/// The stream writer's database of an opened store: its own pool on SQLite.
pub(crate) fn stream_db(opened: &Opened) -> Db {
    match opened {
        Opened::Sqlite(s) => Db::Sqlite(s.stream_pool().clone()),
        Opened::Postgres(s) => Db::Postgres(s.pool().clone()),
    }
}

/// Inserts `value` into a table whose values are unique, as one statement or as two (the
/// second inserting `value + 1000`).
struct Insert {
    value: i64,
    two_statements: bool,
}

impl StreamOp for Insert {
    fn apply<'c>(
        self: Box<Self>,
        mut conn: Conn<'c>,
        _pos: i64,
    ) -> BoxFuture<'c, Result<(), sqlx::Error>> {
        Box::pin(async move {
            on_conn!(&mut conn, |c| {
                if self.two_statements {
                    sqlx::query("INSERT INTO unique_values (v) VALUES ($1)")
                        .bind(self.value + 1000)
                        .execute(&mut *c)
                        .await?;
                }
                sqlx::query("INSERT INTO unique_values (v) VALUES ($1)")
                    .bind(self.value)
                    .execute(&mut *c)
                    .await?;
            });
            Ok(())
        })
    }

    fn needs_savepoint(&self) -> bool {
        self.two_statements
    }
}

/// Waits for `release` (nothing written); tells `started` when the writer applies it. Ops
/// submitted while it waits are committed together, in the next group.
struct Gate {
    started: Option<oneshot::Sender<()>>,
    release: oneshot::Receiver<()>,
}

impl StreamOp for Gate {
    fn apply<'c>(
        self: Box<Self>,
        _conn: Conn<'c>,
        _pos: i64,
    ) -> BoxFuture<'c, Result<(), sqlx::Error>> {
        Box::pin(async move {
            if let Some(started) = self.started {
                let _ = started.send(());
            }
            let _ = self.release.await;
            Ok(())
        })
    }
}

/// Commits `ops` in one group (queued behind a [`Gate`] that holds the writer meanwhile); each
/// op's result, in order.
pub(crate) async fn in_one_group(
    stream: &StreamWriter,
    ops: Vec<Box<dyn StreamOp>>,
) -> anyhow::Result<Vec<Result<i64, StoreError>>> {
    let (started, applying) = oneshot::channel();
    let (release, released) = oneshot::channel();
    let gate = Gate {
        started: Some(started),
        release: released,
    };
    let gate = stream.submit(Box::new(gate), Vec::new()).await?;
    applying.await?;
    let mut waiting = Vec::new();
    for op in ops {
        waiting.push(stream.submit(op, Vec::new()).await?);
    }
    let _ = release.send(());
    gate.wait().await?;
    let mut results = Vec::new();
    for committed in waiting {
        results.push(committed.wait().await);
    }
    Ok(results)
}

/// Commits `ops` in one group (behind a [`Gate`]) on a fresh store; the results and the stored
/// values afterwards.
async fn commit_group(
    place: Place,
    ops: Vec<Insert>,
) -> anyhow::Result<(Vec<Result<i64, StoreError>>, Vec<i64>)> {
    let opened = place.open().await?;
    let db = opened.matrix_db();
    on_db!(&db, |e| sqlx::query(
        "CREATE TABLE unique_values (v BIGINT PRIMARY KEY)"
    )
    .execute(e)
    .await?
    .rows_affected());
    let (stream, _task) = StreamWriter::start(stream_db(&opened)).await?;
    let ops = ops.into_iter().map(|op| Box::new(op) as Box<dyn StreamOp>);
    let results = in_one_group(&stream, ops.collect()).await?;
    let values = on_db!(&db, |e| sqlx::query_scalar(
        "SELECT v FROM unique_values ORDER BY v"
    )
    .fetch_all(e)
    .await?);
    Ok((results, values))
}

fn op(value: i64, two_statements: bool) -> Insert {
    Insert {
        value,
        two_statements,
    }
}

mod cases {
    use super::*;

    pub(super) async fn a_failed_one_statement_op_fails_alone_and_takes_no_position(
        place: Place,
    ) -> anyhow::Result<()> {
        let ops = vec![op(1, false), op(1, false), op(2, false)];
        let (results, values) = commit_group(place, ops).await?;
        assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
        assert!(matches!(results[1], Err(StoreError::Database(_))));
        let first = *results[0].as_ref().unwrap();
        assert_eq!(
            *results[2].as_ref().unwrap(),
            first + 1,
            "no position for the failed op"
        );
        assert_eq!(values, vec![1, 2]);
        Ok(())
    }

    pub(super) async fn a_failed_op_of_several_statements_leaves_none_of_its_writes(
        place: Place,
    ) -> anyhow::Result<()> {
        // The second op writes 1001, then fails on 1: its savepoint undoes the 1001.
        let ops = vec![op(1, false), op(1, true), op(2, true)];
        let (results, values) = commit_group(place, ops).await?;
        assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
        assert!(results[1].is_err());
        assert_eq!(values, vec![1, 2, 1002]);
        Ok(())
    }

    pub(super) async fn positions_continue_after_a_restart(place: Place) -> anyhow::Result<()> {
        let opened = place.open().await?;
        let (stream, task) = StreamWriter::start(stream_db(&opened)).await?;
        for _ in 0..3 {
            stream.flush().await?;
        }
        assert_eq!(stream.visible(), 3);
        drop(stream);
        task.await?;
        opened.close().await;
        let opened = place.open().await?;
        let (stream, _task) = StreamWriter::start(stream_db(&opened)).await?;
        assert_eq!(stream.visible(), 3);
        let next = stream
            .submit(Box::new(Noop), Vec::new())
            .await?
            .wait()
            .await?;
        assert_eq!(next, 4);
        Ok(())
    }
}

on_both_backends!(
    cases: [
        a_failed_one_statement_op_fails_alone_and_takes_no_position,
        a_failed_op_of_several_statements_leaves_none_of_its_writes,
        positions_continue_after_a_restart,
    ],
);

/// Records its position and how many positions below it were committed (or written by its own
/// group) when it ran.
struct Log;

impl StreamOp for Log {
    fn apply<'c>(
        self: Box<Self>,
        mut conn: Conn<'c>,
        pos: i64,
    ) -> BoxFuture<'c, Result<(), sqlx::Error>> {
        Box::pin(async move {
            on_conn!(&mut conn, |c| {
                sqlx::query(
                    "INSERT INTO log (pos, below) \
                     SELECT $1, COUNT(*) FROM log WHERE pos < $1",
                )
                .bind(pos)
                .execute(&mut *c)
                .await?;
            });
            Ok(())
        })
    }
}

/// Two nodes' writers on one PostgreSQL database, each submitting from several tasks at once:
/// every position is handed out once, none is skipped, and each group ran only once every
/// position below it was committed.
#[tokio::test]
async fn two_writers_on_one_postgres_database_commit_disjoint_positions_in_order()
-> anyhow::Result<()> {
    const TASKS: usize = 4;
    const OPS: usize = 50;
    let place = Place::postgres().await?;
    let (a, b) = (place.open().await?, place.open().await?);
    on_db!(&a.matrix_db(), |e| sqlx::query(
        "CREATE TABLE log (pos BIGINT PRIMARY KEY, below BIGINT NOT NULL)"
    )
    .execute(e)
    .await?
    .rows_affected());
    let (wa, _ta) = StreamWriter::start(stream_db(&a)).await?;
    let (wb, _tb) = StreamWriter::start(stream_db(&b)).await?;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..2 * TASKS {
        let (writer, db) = if i % 2 == 0 {
            (wa.clone(), a.matrix_db())
        } else {
            (wb.clone(), b.matrix_db())
        };
        tasks.spawn(async move {
            let mut positions = Vec::new();
            for _ in 0..OPS {
                let committed = writer.submit(Box::new(Log), Vec::new()).await?;
                let pos = committed.wait().await?;
                // This node's reads up to its visible position see every row below it, the
                // other node's included.
                let visible = writer.visible();
                assert!(visible >= pos, "{pos} committed, {visible} visible");
                let seen: i64 = on_db!(&db, |e| sqlx::query_scalar(
                    "SELECT COUNT(*) FROM log WHERE pos <= $1"
                )
                .bind(visible)
                .fetch_one(e)
                .await?);
                assert_eq!(seen, visible, "a position below the visible one is missing");
                positions.push(pos);
            }
            anyhow::Ok(positions)
        });
    }
    let mut positions = Vec::new();
    while let Some(done) = tasks.join_next().await {
        positions.extend(done??);
    }
    positions.sort_unstable();
    let total = (2 * TASKS * OPS) as i64;
    assert_eq!(positions, (1..=total).collect::<Vec<_>>());
    let rows: Vec<(i64, i64)> = on_db!(&a.matrix_db(), |e| sqlx::query_as(
        "SELECT pos, below FROM log ORDER BY pos"
    )
    .fetch_all(e)
    .await?);
    assert_eq!(rows.len(), positions.len());
    for (pos, below) in rows {
        assert_eq!(
            below,
            pos - 1,
            "position {pos} written before those below it committed"
        );
    }
    let head: i64 = on_db!(&b.matrix_db(), |e| sqlx::query_scalar(
        "SELECT pos FROM stream_head WHERE id = 0"
    )
    .fetch_one(e)
    .await?);
    assert_eq!(head, total);
    // Each writer's visible position covers what it committed and what the other committed
    // before its last group; it never passes the stored head.
    assert!(wa.visible() <= total && wb.visible() <= total);
    assert_eq!(wa.visible().max(wb.visible()), total);
    Ok(())
}

/// A writer over a fresh SQLite store (the place and store live as long as the writer is used).
async fn writer() -> (Place, Opened, StreamWriter) {
    let place = Place::sqlite().unwrap();
    let opened = place.open().await.unwrap();
    let (stream, _task) = StreamWriter::start(stream_db(&opened)).await.unwrap();
    (place, opened, stream)
}

/// Takes `delay` before committing (nothing written); tells `started` when the writer
/// applies it.
struct Slow {
    delay: Duration,
    started: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Slow {
    fn new(delay: Duration) -> Self {
        Self {
            delay,
            started: None,
        }
    }
}

impl StreamOp for Slow {
    fn apply<'c>(
        self: Box<Self>,
        _conn: Conn<'c>,
        _pos: i64,
    ) -> BoxFuture<'c, Result<(), sqlx::Error>> {
        Box::pin(async move {
            if let Some(started) = self.started {
                let _ = started.send(());
            }
            tokio::time::sleep(self.delay).await;
            Ok(())
        })
    }

    fn needs_savepoint(&self) -> bool {
        false
    }
}

#[tokio::test]
async fn settled_returns_at_once_when_nothing_is_being_written() {
    let (_place, _opened, stream) = writer().await;
    stream.flush().await.unwrap();
    let started = std::time::Instant::now();
    stream.settled(Duration::from_secs(10)).await;
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn settled_waits_for_the_group_being_committed() {
    let (_place, _opened, stream) = writer().await;
    let before = stream.visible();
    let slow = Slow::new(Duration::from_millis(200));
    let committed = stream.submit(Box::new(slow), Vec::new()).await.unwrap();
    let started = std::time::Instant::now();
    stream.settled(Duration::from_secs(10)).await;
    assert_eq!(stream.visible(), before + 1, "returned before the commit");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(committed.wait().await.unwrap(), before + 1);
}

#[tokio::test]
async fn settled_waits_for_writes_queued_behind_the_group() {
    let (_place, _opened, stream) = writer().await;
    let before = stream.visible();
    let (started, applying) = tokio::sync::oneshot::channel();
    let first = Slow {
        started: Some(started),
        ..Slow::new(Duration::from_millis(300))
    };
    let first = stream.submit(Box::new(first), Vec::new()).await.unwrap();
    // Once the writer is committing the first op, the second one queues behind it.
    applying.await.unwrap();
    let second = Slow::new(Duration::from_millis(300));
    let second = stream.submit(Box::new(second), Vec::new()).await.unwrap();
    stream.settled(Duration::from_secs(10)).await;
    assert_eq!(
        stream.visible(),
        before + 2,
        "returned before the queue was empty"
    );
    assert_eq!(first.wait().await.unwrap(), before + 1);
    assert_eq!(second.wait().await.unwrap(), before + 2);
}

#[tokio::test]
async fn settled_waits_no_longer_than_asked() {
    let (_place, _opened, stream) = writer().await;
    let before = stream.visible();
    let slow = Slow::new(Duration::from_secs(3));
    let committed = stream.submit(Box::new(slow), Vec::new()).await.unwrap();
    let started = std::time::Instant::now();
    stream.settled(Duration::from_millis(50)).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(
        stream.visible(),
        before,
        "the slow op is still being committed"
    );
    assert_eq!(committed.wait().await.unwrap(), before + 1);
}
