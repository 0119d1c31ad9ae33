//! What the host needs from its embedder: [`BusPort`] (the message bus a stub is attached to)
//! and [`KvStore`] (each stub's key-value namespace), with [`MemoryKv`], an in-memory store for
//! tests and embedders without persistence, and [`FailingKv`], a test double of a store whose
//! database goes away.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use rethink_proto::Envelope;

use crate::error::{Failure, LostReason};

/// A boxed future, for the async methods of object-safe traits.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The bus a stub sends to and listens on. The node implements it; every call is
/// non-blocking (the guest is waiting).
pub trait BusPort: Send + Sync + std::fmt::Debug {
    /// Accepts `message` from `stub` for routing (not: delivered). The bus answers routing
    /// failures as responses delivered to the stub later. `Err` refuses it at once (403 for a
    /// `from` not given to the stub, 503 when the outgoing queue is full).
    fn send(&self, stub: &str, message: Envelope) -> Result<(), Failure>;

    /// Delivers messages for `address` (and the addresses below it) to `stub`.
    fn add_listener(&self, stub: &str, address: &str) -> Result<(), Failure>;

    /// Stops delivering messages for `address` to `stub`.
    fn remove_listener(&self, stub: &str, address: &str);

    /// `message`, accepted by `stub`'s mailbox, was lost: its sender is owed an answer with
    /// `reason.code()` naming the stub.
    fn lost(&self, stub: &str, message: Envelope, reason: LostReason);

    /// Resolves once `stub` may be given another message: its outgoing queue has room for
    /// what one call may send, so that the answers to a message are not refused with 503
    /// because messages came in faster than the bus takes the answers. The host awaits it
    /// before each `on-message` (messages meanwhile wait in the mailbox, then with the
    /// embedder). Cancel safe. At once by default (an embedder whose `send` never refuses
    /// for room).
    fn ready<'a>(&'a self, _stub: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(std::future::ready(()))
    }
}

/// Each stub's own key-value namespace. Every call says when the store could not answer (`Err`,
/// 503: a database unreachable): a read that failed is never taken for an absent key, nor a
/// delete that failed for a done one (the host traps the instance that asked; the supervisor's
/// next one reads again).
pub trait KvStore: Send + Sync + std::fmt::Debug {
    /// The value under `key` in `stub`'s namespace.
    fn get<'a>(
        &'a self,
        stub: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, Failure>>;
    /// Stores `value` (the host has checked the bounds of key and value).
    fn set<'a>(
        &'a self,
        stub: &'a str,
        key: &'a str,
        value: Vec<u8>,
        max_total: usize,
    ) -> BoxFuture<'a, Result<(), Failure>>;
    /// Removes `key`.
    fn delete<'a>(&'a self, stub: &'a str, key: &'a str) -> BoxFuture<'a, Result<(), Failure>>;
    /// The keys starting with `prefix`, in byte order, at most `limit`.
    fn keys<'a>(
        &'a self,
        stub: &'a str,
        prefix: &'a str,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<String>, Failure>>;
    /// Applies `ops` in order, all or none (one transaction), and returns the bytes `stub`
    /// holds after them; refused (413, nothing applied) when that is over `max_total`. With
    /// no ops: the bytes held now. The host's write-behind (`writebehind.rs`) commits with it.
    fn apply<'a>(
        &'a self,
        stub: &'a str,
        ops: &'a [KvOp],
        max_total: usize,
    ) -> BoxFuture<'a, Result<usize, Failure>>;

    /// A writer of batches of its own that commits on the calling thread, if this store has
    /// one (an embedded database: the host's write-behind then commits from a thread of its own,
    /// with no hand-off to another thread and back for each batch). `None` by default: the
    /// write-behind uses [`KvStore::apply`].
    fn batches(&self) -> Option<Box<dyn KvBatches>> {
        None
    }
}

/// A blocking writer of batches ([`KvStore::batches`]), used by one thread.
pub trait KvBatches: Send {
    /// As [`KvStore::apply`], on the calling thread.
    fn apply(&mut self, stub: &str, ops: &[KvOp], max_total: usize) -> Result<usize, Failure>;
}

/// One write of a batch ([`KvStore::apply`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvOp {
    Set { key: String, value: Vec<u8> },
    Delete { key: String },
}

impl KvOp {
    /// The key this write is about.
    pub fn key(&self) -> &str {
        match self {
            KvOp::Set { key, .. } | KvOp::Delete { key } => key,
        }
    }
}

