//! The group-commit writer: one task that takes [`StoreOp`]s from a bounded channel and commits
//! them in batches, one transaction per batch.
//!
//! A batch starts with the first op received; the task then takes what is already queued and, if
//! nobody waits for this batch (no `urgent` enqueue, no `Flush`), keeps collecting until
//! [`WriterConfig::commit_delay`] has passed or [`WriterConfig::max_batch`] ops are held. Before
//! the commit the batch is coalesced per session (an entry acknowledged later in the same batch is
//! never written). A failed commit is retried with a growing backoff; nothing is ever dropped.
//! When every [`StoreWriter`] is dropped the task commits what is left and ends.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{SessionKey, SessionStore, Settle, StoreError, StoreOp};

/// First retry delay after a failed commit; doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Tuning of the group-commit writer.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// How long a batch nobody waits for may collect ops before it is committed.
    pub commit_delay: Duration,
    /// Most ops in one transaction.
    pub max_batch: usize,
    /// Ops queued before [`StoreWriter::submit`] waits (back-pressure).
    pub channel_capacity: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            commit_delay: Duration::from_millis(5),
            max_batch: 4096,
            channel_capacity: 65536,
        }
    }
}

/// Why [`StoreWriter::try_submit`] did not queue an op; the op is handed back.
#[derive(Debug, thiserror::Error)]
pub enum TrySubmitError {
    #[error("the store writer queue is full")]
    Full(StoreOp),
    #[error("the store writer has stopped")]
    Stopped(StoreOp),
}

/// A cheap-clone handle submitting ops to the writer task.
#[derive(Clone, Debug)]
pub struct StoreWriter {
    tx: mpsc::Sender<StoreOp>,
}

impl StoreWriter {
    /// Queues an op, waiting while the queue is full (never drops it).
    pub async fn submit(&self, op: StoreOp) -> Result<(), StoreError> {
        self.tx
            .send(op)
            .await
            .map_err(|_| StoreError::WriterStopped)
    }

    /// Queues an op if there is room now.
    pub fn try_submit(&self, op: StoreOp) -> Result<(), TrySubmitError> {
        self.tx.try_send(op).map_err(|e| match e {
            mpsc::error::TrySendError::Full(op) => TrySubmitError::Full(op),
            mpsc::error::TrySendError::Closed(op) => TrySubmitError::Stopped(op),
        })
    }

    /// Waits until everything submitted before this call is committed.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.flush_queued().await?.await
    }

    /// Queues a flush now (after everything submitted before this call, before anything
    /// submitted after it); the future returned resolves once it is committed.
    pub async fn flush_queued(
        &self,
    ) -> Result<impl Future<Output = Result<(), StoreError>> + Send + 'static, StoreError> {
        let (done, committed) = oneshot::channel();
        self.submit(StoreOp::Flush { done }).await?;
        Ok(async move { committed.await.map_err(|_| StoreError::WriterStopped) })
    }

    /// Puts an entry in a session's outbox and waits until it is committed (or known
    /// acknowledged).
    pub async fn enqueue_durable(
        &self,
        session: SessionKey,
        seq: u64,
        json: Arc<str>,
    ) -> Result<(), StoreError> {
        let (durable, committed) = Settle::new();
        self.submit(StoreOp::Enqueue {
            session,
            seq,
            json,
            durable: Some(durable),
            urgent: true,
        })
        .await?;
        committed.await.map_err(|_| StoreError::WriterStopped)
    }
}

/// Starts the writer task over `store`. The task ends once every [`StoreWriter`] clone is
/// dropped and the last batch is committed.
pub fn spawn_writer(
    store: Arc<dyn SessionStore>,
    config: WriterConfig,
) -> (StoreWriter, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(config.channel_capacity.max(1));
    let task = tokio::spawn(run(store, rx, config));
    (StoreWriter { tx }, task)
}

