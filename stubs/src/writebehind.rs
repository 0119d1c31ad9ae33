//! Write-behind for a stub's key-value store ([`StubSpec::kv_write_behind`]): the guest's
//! `kv-set` and `kv-delete` return at once and are committed by a writer task, many calls'
//! writes in one [`KvStore::apply`] (one transaction), instead of one transaction each with the
//! guest waiting for it. What the guest does after a write does not reach anyone before that
//! write is committed, so a crash of the process at any point leaves the same states as
//! writing through would:
//!
//! - each write gets a ticket; the writer commits them in order and publishes the highest
//!   ticket committed. The writer is a task calling [`KvStore::apply`], or, for a store with a
//!   blocking writer of its own ([`KvStore::batches`]: the node's SQLite file), a thread that
//!   the writes wake and that commits in place: no hand-off to a database thread and back
//!   for each batch;
//! - an effect of the instance waits for every write issued before it ([`WriteBehind::barrier`]):
//!   a WebSocket frame or close is held by the socket's writer (`net.rs`), an HTTP request by
//!   its task, `bus.send` and the `appservice` calls by the call itself, as do `kv-get` and
//!   `kv-keys` (which read the store);
//! - a commit that fails (the store's failure, or its quota check) loses the writes not yet
//!   committed: they are discarded, every effect waiting for one of them is dropped (a socket
//!   closes with 1011 without writing it), the instance's next import that needs the store
//!   traps it, and the supervisor's next instance starts from what was committed
//!   ([`WriteBehind::reset`]);
//! - a new instance (after a trap, a failure or a restart) starts once every write of the
//!   instances before it is committed or discarded ([`WriteBehind::reset`]), so its `init`
//!   reads what they left, as it would had they written through;
//! - the quota is checked at once against an upper bound (the total after the last commit
//!   plus every value written since, replaced values not taken off), so a write the store
//!   would refuse is refused with 413 as before; near the quota a write may be refused that
//!   writing through would have taken;
//! - deletes are bounded too: past the quota's bytes of keys queued, a `kv-delete` waits for
//!   the writer's commit (and a key longer than `kv-set` allows is not queued at all);
//! - writes of the same key in one batch are folded into the last one;
//! - when the stub stops, the writer commits what is queued before [`StubHandle::stop`]
//!   returns.
//!
//! [`StubSpec::kv_write_behind`]: crate::StubSpec::kv_write_behind
//! [`StubHandle::stop`]: crate::StubHandle::stop

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch};

use crate::error::Failure;
use crate::port::{BoxFuture, KvBatches, KvOp, KvStore, within_quota};

/// Writes committed in one batch, at most.
const MAX_BATCH: usize = 4096;

/// What the writer has done: the highest ticket committed, and the tickets the latest failure
/// discarded (`lost.0 < t <= lost.1`).
#[derive(Debug, Clone, Copy, Default)]
struct Durable {
    committed: u64,
    lost: (u64, u64),
}

impl Durable {
    /// `Some(true)` once ticket `t` is committed, `Some(false)` if it was discarded, `None`
    /// while it waits.
    fn outcome(&self, t: u64) -> Option<bool> {
        if self.lost.0 < t && t <= self.lost.1 {
            Some(false)
        } else if self.committed >= t {
            Some(true)
        } else {
            None
        }
    }
}

#[derive(Debug, Default)]
struct Books {
    /// The last ticket given.
    issued: u64,
    /// The stub's total after the last commit (`None` until read).
    total: Option<usize>,
    /// Bytes (key and value) of the writes given and not yet committed.
    pending: usize,
    /// Bytes of the keys of the deletes given and not yet committed.
    deleting: usize,
    /// A commit failed: writes are refused until [`WriteBehind::reset`].
    poisoned: bool,
    /// The last ticket of the instances before the current one (their outcome is not the
    /// current one's concern).
    floor: u64,
}

/// The write-behind queue of one stub.
#[derive(Debug)]
pub(crate) struct WriteBehind {
    stub: String,
    kv: Arc<dyn KvStore>,
    max_total: usize,
    books: Mutex<Books>,
    queue: Mutex<Option<mpsc::UnboundedSender<(u64, KvOp)>>>,
    durable: watch::Sender<Durable>,
}

