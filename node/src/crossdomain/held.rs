//! [`HeldKv`]: the key-value store of another domain's stub, seen through the gateway, which
//! learns from it how far the stub durably holds the gateway's messages ([`Held`]: what the
//! gateway's pump acknowledges its outbox up to). This is the fast way, for a stub that knows
//! the contract below (ours); for any other, `tap.rs` raises [`Held`] from what the other node
//! confirms it handled.
//!
//! The gateway numbers each message it hands to the stub with a top-level `gseq` (its outbox
//! position). Our `default` stub (`stubs/guests/default/src/store.rs`) stores every message it
//! takes, and its session record, with a top-level `"g": N` meaning "every message up to N is
//! held (stored, or answered)". Once such a write is committed, the gateway may acknowledge
//! its outbox up to N: the message then lives in the stub's store until the other node
//! confirms it handled it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rethink_stubs::{BoxFuture, Failure, KvBatches, KvOp, KvStore};
use serde::Deserialize;
use tokio::sync::watch;

/// The key of our `default` stub's session record, which carries its `g`.
const SESSION_KEY: &str = "session";

/// How far the stub holds the gateway's messages: the highest outbox position, raised by its
/// records (`g`) or by what the other node confirmed (`tap.rs`).
#[derive(Debug)]
pub(super) struct Held {
    tx: watch::Sender<u64>,
    /// Whether the stub's records ever said a `g` above 0 (it knows the contract).
    by_records: AtomicBool,
}

impl Held {
    /// Everything up to outbox position `g` is held.
    pub(super) fn raise(&self, g: u64) {
        self.tx.send_if_modified(|h| {
            let raised = g > *h;
            *h = (*h).max(g);
            raised
        });
    }

    /// The highest position held.
    pub(super) fn get(&self) -> u64 {
        *self.tx.borrow()
    }

    /// A fresh one at 0, and its receiver.
    #[cfg(test)]
    pub(super) fn for_tests() -> (Arc<Self>, watch::Receiver<u64>) {
        let (tx, rx) = watch::channel(0);
        let held = Self {
            tx,
            by_records: AtomicBool::new(false),
        };
        (Arc::new(held), rx)
    }

    /// Whether the stub reports what it holds in its records (then nothing else is needed).
    pub(super) fn by_records(&self) -> bool {
        self.by_records.load(Ordering::Relaxed)
    }
}

/// The stub's store, reporting the highest `g` written.
#[derive(Debug)]
pub(super) struct HeldKv {
    inner: Arc<dyn KvStore>,
    held: Arc<Held>,
}

#[derive(Deserialize)]
struct Record {
    g: Option<u64>,
}

impl HeldKv {
    /// Over `inner`; the receiver sees the highest `g` committed, starting from what the
    /// stub's session record (`SESSION_KEY`) of `stub` says it holds already (a restarted
    /// stub ignores the replays of those, so they are acknowledged without a new write).
    /// `Err` when the store cannot be read (the gateway does not start: 503 to its senders).
    pub(super) async fn new(
        inner: Arc<dyn KvStore>,
        stub: &str,
    ) -> Result<(Self, Arc<Held>, watch::Receiver<u64>), Failure> {
        let start = inner
            .get(stub, SESSION_KEY)
            .await?
            .as_deref()
            .and_then(held_of)
            .unwrap_or(0);
        let (tx, rx) = watch::channel(start);
        let held = Arc::new(Held {
            tx,
            by_records: AtomicBool::new(start > 0),
        });
        Ok((
            Self {
                inner,
                held: Arc::clone(&held),
            },
            held,
            rx,
        ))
    }
}

impl Held {
    /// Once a write of `g` is committed: the stub holds everything up to it.
    fn raise_by_record(&self, g: Option<u64>) {
        if let Some(g) = g.filter(|g| *g > 0) {
            self.by_records.store(true, Ordering::Relaxed);
            self.raise(g);
        }
    }
}

/// The highest top-level `g` a batch writes.
fn batch_g(ops: &[KvOp]) -> Option<u64> {
    ops.iter()
        .filter_map(|op| match op {
            KvOp::Set { value, .. } => held_of(value),
            KvOp::Delete { .. } => None,
        })
        .max()
}