/// The writer loop: collect a batch, commit it, repeat until the channel is closed.
async fn run(store: Arc<dyn SessionStore>, mut rx: mpsc::Receiver<StoreOp>, config: WriterConfig) {
    let max_batch = config.max_batch.max(1);
    let mut batch = Vec::with_capacity(max_batch.min(4096));
    while let Some(first) = rx.recv().await {
        let deadline = Instant::now() + config.commit_delay;
        let mut urgent = is_urgent(&first);
        add(&mut batch, first);
        let closed = collect(&mut rx, &mut batch, &mut urgent, max_batch, deadline).await;
        commit(&*store, &mut batch).await;
        if closed {
            break;
        }
    }
    tracing::debug!("store writer stopped");
}

/// Adds ops to `batch` until it is full, or nothing is queued and the batch is urgent, or the
/// deadline has passed. Returns whether the channel is closed (and empty).
async fn collect(
    rx: &mut mpsc::Receiver<StoreOp>,
    batch: &mut Vec<StoreOp>,
    urgent: &mut bool,
    max_batch: usize,
    deadline: Instant,
) -> bool {
    while batch.len() < max_batch {
        let op = match rx.try_recv() {
            Ok(op) => op,
            Err(mpsc::error::TryRecvError::Disconnected) => return true,
            Err(mpsc::error::TryRecvError::Empty) if *urgent => return false,
            Err(mpsc::error::TryRecvError::Empty) => {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(op)) => op,
                    Ok(None) => return true,
                    Err(_elapsed) => return false,
                }
            }
        };
        *urgent |= is_urgent(&op);
        add(batch, op);
    }
    false
}

/// Adds `op` to `batch`, a [`StoreOp::Group`] as its ops (all in this batch, so in one
/// transaction).
fn add(batch: &mut Vec<StoreOp>, op: StoreOp) {
    match op {
        StoreOp::Group(ops) => ops.into_iter().for_each(|op| add(batch, op)),
        op => batch.push(op),
    }
}

/// Whether somebody waits for nothing but the commit of this op.
fn is_urgent(op: &StoreOp) -> bool {
    match op {
        StoreOp::Flush { .. } | StoreOp::Enqueue { urgent: true, .. } => true,
        StoreOp::Group(ops) => ops.iter().any(is_urgent),
        _ => false,
    }
}

/// Who is told that a batch is committed.
enum Notifier {
    Flush(oneshot::Sender<()>),
    Settle(Settle),
}

impl Notifier {
    fn fire(self) {
        match self {
            // The waiter may have gone away; nothing to do then.
            Notifier::Flush(done) => {
                let _ = done.send(());
            }
            Notifier::Settle(settle) => settle.fire(),
        }
    }
}

/// Coalesces and commits `batch` (emptying it), retrying until the store accepts it, then
/// fires the notifiers it held.
async fn commit(store: &dyn SessionStore, batch: &mut Vec<StoreOp>) {
    let notifiers = coalesce(batch);
    if !batch.is_empty() {
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1u32;
        while let Err(error) = store.apply(batch).await {
            tracing::error!(
                %error,
                ops = batch.len(),
                attempt,
                retry_in_ms = backoff.as_millis(),
                "store commit failed; retrying"
            );
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            attempt = attempt.saturating_add(1);
        }
        tracing::trace!(ops = batch.len(), "store batch committed");
    }
    batch.clear();
    for notifier in notifiers {
        notifier.fire();
    }
}

/// What a backward scan knows about the rest of the batch for one session.
#[derive(Default)]
struct Later {
    /// Highest `Ack` seq later in the batch.
    acked: Option<u64>,
    /// A `DeleteSession` comes later in the batch.
    deleted: bool,
    /// Highest `Handled` cseq later in the batch.
    handled: Option<u64>,
}

impl Later {
    /// Whether an entry or an ack up to `seq` is made useless by what comes later.
    fn covers(&self, seq: u64) -> bool {
        self.deleted || self.acked.is_some_and(|acked| seq <= acked)
    }
}

