//! The Matrix stream: one counter that orders everything a `/sync` reports (room events,
//! account data, receipts, to-device messages, device-list changes), the task that commits those
//! writes, and the notifier that wakes long-polling `/sync` requests.
//!
//! Every write that a `/sync` must see is a [`StreamOp`] submitted to the [`StreamWriter`]. One
//! task takes ops from a bounded channel and commits them in groups, one transaction per group
//! on the Matrix database ([`Db`]: `rethink.db`, or the PostgreSQL database of `store.url`): each
//! op gets the next stream position inside the transaction, and the positions become *visible*
//! (see [`StreamWriter::visible`]) only after the commit. So a `/sync` that read up to position
//! `p` never misses a later-committed write below `p`, and a submitter that awaits its
//! [`Committed`] knows the write is durable (it survives a killed process).
//!
//! An op that fails is rolled back alone (a savepoint per op; on SQLite, SQLite's own statement
//! rollback for an op of one statement); the others of its group commit. How a group takes its
//! positions differs by backend (`commit.rs`): from the writer's memory on SQLite, from the
//! locked head row on PostgreSQL, so that the writers of several nodes on one database hand out
//! positions and commit them in order.
//! After each commit, and *before* the new positions become visible, the writer records what
//! each op [`Touch`]es (its users, its room) in the [`Notifier`] and runs the op's hook (the room
//! engine updates its caches there). So whoever reads up to a visible position also sees every
//! cache and change mark up to it; `/sync` relies on this to skip rooms and users that did not
//! change without asking the database.
//!
//! Cross-node writes (PostgreSQL shared by a cluster): the positions between this node's last
//! head and the head a group locked were committed by other nodes. The visible position then
//! jumps past them (they are committed, so reading the database up to it is consistent), but
//! this node's caches and notifier did not see those writes: before its own positions become
//! visible, the writer reads what those positions touched and lets the room engine load their
//! events ([`remote`]); it does the same when another node announces a commit
//! ([`StreamWriter::poke_remote`], from `cluster::stream`) or, failing that, every
//! second.

mod commit;
mod notifier;
pub mod remote;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use ruma::{OwnedRoomId, OwnedUserId};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

pub use notifier::Notifier;
use remote::{CaughtUp, Follower};
pub use remote::{RemoteHook, RemoteTouch};

use crate::store::StoreError;
pub use crate::store::StreamOp;
use crate::store::db::{Conn, Db, on_db};

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
    /// On PostgreSQL: the other nodes' positions ([`remote`]).
    follower: Option<Arc<Follower>>,
}

impl std::fmt::Debug for StreamWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamWriter")
            .field("visible", &self.visible())
            .finish_non_exhaustive()
    }
}

impl StreamWriter {
    /// Starts the writer task over the Matrix database `db`; positions continue from the
    /// persisted head. On SQLite give it the writer's own pool
    /// ([`SqliteStore::stream_pool`](crate::store::sqlite::SqliteStore::stream_pool)); on
    /// PostgreSQL the node's pool (each group holds one of its connections while it commits).
    pub async fn start(db: impl Into<Db>) -> Result<(Self, JoinHandle<()>), StoreError> {
        let db = db.into();
        let head: i64 = on_db!(&db, |e| sqlx::query_scalar(
            "SELECT pos FROM stream_head WHERE id = 0"
        )
        .fetch_optional(e)
        .await?)
        .unwrap_or(0);
        let progress = Arc::new(Progress {
            visible: AtomicI64::new(head),
            submitted: AtomicU64::new(0),
            done: AtomicU64::new(0),
            committed: Notify::new(),
        });
        let notifier = Arc::new(Notifier::new(head));
        tracing::debug!(head, "matrix stream opened");
        let follower = match &db {
            Db::Postgres(pool) => Some(Arc::new(Follower::new(pool.clone(), head))),
            Db::Sqlite(_) => None,
        };
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let task = tokio::spawn(run(
            db,
            rx,
            head,
            Arc::clone(&progress),
            Arc::clone(&notifier),
            follower.clone(),
        ));
        Ok((
            StreamWriter {
                tx,
                progress,
                notifier,
                follower,
            },
            task,
        ))
    }

    /// Installs the room engine's hook for positions other nodes committed (PostgreSQL only;
    /// once).
    pub fn set_remote_hook(&self, hook: RemoteHook) {
        if let Some(follower) = &self.follower {
            follower.set_hook(hook);
        }
    }

    /// The head after each of this node's own commits (for the announcement to the other
    /// nodes); on SQLite a channel that never changes.
    pub fn own_commits(&self) -> tokio::sync::watch::Receiver<i64> {
        match &self.follower {
            Some(follower) => follower.own.subscribe(),
            None => tokio::sync::watch::channel(self.visible()).1,
        }
    }

    /// Another node announced a commit: catch up with it now rather than at the next check.
    pub fn poke_remote(&self) {
        if let Some(follower) = &self.follower {
            follower.doorbell.notify_one();
        }
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
    db: Db,
    mut rx: mpsc::Receiver<Pending>,
    mut head: i64,
    progress: Arc<Progress>,
    notifier: Arc<Notifier>,
    follower: Option<Arc<Follower>>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut check = tokio::time::interval(REMOTE_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let received = match &follower {
            None => rx.recv_many(&mut batch, MAX_BATCH).await,
            Some(follower) => tokio::select! {
                biased;
                n = rx.recv_many(&mut batch, MAX_BATCH) => n,
                _ = follower.doorbell.notified() => {
                    head = follow(follower, head, &progress, &notifier).await;
                    continue;
                }
                _ = check.tick() => {
                    head = follow(follower, head, &progress, &notifier).await;
                    continue;
                }
            },
        };
        if received == 0 {
            break;
        }
        match commit::commit(&db, &mut batch, head).await {
            Ok(group) => {
                // Positions other nodes committed before this group: into the caches and
                // marks first, in order.
                let foreign = match &follower {
                    Some(follower) if group.seen_head > head => {
                        let caught = follower.catch_up(head, group.seen_head).await;
                        notifier.touch_remote(&caught);
                        caught
                    }
                    _ => CaughtUp::default(),
                };
                head = group.head;
                let results = group.results;
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
                notifier.wake_remote(&foreign);
                for (pending, result) in batch.drain(..).zip(results) {
                    if let Ok(pos) = result {
                        notifier.wake(&pending.touch.users, pos);
                    }
                    let _ = pending.done.send(result);
                }
                if let Some(follower) = &follower {
                    follower.own.send_replace(head);
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

/// How often a writer on PostgreSQL checks the head for positions other nodes committed, when
/// no notice rang (a lost NATS message, or no NATS at all).
const REMOTE_CHECK: Duration = Duration::from_secs(1);

/// Catches up with the positions other nodes committed after `head` (up to the database's
/// head): caches and marks, then visibility, then wake-ups. Returns the new head.
async fn follow(follower: &Follower, head: i64, progress: &Progress, notifier: &Notifier) -> i64 {
    let upto = match follower.head().await {
        Ok(upto) if upto > head => upto,
        Ok(_) => return head,
        Err(e) => {
            tracing::debug!(error = %e, "matrix stream: cannot read the head");
            return head;
        }
    };
    let caught = follower.catch_up(head, upto).await;
    notifier.touch_remote(&caught);
    progress.visible.store(upto, Ordering::Release);
    progress.committed.notify_waiters();
    notifier.wake_remote(&caught);
    upto
}

#[cfg(test)]
pub(crate) mod tests;