/// An in-memory [`KvStore`]: lost when the process ends.
#[derive(Debug, Default)]
pub struct MemoryKv {
    spaces: Mutex<HashMap<String, Space>>,
}

/// One stub's namespace, with the bytes it holds (keys and values), kept as it changes so that
/// a write checks the quota without a scan.
#[derive(Debug, Default)]
struct Space {
    entries: BTreeMap<String, Vec<u8>>,
    total: usize,
}

/// A test double of a [`KvStore`] whose database goes away (for the host's own tests and its
/// embedders'; not a stand-in for a third party): a [`MemoryKv`] whose next reads (`get`) or
/// writes (`set`, `apply` of a non-empty batch) fail once armed ([`FailingKv::fail_reads`],
/// [`FailingKv::fail_writes`]), with 503 or the code of [`FailingKv::fail_with`].
#[derive(Debug, Default)]
pub struct FailingKv {
    memory: MemoryKv,
    failing: AtomicU32,
    failing_writes: AtomicU32,
    /// The code the failures answer (0: 503).
    code: std::sync::atomic::AtomicU16,
}

/// Takes one from `n` if it is not 0: whether the call fails.
fn take_failure(n: &AtomicU32) -> bool {
    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

/// What a [`FailingKv`] answers a call that fails, with `code`.
fn gone<T: Send + 'static>(code: u16) -> BoxFuture<'static, Result<T, Failure>> {
    Box::pin(std::future::ready(Err(Failure::new(
        code,
        "the store failed (FailingKv)",
    ))))
}

impl FailingKv {
    /// The next `n` reads fail.
    pub fn fail_reads(&self, n: u32) {
        self.failing.store(n, Ordering::SeqCst);
    }

    /// The failures answer `code` (503 by default: the database gone; another code is a
    /// failure of the store that is not an outage).
    pub fn fail_with(&self, code: u16) {
        self.code.store(code, Ordering::SeqCst);
    }

    fn failure_code(&self) -> u16 {
        match self.code.load(Ordering::SeqCst) {
            0 => 503,
            code => code,
        }
    }

    /// The next `n` writes fail.
    pub fn fail_writes(&self, n: u32) {
        self.failing_writes.store(n, Ordering::SeqCst);
    }

    /// How many of the next reads will still fail.
    pub fn reads_to_fail(&self) -> u32 {
        self.failing.load(Ordering::SeqCst)
    }

    /// The store behind it (reads it without failing).
    pub fn memory(&self) -> &MemoryKv {
        &self.memory
    }
}

impl KvStore for FailingKv {
    fn get<'a>(
        &'a self,
        stub: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, Failure>> {
        if take_failure(&self.failing) {
            return gone(self.failure_code());
        }
        self.memory.get(stub, key)
    }
    fn set<'a>(
        &'a self,
        stub: &'a str,
        key: &'a str,
        value: Vec<u8>,
        max_total: usize,
    ) -> BoxFuture<'a, Result<(), Failure>> {
        if take_failure(&self.failing_writes) {
            return gone(self.failure_code());
        }
        self.memory.set(stub, key, value, max_total)
    }
    fn delete<'a>(&'a self, stub: &'a str, key: &'a str) -> BoxFuture<'a, Result<(), Failure>> {
        self.memory.delete(stub, key)
    }
    fn keys<'a>(
        &'a self,
        stub: &'a str,
        prefix: &'a str,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<String>, Failure>> {
        self.memory.keys(stub, prefix, limit)
    }
    fn apply<'a>(
        &'a self,
        stub: &'a str,
        ops: &'a [KvOp],
        max_total: usize,
    ) -> BoxFuture<'a, Result<usize, Failure>> {
        if !ops.is_empty() && take_failure(&self.failing_writes) {
            return gone(self.failure_code());
        }
        self.memory.apply(stub, ops, max_total)
    }
}

/// The one check of a stub's store size, for every [`KvStore`]: 413 when the store would hold
/// more than `max_total` bytes (keys and values) after a write.
pub fn within_quota(total_after: usize, max_total: usize) -> Result<(), Failure> {
    if total_after > max_total {
        return Err(Failure::new(
            413,
            format!("the stub's store is limited to {max_total} bytes"),
        ));
    }
    Ok(())
}

impl MemoryKv {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, Space>) -> R) -> R {
        let mut guard = self.spaces.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }
}

impl KvStore for MemoryKv {
    fn get<'a>(
        &'a self,
        stub: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, Failure>> {
        let v = self.with(|s| s.get(stub).and_then(|m| m.entries.get(key)).cloned());
        Box::pin(std::future::ready(Ok(v)))
    }