/// Prepares a batch for [`SessionStore::apply`]: strips `Flush` ops and `durable` notifiers
/// (returned, to be fired after the commit), and drops, per session, the `Enqueue`s and `Ack`s
/// that a later `Ack` (with a seq at least as high) or `DeleteSession` in the same batch makes
/// useless, and the `Handled`s that a later one of the same session (with a cseq at least as
/// high) makes useless: a node session's messages come as (`Enqueue`, `Handled`) pairs, and
/// without their `Handled`s between them the `Enqueue`s make one multi-row statement. The order
/// of the remaining ops is kept.
fn coalesce(batch: &mut Vec<StoreOp>) -> Vec<Notifier> {
    let mut notifiers = Vec::new();
    let mut later: HashMap<SessionKey, Later> = HashMap::new();
    let mut keep = vec![true; batch.len()];
    for (i, op) in batch.iter_mut().enumerate().rev() {
        match op {
            StoreOp::Flush { .. } => keep[i] = false,
            StoreOp::Enqueue {
                session,
                seq,
                durable,
                ..
            } => {
                notifiers.extend(durable.take().map(Notifier::Settle));
                keep[i] = !later.get(session).is_some_and(|l| l.covers(*seq));
            }
            StoreOp::Ack { session, seq } => {
                let l = later.entry(session.clone()).or_default();
                if l.covers(*seq) {
                    keep[i] = false;
                } else {
                    l.acked = Some(*seq);
                }
            }
            StoreOp::Handled { session, cseq } => {
                let l = later.entry(session.clone()).or_default();
                if l.handled.is_some_and(|h| h >= *cseq) {
                    keep[i] = false;
                } else {
                    l.handled = Some(*cseq);
                }
            }
            StoreOp::DeleteSession { id } => later.entry(id.clone()).or_default().deleted = true,
            _ => {}
        }
    }
    let mut kept_ops = Vec::with_capacity(batch.len());
    for (op, kept) in batch.drain(..).zip(keep) {
        match op {
            StoreOp::Flush { done } => notifiers.push(Notifier::Flush(done)),
            op if kept => kept_ops.push(op),
            _ => {}
        }
    }
    *batch = kept_ops;
    notifiers
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures_util::future::BoxFuture;
    use tempfile::TempDir;

    use super::*;
    use crate::store::PersistedSession;
    use crate::store::sqlite::SqliteStore;

    const LONG: Duration = Duration::from_secs(30);
    const PATIENCE: Duration = Duration::from_secs(10);

    fn key(id: &str) -> SessionKey {
        SessionKey::from(id)
    }

    fn create(id: &str) -> StoreOp {
        StoreOp::CreateSession {
            id: key(id),
            runtime_url: format!("hyperty-runtime://example.org/{id}"),
            token_hash: [1; 32],
            identity_json: "{}".to_owned(),
        }
    }

    fn enqueue(id: &str, seq: u64) -> StoreOp {
        StoreOp::Enqueue {
            session: key(id),
            seq,
            json: Arc::from(format!("m{seq}")),
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

    /// A config whose batches only end on an urgent op, a full batch or a closed channel.
    fn slow_config() -> WriterConfig {
        WriterConfig {
            commit_delay: LONG,
            ..WriterConfig::default()
        }
    }

    fn describe(op: &StoreOp) -> String {
        match op {
            StoreOp::CreateSession { id, .. } => format!("create {id}"),
            StoreOp::DeleteSession { id } => format!("delete {id}"),
            StoreOp::Enqueue {
                session,
                seq,
                durable,
                ..
            } => format!("enqueue {session} {seq} durable={}", durable.is_some()),
            StoreOp::Ack { session, seq } => format!("ack {session} {seq}"),
            StoreOp::AddAddresses { session, .. } => format!("add-addresses {session}"),
            StoreOp::RemoveAddresses { session, .. } => format!("remove-addresses {session}"),
            StoreOp::AddSubscriptions { session, .. } => format!("add-subscriptions {session}"),
            StoreOp::RemoveSubscriptions { session, .. } => {
                format!("remove-subscriptions {session}")
            }
            StoreOp::Flush { .. } => "flush".to_owned(),
            StoreOp::Handled { session, cseq } => format!("handled {session} {cseq}"),
            StoreOp::Group(ops) => format!("group of {}", ops.len()),
        }
    }

    /// Records the batches it is given; fails the first `failures` of them.
    #[derive(Default)]
    struct RecordingStore {
        failures: AtomicUsize,
        attempts: AtomicUsize,
        batches: Mutex<Vec<Vec<String>>>,
    }

    impl RecordingStore {
        fn batches(&self) -> Vec<Vec<String>> {
            self.batches.lock().map(|b| b.clone()).unwrap_or_default()
        }
    }

    impl SessionStore for RecordingStore {
        fn next_epoch(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
            Box::pin(async { Ok(1) })
        }

        fn load_sessions(&self) -> BoxFuture<'_, Result<Vec<PersistedSession>, StoreError>> {
            Box::pin(async { Ok(Vec::new()) })
        }

        fn apply<'a>(&'a self, batch: &'a [StoreOp]) -> BoxFuture<'a, Result<(), StoreError>> {
            Box::pin(async move {
                self.attempts.fetch_add(1, Ordering::SeqCst);
                let failing = self
                    .failures
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                if failing {
                    return Err(StoreError::Database(sqlx::Error::PoolTimedOut));
                }
                if let Ok(mut batches) = self.batches.lock() {
                    batches.push(batch.iter().map(describe).collect());
                }
                Ok(())
            })
        }
    }

    async fn sqlite(dir: &TempDir) -> anyhow::Result<Arc<SqliteStore>> {
        Ok(Arc::new(SqliteStore::open(dir.path()).await?))
    }

    fn seqs(session: &PersistedSession) -> Vec<u64> {
        session.outbox.iter().map(|(seq, _)| *seq).collect()
    }

    #[tokio::test]
    async fn flush_persists_everything_submitted() -> anyhow::Result<()> {
        let dir = TempDir::new()?;
        let store = sqlite(&dir).await?;
        let config = WriterConfig {
            max_batch: 100, // several batches
            ..WriterConfig::default()
        };
        let (writer, task) = spawn_writer(store.clone(), config);
        writer.submit(create("s1")).await?;
        for seq in 1..=1000 {
            writer.submit(enqueue("s1", seq)).await?;
        }
        tokio::time::timeout(PATIENCE, writer.flush()).await??;

        let sessions = store.load_sessions().await?;
        assert_eq!(sessions.len(), 1);
        assert_eq!(seqs(&sessions[0]), (1..=1000).collect::<Vec<_>>());
        assert_eq!(sessions[0].outbox[41].1, "m42");

        drop(writer);
        tokio::time::timeout(PATIENCE, task).await??;
        Ok(())
    }

    #[tokio::test]
    async fn a_group_is_committed_in_one_batch_whatever_the_batch_limit() -> anyhow::Result<()> {
        // Batches of at most 2 ops: the group of 3 still goes whole into one, with nothing
        // between its ops; the durable `cseq` is read back with the session.
        let dir = TempDir::new()?;
        let store = sqlite(&dir).await?;
        let recorder = Arc::new(RecordingStore::default());
        for (target, check) in [
            (recorder.clone() as Arc<dyn SessionStore>, true),
            (store.clone() as Arc<dyn SessionStore>, false),
        ] {
            let config = WriterConfig {
                max_batch: 2,
                ..slow_config()
            };
            let (writer, task) = spawn_writer(target, config);
            writer.submit(create("s1")).await?;
            writer
                .submit(StoreOp::Group(vec![
                    enqueue("s1", 1),
                    enqueue("s1", 2),
                    StoreOp::Handled {
                        session: key("s1"),
                        cseq: 7,
                    },
                ]))
                .await?;
            tokio::time::timeout(PATIENCE, writer.flush()).await??;
            if check {
                assert!(
                    recorder.batches().contains(&vec![
                        "create s1".to_owned(),
                        "enqueue s1 1 durable=false".to_owned(),
                        "enqueue s1 2 durable=false".to_owned(),
                        "handled s1 7".to_owned(),
                    ]),
                    "{:?}",
                    recorder.batches()
                );
            }
            drop(writer);
            tokio::time::timeout(PATIENCE, task).await??;
        }
        let sessions = store.load_sessions().await?;
        assert_eq!((sessions[0].cseq, seqs(&sessions[0])), (7, vec![1, 2]));
        Ok(())
    }

    #[tokio::test]
    async fn acknowledged_entries_are_never_written() -> anyhow::Result<()> {
        // Against a recording store: the batch given to apply lacks the acknowledged entries.
        let recorder = Arc::new(RecordingStore::default());
        let (writer, task) = spawn_writer(recorder.clone(), slow_config());
        for op in [
            create("s1"),
            enqueue("s1", 1),
            enqueue("s1", 2),
            ack("s1", 1),
            enqueue("s1", 3),
            ack("s1", 2),
        ] {
            writer.submit(op).await?;
        }
        tokio::time::timeout(PATIENCE, writer.flush()).await??;
        assert_eq!(
            recorder.batches(),
            vec![vec![
                "create s1".to_owned(),
                "enqueue s1 3 durable=false".to_owned(),
                "ack s1 2".to_owned(),
            ]]
        );
        drop(writer);
        tokio::time::timeout(PATIENCE, task).await??;

        // Against SQLite: nothing up to the ack is loaded and acked_seq is updated.
        let dir = TempDir::new()?;
        let store = sqlite(&dir).await?;
        let (writer, task) = spawn_writer(store.clone(), slow_config());
        writer.submit(create("s1")).await?;
        for seq in 1..=10 {
            writer.submit(enqueue("s1", seq)).await?;
        }
        writer.submit(ack("s1", 7)).await?;
        tokio::time::timeout(PATIENCE, writer.flush()).await??;
        let sessions = store.load_sessions().await?;
        assert_eq!(sessions.len(), 1);
        assert_eq!(sessions[0].acked_seq, 7);
        assert_eq!(seqs(&sessions[0]), vec![8, 9, 10]);
        drop(writer);
        tokio::time::timeout(PATIENCE, task).await??;
        Ok(())
    }

    #[tokio::test]
    async fn enqueue_durable_waits_for_the_commit() -> anyhow::Result<()> {
        let dir = TempDir::new()?;
        let store = sqlite(&dir).await?;
        // With a long commit delay, only the durable notifier can end the batch early.
        let (writer, task) = spawn_writer(store.clone(), slow_config());
        writer.submit(create("s1")).await?;
        writer.submit(enqueue("s1", 1)).await?;
        tokio::time::timeout(
            PATIENCE,
            writer.enqueue_durable(key("s1"), 2, Arc::from("durable")),
        )
        .await??;
        let sessions = store.load_sessions().await?;
        assert_eq!(sessions.len(), 1);
        assert_eq!(
            sessions[0].outbox,
            vec![(1, "m1".to_owned()), (2, "durable".to_owned())]
        );

        // An entry acknowledged in the same batch is never written, but its waiter is released.
        // `try_submit` does not yield: both ops are queued before the writer runs again.
        let (durable, committed) = Settle::new();
        let durable_enqueue = StoreOp::Enqueue {
            session: key("s1"),
            seq: 3,
            json: Arc::from("acked"),
            durable: Some(durable),
            urgent: true,
        };
        assert!(writer.try_submit(durable_enqueue).is_ok());
        assert!(writer.try_submit(ack("s1", 3)).is_ok());
        tokio::time::timeout(PATIENCE, committed).await??;
        let sessions = store.load_sessions().await?;
        assert_eq!(sessions[0].acked_seq, 3);
        assert!(sessions[0].outbox.is_empty());

        drop(writer);
        tokio::time::timeout(PATIENCE, task).await??;
        Ok(())
    }

    #[tokio::test]
    async fn dropping_the_writer_commits_pending_ops() -> anyhow::Result<()> {
        let dir = TempDir::new()?;
        let store = sqlite(&dir).await?;
        let (writer, task) = spawn_writer(store.clone(), slow_config());
        let clone = writer.clone();
        writer.submit(create("s1")).await?;
        clone.submit(enqueue("s1", 1)).await?;
        clone.submit(enqueue("s1", 2)).await?;
        drop(writer);
        drop(clone);
        // Ends well before the commit delay, having committed the pending batch.
        tokio::time::timeout(PATIENCE, task).await??;
        store.close().await;
        drop(store);

        let store = SqliteStore::open(dir.path()).await?;
        let sessions = store.load_sessions().await?;
        assert_eq!(sessions.len(), 1);
        assert_eq!(seqs(&sessions[0]), vec![1, 2]);
        Ok(())
    }

    #[tokio::test]
    async fn failed_commits_are_retried_until_they_succeed() -> anyhow::Result<()> {
        let recorder = Arc::new(RecordingStore {
            failures: AtomicUsize::new(2),
            ..RecordingStore::default()
        });
        let (writer, task) = spawn_writer(recorder.clone(), slow_config());
        writer.submit(create("s1")).await?;
        tokio::time::timeout(
            PATIENCE,
            writer.enqueue_durable(key("s1"), 1, Arc::from("x")),
        )
        .await??;
        assert_eq!(recorder.attempts.load(Ordering::SeqCst), 3);
        assert_eq!(
            recorder.batches(),
            vec![vec![
                "create s1".to_owned(),
                "enqueue s1 1 durable=false".to_owned()
            ]]
        );
        drop(writer);
        tokio::time::timeout(PATIENCE, task).await??;
        Ok(())
    }

    #[tokio::test]
    async fn stopped_writer_is_reported() -> anyhow::Result<()> {
        let recorder = Arc::new(RecordingStore::default());
        let (writer, task) = spawn_writer(recorder, WriterConfig::default());
        task.abort();
        let _ = task.await;
        assert!(matches!(
            writer.submit(enqueue("s1", 1)).await,
            Err(StoreError::WriterStopped)
        ));
        assert!(matches!(
            writer.try_submit(enqueue("s1", 1)),
            Err(TrySubmitError::Stopped(StoreOp::Enqueue { seq: 1, .. }))
        ));
        Ok(())
    }

    #[test]
    fn try_submit_reports_a_full_queue() {
        let (tx, _rx) = mpsc::channel(1);
        let writer = StoreWriter { tx };
        assert!(writer.try_submit(enqueue("s1", 1)).is_ok());
        assert!(matches!(
            writer.try_submit(enqueue("s1", 2)),
            Err(TrySubmitError::Full(StoreOp::Enqueue { seq: 2, .. }))
        ));
    }

    #[test]
    fn coalesce_drops_what_later_ops_make_useless() {
        let (done, _flushed) = oneshot::channel();
        let (durable, _committed) = Settle::new();
        let mut batch = vec![
            create("a"),
            enqueue("a", 1),
            StoreOp::Enqueue {
                session: key("a"),
                seq: 2,
                json: Arc::from("x"),
                durable: Some(durable),
                urgent: true,
            },
            ack("a", 1),
            enqueue("b", 1),
            StoreOp::Flush { done },
            enqueue("a", 3),
            ack("a", 2),
            enqueue("c", 1),
            ack("c", 1),
            StoreOp::DeleteSession { id: key("c") },
            create("c"),
            enqueue("c", 1),
            ack("b", 0),
        ];
        let notifiers = coalesce(&mut batch);
        assert_eq!(notifiers.len(), 2);
        assert_eq!(
            batch.iter().map(describe).collect::<Vec<_>>(),
            vec![
                "create a",
                "enqueue b 1 durable=false",
                "enqueue a 3 durable=false",
                "ack a 2",
                "delete c",
                "create c",
                "enqueue c 1 durable=false",
                "ack b 0",
            ]
        );
    }

    #[test]
    fn coalesce_keeps_the_last_handled_of_each_session() {
        let handled = |id: &str, cseq| StoreOp::Handled {
            session: key(id),
            cseq,
        };
        let mut batch = vec![
            enqueue("n", 1),
            handled("n", 1),
            enqueue("n", 2),
            handled("m", 7),
            handled("n", 2),
            enqueue("n", 3),
            handled("n", 3),
            handled("m", 5),
        ];
        coalesce(&mut batch);
        assert_eq!(
            batch.iter().map(describe).collect::<Vec<_>>(),
            vec![
                "enqueue n 1 durable=false",
                "enqueue n 2 durable=false",
                "handled m 7",
                "enqueue n 3 durable=false",
                "handled n 3",
                "handled m 5",
            ]
        );
    }
}