/// The inner store's blocking batch writer, reporting the highest `g` committed.
struct HeldBatches {
    inner: Box<dyn KvBatches>,
    held: Arc<Held>,
}

impl KvBatches for HeldBatches {
    fn apply(&mut self, stub: &str, ops: &[KvOp], max_total: usize) -> Result<usize, Failure> {
        let g = batch_g(ops);
        let total = self.inner.apply(stub, ops, max_total)?;
        self.held.raise_by_record(g);
        Ok(total)
    }
}

/// The top-level `g` of a stored value, if it is a JSON object with one.
fn held_of(value: &[u8]) -> Option<u64> {
    if !value.starts_with(b"{") {
        return None;
    }
    serde_json::from_slice::<Record>(value).ok()?.g
}

impl KvStore for HeldKv {
    fn get<'a>(
        &'a self,
        stub: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, Failure>> {
        self.inner.get(stub, key)
    }

    fn set<'a>(
        &'a self,
        stub: &'a str,
        key: &'a str,
        value: Vec<u8>,
        max_total: usize,
    ) -> BoxFuture<'a, Result<(), Failure>> {
        Box::pin(async move {
            let g = held_of(&value);
            self.inner.set(stub, key, value, max_total).await?;
            self.held.raise_by_record(g);
            Ok(())
        })
    }

    fn apply<'a>(
        &'a self,
        stub: &'a str,
        ops: &'a [KvOp],
        max_total: usize,
    ) -> BoxFuture<'a, Result<usize, Failure>> {
        Box::pin(async move {
            let g = batch_g(ops);
            let total = self.inner.apply(stub, ops, max_total).await?;
            self.held.raise_by_record(g);
            Ok(total)
        })
    }

    fn batches(&self) -> Option<Box<dyn KvBatches>> {
        let inner = self.inner.batches()?;
        Some(Box::new(HeldBatches {
            inner,
            held: Arc::clone(&self.held),
        }))
    }

    fn delete<'a>(&'a self, stub: &'a str, key: &'a str) -> BoxFuture<'a, Result<(), Failure>> {
        self.inner.delete(stub, key)
    }

    fn keys<'a>(
        &'a self,
        stub: &'a str,
        prefix: &'a str,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<String>, Failure>> {
        self.inner.keys(stub, prefix, limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The write-behind's thread commits through `batches()` (SQLite): a batch writing a
    /// record with `g` raises what the gateway may acknowledge, once committed.
    #[tokio::test]
    async fn a_batch_committed_by_the_blocking_writer_raises_the_held_g() {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let store = crate::store::sqlite::SqliteStore::open(dir.path())
            .await
            .expect("store");
        let inner: Arc<dyn KvStore> =
            Arc::new(crate::stubhost::SqliteKv::new(store.kv_pool().clone()));
        let (kv, held, rx) = HeldKv::new(inner, "s").await.unwrap();
        assert_eq!(*rx.borrow(), 0);
        let mut batches = kv.batches().expect("SQLite has a blocking batch writer");
        let record = |g: u64| KvOp::Set {
            key: format!("out/{g}"),
            value: format!(r#"{{"g":{g},"m":{{}}}}"#).into_bytes(),
        };
        let ops = [record(3), record(5), record(4)];
        let total = tokio::task::spawn_blocking(move || batches.apply("s", &ops, 1 << 20))
            .await
            .expect("the blocking task");
        assert!(total.is_ok(), "{total:?}");
        assert_eq!(held.get(), 5);
        assert!(held.by_records());
        assert_eq!(
            kv.get("s", "out/5").await.unwrap().as_deref(),
            Some(&br#"{"g":5,"m":{}}"#[..])
        );
        store.close().await;
    }

    #[test]
    fn reads_the_top_level_g_only() {
        assert_eq!(held_of(br#"{"g":7,"m":{"g":99}}"#), Some(7));
        assert_eq!(held_of(br#"{"url":"x","g":12,"cseq":3}"#), Some(12));
        assert_eq!(held_of(br#"{"m":{"g":99}}"#), None);
        assert_eq!(held_of(b"12"), None);
    }
}