    fn set<'a>(
        &'a self,
        stub: &'a str,
        key: &'a str,
        value: Vec<u8>,
        max_total: usize,
    ) -> BoxFuture<'a, Result<(), Failure>> {
        let r = self.with(|s| {
            if !s.contains_key(stub) {
                s.insert(stub.to_owned(), Space::default());
            }
            let Some(space) = s.get_mut(stub) else {
                return Ok(());
            };
            let old = space.entries.get(key).map_or(0, |v| key.len() + v.len());
            let total = space.total - old + key.len() + value.len();
            within_quota(total, max_total)?;
            space.total = total;
            match space.entries.get_mut(key) {
                Some(v) => *v = value,
                None => {
                    space.entries.insert(key.to_owned(), value);
                }
            }
            Ok(())
        });
        Box::pin(std::future::ready(r))
    }

    fn delete<'a>(&'a self, stub: &'a str, key: &'a str) -> BoxFuture<'a, Result<(), Failure>> {
        self.with(|s| {
            if let Some(space) = s.get_mut(stub)
                && let Some(v) = space.entries.remove(key)
            {
                space.total -= key.len() + v.len();
            }
        });
        Box::pin(std::future::ready(Ok(())))
    }

    fn keys<'a>(
        &'a self,
        stub: &'a str,
        prefix: &'a str,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<String>, Failure>> {
        let keys = self.with(|s| {
            s.get(stub).map_or_else(Vec::new, |m| {
                m.entries
                    .range(prefix.to_owned()..)
                    .take_while(|(k, _)| k.starts_with(prefix))
                    .take(limit as usize)
                    .map(|(k, _)| k.clone())
                    .collect()
            })
        });
        Box::pin(std::future::ready(Ok(keys)))
    }

    fn apply<'a>(
        &'a self,
        stub: &'a str,
        ops: &'a [KvOp],
        max_total: usize,
    ) -> BoxFuture<'a, Result<usize, Failure>> {
        let r = self.with(|s| {
            let space = s.entry(stub.to_owned()).or_default();
            // The total after the batch, checked before anything is applied.
            let mut total = space.total;
            let mut after: HashMap<&str, usize> = HashMap::new();
            for op in ops {
                let (key, new) = match op {
                    KvOp::Set { key, value } => (key.as_str(), key.len() + value.len()),
                    KvOp::Delete { key } => (key.as_str(), 0),
                };
                let old = match after.get(key) {
                    Some(&size) => size,
                    None => space.entries.get(key).map_or(0, |v| key.len() + v.len()),
                };
                total = total - old + new;
                after.insert(key, new);
            }
            within_quota(total, max_total)?;
            for op in ops {
                match op {
                    KvOp::Set { key, value } => {
                        space.entries.insert(key.clone(), value.clone());
                    }
                    KvOp::Delete { key } => {
                        space.entries.remove(key);
                    }
                }
            }
            space.total = total;
            Ok(total)
        });
        Box::pin(std::future::ready(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now<T>(f: BoxFuture<'_, T>) -> T {
        ready(f)
    }

    /// The memory store's futures are ready at once.
    fn ready<T>(mut f: BoxFuture<'_, T>) -> T {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => unreachable!("the memory store never waits"),
        }
    }

    #[test]
    fn the_quota_counts_overwrites_and_deletes() {
        let kv = MemoryKv::default();
        // "k1" + 8 bytes = 10; the limit is 20.
        assert!(now(kv.set("s", "k1", vec![0; 8], 20)).is_ok());
        // Overwriting replaces the old size: 10, not 20.
        assert!(now(kv.set("s", "k1", vec![1; 8], 20)).is_ok());
        assert!(now(kv.set("s", "k2", vec![0; 8], 20)).is_ok());
        let full = now(kv.set("s", "k3", vec![0; 1], 20));
        assert_eq!(full.map_err(|f| f.code), Err(413));
        // Another stub's namespace has its own total.
        assert!(now(kv.set("t", "k3", vec![0; 1], 20)).is_ok());
        now(kv.delete("s", "k1")).unwrap();
        assert!(now(kv.set("s", "k3", vec![0; 8], 20)).is_ok());
        assert_eq!(now(kv.get("s", "k1")), Ok(None));
        assert_eq!(now(kv.keys("s", "k", 10)).unwrap(), vec!["k2", "k3"]);
    }
}
