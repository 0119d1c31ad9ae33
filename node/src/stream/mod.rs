//! The Matrix stream: one counter that orders everything a `/sync` reports (room events,
//! account data, receipts, to-device messages, device-list changes), the task that commits those
//! writes, and the notifier that wakes long-polling `/sync` requests.
//!
//! Every write that a `/sync` must see is a [`StreamOp`] submitted to the [`StreamWriter`]. One
//! task takes ops from a bounded channel and commits them in groups, one SQLite transaction per
//! group: each op gets the next stream position inside the transaction, and the positions become
//! *visible* (see [`StreamWriter::visible`]) only after the commit. So a `/sync` that read up to
//! position `p` never misses a later-committed write below `p`, and a submitter that awaits its
//! [`Committed`] knows the write is durable (it survives a killed process).
//!
//! An op that fails is rolled back alone (a savepoint per op, or SQLite's own statement rollback
//! for an op of one statement); the others of its group commit.
//! After each commit, and *before* the new positions become visible, the writer records what
//! each op [`Touch`]es (its users, its room) in the [`Notifier`] and runs the op's hook (the room
//! engine updates its caches there). So whoever reads up to a visible position also sees every
//! cache and change mark up to it; `/sync` relies on this to skip rooms and users that did not
//! change without asking the database.

mod notifier;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use ruma::{OwnedRoomId, OwnedUserId};
use sqlx::Acquire as _;
use sqlx::sqlite::SqlitePool;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

pub use notifier::Notifier;

use crate::store::StoreError;
pub use crate::store::StreamOp;
use crate::store::db::Conn;

/// Most ops committed in one transaction.
const MAX_BATCH: usize = 1024;
/// Ops queued before [`StreamWriter::submit`] waits.
const CHANNEL_CAPACITY: usize = 16_384;

/// The result of a submitted op: resolves to its stream position once committed.
#[derive(Debug)]
pub struct Committed(oneshot::Receiver<Result<i64, StoreError>>);

impl Committed {
    /// Waits for the commit.
    pub async fn wait(self) -> Result<i64, StoreError> {
        self.0.await.unwrap_or(Err(StoreError::WriterStopped))
    }
}

/// What a committed op concerns: the users to wake (and mark as changed), and the room whose
/// events or whose per-room data (receipts, room account data) it changes.
#[derive(Debug, Clone)]
pub struct Touch {
    /// Shared: a room's audience is the same list for every event until its membership changes.
    pub users: Arc<[OwnedUserId]>,
    /// A room event was added to this room.
    pub room_events: Option<OwnedRoomId>,
    /// Per-room user data of this room changed.
    pub room_extras: Option<OwnedRoomId>,
}

impl Touch {
    /// Global per-user data of `users` changed (account data, to-device, keys).
    pub fn users(users: Vec<OwnedUserId>) -> Self {
        Touch {
            users: users.into(),
            room_events: None,
            room_extras: None,
        }
    }
}

/// Runs after the op's commit, before its position is visible, with that position.
pub type CommitHook = Box<dyn FnOnce(i64) + Send>;

struct Pending {
    op: Box<dyn StreamOp>,
    touch: Touch,
    hook: Option<CommitHook>,
    done: oneshot::Sender<Result<i64, StoreError>>,
}

/// What the writer task shares with its handles: the visible position, and how many ops were
/// submitted and how many are done (with a signal at every commit).
#[derive(Debug)]
struct Progress {
    visible: AtomicI64,
    /// Ops submitted so far.
    submitted: AtomicU64,
    /// Ops committed or failed so far (each counted once its group is visible).
    done: AtomicU64,
    /// Notified after every group's positions became visible.
    committed: Notify,
}

/// A cheap-clone handle to the stream writer task.
#[derive(Clone)]
pub struct StreamWriter {
    tx: mpsc::Sender<Pending>,
    progress: Arc<Progress>,
    notifier: Arc<Notifier>,
}

impl std::fmt::Debug for StreamWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamWriter")
            .field("visible", &self.visible())
            .finish_non_exhaustive()
    }
}

impl StreamWriter {
    /// Starts the writer task over `pool`; positions continue from the persisted head.
    pub async fn start(pool: SqlitePool) -> Result<(Self, JoinHandle<()>), StoreError> {
        let head: i64 = sqlx::query_scalar("SELECT pos FROM stream_head WHERE id = 0")
            .fetch_optional(&pool)
            .await?
            .unwrap_or(0);
        let progress = Arc::new(Progress {
            visible: AtomicI64::new(head),
            submitted: AtomicU64::new(0),
            done: AtomicU64::new(0),
            committed: Notify::new(),
        });
        let notifier = Arc::new(Notifier::new(head));
        tracing::debug!(head, "matrix stream opened");
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let task = tokio::spawn(run(
            pool,
            rx,
            head,
            Arc::clone(&progress),
            Arc::clone(&notifier),
        ));
        Ok((
            StreamWriter {
                tx,
                progress,
                notifier,
            },
            task,
        ))
    }