/// Why a write-behind call cannot go on: the instance is trapped with it.
#[derive(Debug, thiserror::Error)]
#[error("stub {0}: a write to its key-value store was not committed")]
pub(crate) struct Lost(String);

/// An effect's wait for the writes issued before it.
#[derive(Debug, Clone)]
pub(crate) struct Barrier {
    ticket: u64,
    durable: watch::Receiver<Durable>,
}

impl Barrier {
    /// Whether it has nothing more to wait for.
    pub(crate) fn is_done(&self) -> bool {
        self.durable.borrow().outcome(self.ticket).is_some()
    }

    /// True once every write before it is committed; false if one was discarded (the effect
    /// must not happen).
    pub(crate) async fn wait(mut self) -> bool {
        let t = self.ticket;
        match self.durable.wait_for(|d| d.outcome(t).is_some()).await {
            Ok(d) => d.outcome(t) == Some(true),
            Err(_) => false,
        }
    }
}

fn lock(m: &Mutex<Books>) -> std::sync::MutexGuard<'_, Books> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl WriteBehind {
    /// The queue of `stub` over `kv`, and its writer task (to be spawned; it ends once
    /// [`WriteBehind::close`] was called and the queue is committed).
    pub(crate) fn new(
        stub: &str,
        kv: Arc<dyn KvStore>,
        max_total: usize,
    ) -> (Arc<Self>, impl Future<Output = ()> + Send + 'static) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (durable, _) = watch::channel(Durable::default());
        let batches = kv.batches();
        let wb = Arc::new(Self {
            stub: stub.to_owned(),
            kv,
            max_total,
            books: Mutex::new(Books::default()),
            queue: Mutex::new(Some(tx)),
            durable,
        });
        let writer: BoxFuture<'static, ()> = match batches {
            // The store commits on the calling thread: a thread of its own, which the stub's
            // writes wake directly and which wakes the effects waiting for them directly.
            Some(batches) => {
                let (ended, end) = tokio::sync::oneshot::channel::<()>();
                // Weak: the queue's sender lives in the `WriteBehind`, so once it is gone (its
                // stub ended without `close`, say) the queue ends and so does the thread.
                let writing = Arc::downgrade(&wb);
                std::thread::Builder::new()
                    .name("stub-kv-writer".into())
                    .spawn(move || {
                        Self::write_blocking(&writing, batches, rx);
                        let _ = ended.send(());
                    })
                    .expect("the stub's key-value writer thread starts");
                Box::pin(async move {
                    let _ = end.await;
                })
            }
            None => Box::pin(Arc::clone(&wb).write(rx)),
        };
        (wb, writer)
    }

    /// No more writes: the writer ends once it has committed what is queued.
    pub(crate) fn close(&self) {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// A new instance starts: waits until every write of the instances before it is committed
    /// or discarded, so that what the new one reads (its `init` first) is what they left;
    /// then writes are taken again after a failure (the discarded ones stay lost).
    pub(crate) async fn reset(&self) {
        let issued = lock(&self.books).issued;
        let mut durable = self.durable.subscribe();
        // The sender lives in `self`: the wait ends with the writer's outcome for `issued`.
        let _ = durable.wait_for(|d| d.outcome(issued).is_some()).await;
        let mut b = lock(&self.books);
        b.poisoned = false;
        b.total = None;
        b.floor = b.issued;
    }

    /// What an effect issued now must wait for; `None` when every write of the instance is
    /// committed. After a failed commit, a barrier that fails.
    pub(crate) fn barrier(&self) -> Option<Barrier> {
        let b = lock(&self.books);
        let ticket = b.issued;
        if !b.poisoned && ticket <= b.floor {
            return None;
        }
        drop(b);
        let durable = self.durable.subscribe();
        if durable.borrow().outcome(ticket) == Some(true) {
            return None;
        }
        Some(Barrier { ticket, durable })
    }

    /// Waits until every write given so far is committed (before a read, or an effect made
    /// in the call). `Err` if one was discarded: the instance must end.
    pub(crate) async fn flush(&self) -> Result<(), Lost> {
        if lock(&self.books).poisoned {
            return Err(Lost(self.stub.clone()));
        }
        match self.barrier() {
            None => Ok(()),
            Some(b) => {
                if b.wait().await {
                    Ok(())
                } else {
                    Err(Lost(self.stub.clone()))
                }
            }
        }
    }

    /// Queues `key` = `value`. `Ok(Err)`: refused (413 over the quota, 503 when the store
    /// cannot say how much it holds), nothing queued.
    pub(crate) async fn set(
        &self,
        key: String,
        value: Vec<u8>,
    ) -> Result<Result<(), Failure>, Lost> {
        let size = key.len() + value.len();
        if lock(&self.books).total.is_none() {
            // The total is read once per instance: after the writes before it.
            self.flush().await?;
            match self.kv.apply(&self.stub, &[], self.max_total).await {
                Ok(total) => lock(&self.books).total = Some(total),
                Err(f) => return Ok(Err(f)),
            }
        }
        let mut b = lock(&self.books);
        if b.poisoned {
            return Err(Lost(self.stub.clone()));
        }
        let bound = b.total.unwrap_or(0) + b.pending + size;
        if let Err(f) = within_quota(bound, self.max_total) {
            return Ok(Err(f));
        }
        b.pending += size;
        self.enqueue(&mut b, KvOp::Set { key, value })?;
        Ok(Ok(()))
    }

    /// Queues the deletion of `key`. The keys of the deletes queued stay within the stub's
    /// quota in bytes: past it, the writer's commit of what is queued is waited for first (a
    /// stub deleting in a loop is paced by the store, as a stub writing is by its quota).
    pub(crate) async fn delete(&self, key: String) -> Result<(), Lost> {
        let over = lock(&self.books).deleting + key.len() > self.max_total;
        if over {
            self.flush().await?;
        }
        let mut b = lock(&self.books);
        if b.poisoned {
            return Err(Lost(self.stub.clone()));
        }
        b.deleting += key.len();
        self.enqueue(&mut b, KvOp::Delete { key })
    }

    fn enqueue(&self, b: &mut Books, op: KvOp) -> Result<(), Lost> {
        let queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let sent = queue
            .as_ref()
            .is_some_and(|q| q.send((b.issued + 1, op)).is_ok());
        if !sent {
            return Err(Lost(self.stub.clone()));
        }
        b.issued += 1;
        Ok(())
    }

    /// The writer: commits what is queued, in batches, until closed.
    async fn write(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<(u64, KvOp)>) {
        let mut batch = Vec::new();
        while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
            let (last, added, ops) = take(&mut batch);
            let result = self.kv.apply(&self.stub, &ops, self.max_total).await;
            self.committed(last, added, result, &mut rx);
        }
    }

    /// As [`WriteBehind::write`], on a thread of its own, with the store's blocking writer.
    fn write_blocking(
        writing: &std::sync::Weak<Self>,
        mut batches: Box<dyn KvBatches>,
        mut rx: mpsc::UnboundedReceiver<(u64, KvOp)>,
    ) {
        let mut batch = Vec::new();
        while let Some(first) = rx.blocking_recv() {
            let Some(wb) = writing.upgrade() else {
                return;
            };
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(write) => batch.push(write),
                    Err(_) => break,
                }
            }
            let (last, added, ops) = take(&mut batch);
            let result = batches.apply(&wb.stub, &ops, wb.max_total);
            wb.committed(last, added, result, &mut rx);
        }
    }

    /// Publishes the outcome of the batch of tickets up to `last` (`added`: the bytes its sets
    /// added, and its deletes' keys).
    fn committed(
        &self,
        last: u64,
        added: (usize, usize),
        result: Result<usize, Failure>,
        rx: &mut mpsc::UnboundedReceiver<(u64, KvOp)>,
    ) {
        let mut b = lock(&self.books);
        b.pending = b.pending.saturating_sub(added.0);
        b.deleting = b.deleting.saturating_sub(added.1);
        match result {
            Ok(total) => {
                if b.total.is_some() {
                    b.total = Some(total);
                }
                drop(b);
                self.durable.send_modify(|d| d.committed = last);
            }
            Err(f) => {
                // What is queued behind the failed batch builds on it: discarded too.
                let mut lost_to = last;
                while let Ok((t, _)) = rx.try_recv() {
                    lost_to = t;
                }
                b.poisoned = true;
                b.pending = 0;
                b.deleting = 0;
                drop(b);
                tracing::error!(stub = %self.stub, code = f.code, error = %f.description, writes = lost_to - self.durable.borrow().committed, "the stub's key-value writes were not committed: its instance restarts from what was");
                self.durable
                    .send_modify(|d| d.lost = (d.committed, lost_to));
            }
        }
    }
}