    /// Queues `op`, a change of global per-user data; after its commit, the users in `wake` are
    /// woken. Waits while the queue is full.
    pub async fn submit(
        &self,
        op: Box<dyn StreamOp>,
        wake: Vec<OwnedUserId>,
    ) -> Result<Committed, StoreError> {
        self.submit_touch(op, Touch::users(wake), None).await
    }

    /// Queues `op` with what it touches and a hook to run at its commit.
    pub async fn submit_touch(
        &self,
        op: Box<dyn StreamOp>,
        touch: Touch,
        hook: Option<CommitHook>,
    ) -> Result<Committed, StoreError> {
        let (done, committed) = oneshot::channel();
        self.tx
            .send(Pending {
                op,
                touch,
                hook,
                done,
            })
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        // Counted once queued (a submitter dropped while waiting for room in the queue must not
        // leave the count above `done` for good). The writer may count the op done first: the
        // writer then looks idle for that moment, which only makes a `settled` return early.
        self.progress.submitted.fetch_add(1, Ordering::AcqRel);
        Ok(Committed(committed))
    }

    /// Resolves once a position above the one visible at this call is visible (the next
    /// commit). Decided at the call, not at the first poll, so a commit in between counts.
    /// Application services' queues wait on it.
    pub fn next_commit(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let progress = Arc::clone(&self.progress);
        let seen = self.visible();
        async move {
            loop {
                let committed = progress.committed.notified();
                tokio::pin!(committed);
                committed.as_mut().enable();
                if progress.visible.load(Ordering::Acquire) > seen {
                    return;
                }
                committed.await;
            }
        }
    }

    /// Every position up to this one is committed.
    pub fn visible(&self) -> i64 {
        self.progress.visible.load(Ordering::Acquire)
    }

    /// Waits (at most `max`) until no write is queued or being committed; returns at once on an
    /// idle writer. A woken `/sync` calls this before building its answer: under load, one
    /// answer then carries the writes committed meanwhile instead of several answers following
    /// each other; on an idle node it costs nothing.
    pub async fn settled(&self, max: Duration) {
        let deadline = tokio::time::Instant::now() + max;
        loop {
            let committed = self.progress.committed.notified();
            tokio::pin!(committed);
            // Registered before the check, so a commit in between is not missed.
            committed.as_mut().enable();
            let done = self.progress.done.load(Ordering::Acquire);
            if done >= self.progress.submitted.load(Ordering::Acquire) {
                return;
            }
            if tokio::time::timeout_at(deadline, committed).await.is_err() {
                return;
            }
        }
    }

    /// Wakes long-polling requests.
    pub fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    /// Waits until everything queued before this call is committed.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.submit(Box::new(Noop), Vec::new())
            .await?
            .wait()
            .await?;
        Ok(())
    }
}

/// An op that writes nothing (used by [`StreamWriter::flush`]).
struct Noop;

impl StreamOp for Noop {
    fn apply<'c>(
        self: Box<Self>,
        _conn: Conn<'c>,
        _pos: i64,
    ) -> BoxFuture<'c, Result<(), sqlx::Error>> {
        Box::pin(async { Ok(()) })
    }

    fn needs_savepoint(&self) -> bool {
        false
    }
}

async fn run(
    pool: SqlitePool,
    mut rx: mpsc::Receiver<Pending>,
    mut head: i64,
    progress: Arc<Progress>,
    notifier: Arc<Notifier>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        match commit(&pool, &mut batch, head).await {
            Ok((new_head, results)) => {
                head = new_head;
                // Marks and caches first, then visibility, then the wake-ups and answers.
                for (pending, result) in batch.iter_mut().zip(&results) {
                    if let Ok(pos) = result {
                        notifier.touch(&pending.touch, *pos);
                        if let Some(hook) = pending.hook.take() {
                            hook(*pos);
                        }
                    }
                }
                progress.visible.store(head, Ordering::Release);
                progress
                    .done
                    .fetch_add(batch.len() as u64, Ordering::AcqRel);
                progress.committed.notify_waiters();
                for (pending, result) in batch.drain(..).zip(results) {
                    if let Ok(pos) = result {
                        notifier.wake(&pending.touch.users, pos);
                    }
                    let _ = pending.done.send(result);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "stream commit failed");
                progress
                    .done
                    .fetch_add(batch.len() as u64, Ordering::AcqRel);
                progress.committed.notify_waiters();
                let e = Arc::new(e);
                for pending in batch.drain(..) {
                    let _ = pending
                        .done
                        .send(Err(StoreError::GroupCommit(Arc::clone(&e))));
                }
            }
        }
    }
}