/// Takes a batch of queued writes: its last ticket, the bytes its sets added and its deletes'
/// keys, its ops folded.
fn take(batch: &mut Vec<(u64, KvOp)>) -> (u64, (usize, usize), Vec<KvOp>) {
    let last = batch.last().map_or(0, |(t, _)| *t);
    let mut added = (0, 0);
    for (_, op) in batch.iter() {
        match op {
            KvOp::Set { key, value } => added.0 += key.len() + value.len(),
            KvOp::Delete { key } => added.1 += key.len(),
        }
    }
    (last, added, fold(batch.drain(..).map(|(_, op)| op)))
}

/// The batch's writes with each key's last one only (one transaction: the order of different
/// keys does not matter).
fn fold(ops: impl Iterator<Item = KvOp>) -> Vec<KvOp> {
    let mut out: Vec<KvOp> = Vec::new();
    let mut at: HashMap<String, usize> = HashMap::new();
    for op in ops {
        match at.get(op.key()) {
            Some(&i) => out[i] = op,
            None => {
                at.insert(op.key().to_owned(), out.len());
                out.push(op);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::MemoryKv;

    #[test]
    fn a_batch_keeps_each_keys_last_write() {
        let set = |k: &str, v: u8| KvOp::Set {
            key: k.into(),
            value: vec![v],
        };
        let del = |k: &str| KvOp::Delete { key: k.into() };
        let folded = fold([set("a", 1), set("b", 1), del("a"), set("b", 2)].into_iter());
        assert_eq!(folded, vec![del("a"), set("b", 2)]);
    }

    #[tokio::test]
    async fn effects_wait_for_the_writes_before_them() {
        let kv: Arc<dyn KvStore> = Arc::new(MemoryKv::default());
        let (wb, writer) = WriteBehind::new("s", Arc::clone(&kv), 1 << 20);
        assert!(wb.barrier().is_none(), "nothing written yet");
        wb.set("k".into(), b"v".to_vec()).await.unwrap().unwrap();
        let barrier = wb.barrier().expect("a write is queued");
        assert_eq!(
            kv.get("s", "k").await.unwrap(),
            None,
            "not committed before the writer runs"
        );
        let task = tokio::spawn(writer);
        assert!(barrier.wait().await);
        assert_eq!(kv.get("s", "k").await.unwrap().as_deref(), Some(&b"v"[..]));
        wb.close();
        task.await.unwrap();
    }

    /// Deletes hold their keys until committed: past the quota's bytes of keys queued, the next
    /// delete waits for the writer.
    #[tokio::test]
    async fn queued_deletes_stay_within_the_quota_and_then_wait_for_the_writer() {
        use futures_util::FutureExt;
        let kv: Arc<dyn KvStore> = Arc::new(MemoryKv::default());
        let (wb, writer) = WriteBehind::new("s", Arc::clone(&kv), 1000);
        let key = |i: usize| format!("{i:0>100}");
        for i in 0..10 {
            wb.delete(key(i))
                .now_or_never()
                .expect("within the bound: queued at once")
                .unwrap();
        }
        // The writer has not run: 1,000 bytes of keys wait, the next one waits for it.
        let mut next = Box::pin(wb.delete(key(10)));
        assert!((&mut next).now_or_never().is_none(), "waits for the writer");
        let task = tokio::spawn(writer);
        next.await.unwrap();
        wb.close();
        task.await.unwrap();
    }

    /// A new instance (after a trap) starts once the writes of the one before are committed:
    /// its `init` reads them.
    #[tokio::test]
    async fn a_new_instance_starts_after_the_writes_of_the_one_before() {
        use futures_util::FutureExt;
        let kv: Arc<dyn KvStore> = Arc::new(MemoryKv::default());
        let (wb, writer) = WriteBehind::new("s", Arc::clone(&kv), 1 << 20);
        wb.set("k".into(), b"v".to_vec()).await.unwrap().unwrap();
        // The instance traps here; the writer has not run.
        let mut reset = Box::pin(wb.reset());
        assert!(
            (&mut reset).now_or_never().is_none(),
            "the next instance waits for the write"
        );
        let task = tokio::spawn(writer);
        reset.await;
        wb.flush().await.unwrap();
        assert_eq!(kv.get("s", "k").await.unwrap().as_deref(), Some(&b"v"[..]));
        wb.close();
        task.await.unwrap();
    }

    /// A memory store with a blocking batch writer (on the test's runtime).
    #[derive(Debug)]
    struct Blocking(Arc<MemoryKv>, tokio::runtime::Handle);

    struct BlockingBatches(Arc<MemoryKv>, tokio::runtime::Handle);

    impl KvBatches for BlockingBatches {
        fn apply(&mut self, stub: &str, ops: &[KvOp], max_total: usize) -> Result<usize, Failure> {
            self.1.block_on(self.0.apply(stub, ops, max_total))
        }
    }

    impl KvStore for Blocking {
        fn get<'a>(
            &'a self,
            stub: &'a str,
            key: &'a str,
        ) -> BoxFuture<'a, Result<Option<Vec<u8>>, Failure>> {
            self.0.get(stub, key)
        }
        fn set<'a>(
            &'a self,
            stub: &'a str,
            key: &'a str,
            value: Vec<u8>,
            max_total: usize,
        ) -> BoxFuture<'a, Result<(), Failure>> {
            self.0.set(stub, key, value, max_total)
        }
        fn delete<'a>(&'a self, stub: &'a str, key: &'a str) -> BoxFuture<'a, Result<(), Failure>> {
            self.0.delete(stub, key)
        }
        fn keys<'a>(
            &'a self,
            stub: &'a str,
            prefix: &'a str,
            limit: u32,
        ) -> BoxFuture<'a, Result<Vec<String>, Failure>> {
            self.0.keys(stub, prefix, limit)
        }
        fn apply<'a>(
            &'a self,
            stub: &'a str,
            ops: &'a [KvOp],
            max_total: usize,
        ) -> BoxFuture<'a, Result<usize, Failure>> {
            self.0.apply(stub, ops, max_total)
        }
        fn batches(&self) -> Option<Box<dyn KvBatches>> {
            Some(Box::new(BlockingBatches(
                Arc::clone(&self.0),
                self.1.clone(),
            )))
        }
    }

    /// The writer thread commits, and ends once the write-behind is gone even if nobody
    /// closed it (it holds no strong reference: the queue's sender goes with it).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writer_thread_commits_and_ends_with_the_write_behind() {
        let memory = Arc::new(MemoryKv::default());
        let kv: Arc<dyn KvStore> = Arc::new(Blocking(
            Arc::clone(&memory),
            tokio::runtime::Handle::current(),
        ));
        let (wb, writer) = WriteBehind::new("s", kv, 1 << 20);
        let writer = tokio::spawn(writer);
        wb.set("k".into(), b"v".to_vec()).await.unwrap().unwrap();
        assert!(wb.barrier().expect("a write is queued").wait().await);
        assert_eq!(
            memory.get("s", "k").await.unwrap().as_deref(),
            Some(&b"v"[..])
        );
        drop(wb);
        tokio::time::timeout(std::time::Duration::from_secs(10), writer)
            .await
            .expect("the writer ends with the write-behind")
            .expect("the writer's task");
    }

    #[tokio::test]
    async fn the_quota_counts_what_is_not_committed_yet() {
        let kv: Arc<dyn KvStore> = Arc::new(MemoryKv::default());
        let (wb, _writer) = WriteBehind::new("s", kv, 20);
        // "k1" + 8 bytes = 10, twice: 20 (the overwrite is counted again until committed).
        wb.set("k1".into(), vec![0; 8]).await.unwrap().unwrap();
        wb.set("k1".into(), vec![0; 8]).await.unwrap().unwrap();
        let refused = wb.set("k2".into(), vec![0; 1]).await.unwrap();
        assert_eq!(refused.map_err(|f| f.code), Err(413));
    }
}