/// Commits one group; returns the new head and each op's result.
async fn commit(
    pool: &SqlitePool,
    batch: &mut [Pending],
    head: i64,
) -> Result<(i64, Vec<Result<i64, StoreError>>), sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin().await?;
    let mut pos = head;
    let mut results = Vec::with_capacity(batch.len());
    for pending in batch.iter_mut() {
        let op = std::mem::replace(&mut pending.op, Box::new(Noop));
        let applied = if op.needs_savepoint() {
            let mut savepoint = tx.begin().await?;
            let applied = op.apply(Conn::Sqlite(&mut savepoint), pos + 1).await;
            match applied {
                Ok(()) => savepoint.commit().await?,
                Err(_) => savepoint.rollback().await?,
            }
            applied
        } else {
            // One statement: a failure is undone by SQLite alone. An error that ends the whole
            // transaction (I/O, full disk) makes the commit below fail, and with it the group.
            op.apply(Conn::Sqlite(&mut tx), pos + 1).await
        };
        match applied {
            Ok(()) => {
                pos += 1;
                results.push(Ok(pos));
            }
            Err(e) => {
                tracing::warn!(error = %e, "stream op failed");
                results.push(Err(StoreError::Database(e)));
            }
        }
    }
    sqlx::query("INSERT INTO stream_head (id, pos) VALUES (0, ?) ON CONFLICT (id) DO UPDATE SET pos = excluded.pos")
        .bind(pos)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok((pos, results))
}

#[cfg(test)]
mod tests {
    use tempfile::TempDir;

    use super::*;
    use crate::store::sqlite::SqliteStore;

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
                let conn = conn.sqlite()?;
                if self.two_statements {
                    sqlx::query("INSERT INTO unique_values (v) VALUES (?)")
                        .bind(self.value + 1000)
                        .execute(&mut *conn)
                        .await?;
                }
                sqlx::query("INSERT INTO unique_values (v) VALUES (?)")
                    .bind(self.value)
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            })
        }

        fn needs_savepoint(&self) -> bool {
            self.two_statements
        }
    }

    /// A writer over a fresh store, and the store's pool.
    async fn writer() -> (TempDir, SqlitePool, StreamWriter) {
        let dir = TempDir::new().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let pool = store.pool().clone();
        let (stream, _task) = StreamWriter::start(pool.clone()).await.unwrap();
        (dir, pool, stream)
    }

    /// One group of ops, submitted at once; the stored values afterwards.
    async fn commit_group(ops: Vec<Insert>) -> (Vec<Result<i64, StoreError>>, Vec<i64>) {
        let (_dir, pool, stream) = writer().await;
        sqlx::query("CREATE TABLE unique_values (v INTEGER PRIMARY KEY)")
            .execute(&pool)
            .await
            .unwrap();
        let mut waiting = Vec::new();
        for op in ops {
            waiting.push(stream.submit(Box::new(op), Vec::new()).await.unwrap());
        }
        let mut results = Vec::new();
        for committed in waiting {
            results.push(committed.wait().await);
        }
        let values = sqlx::query_scalar("SELECT v FROM unique_values ORDER BY v")
            .fetch_all(&pool)
            .await
            .unwrap();
        (results, values)
    }

    fn op(value: i64, two_statements: bool) -> Insert {
        Insert {
            value,
            two_statements,
        }
    }

    #[tokio::test]
    async fn a_failed_one_statement_op_fails_alone_and_takes_no_position() {
        let (results, values) = commit_group(vec![op(1, false), op(1, false), op(2, false)]).await;
        assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
        assert!(matches!(results[1], Err(StoreError::Database(_))));
        let positions: Vec<i64> = [&results[0], &results[2]]
            .iter()
            .map(|r| *r.as_ref().unwrap())
            .collect();
        assert_eq!(
            positions[1],
            positions[0] + 1,
            "no position for the failed op"
        );
        assert_eq!(values, vec![1, 2]);
    }

    #[tokio::test]
    async fn a_failed_op_of_several_statements_leaves_none_of_its_writes() {
        // The second op writes 1001, then fails on 1: its savepoint undoes the 1001.
        let (results, values) = commit_group(vec![op(1, false), op(1, true), op(2, true)]).await;
        assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
        assert!(results[1].is_err());
        assert_eq!(values, vec![1, 2, 1002]);
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
        let (_dir, _pool, stream) = writer().await;
        stream.flush().await.unwrap();
        let started = std::time::Instant::now();
        stream.settled(Duration::from_secs(10)).await;
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn settled_waits_for_the_group_being_committed() {
        let (_dir, _pool, stream) = writer().await;
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
        let (_dir, _pool, stream) = writer().await;
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
        let (_dir, _pool, stream) = writer().await;
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
}
