//! [`TxnWindow`]: the memory cache of a room's client transactions, so that a repeated `PUT`
//! with the same transaction ID (per sender, device, room and endpoint) returns the first event
//! and stores nothing.
//!
//! The store is the truth: every transaction is written to `room_txns` (unique per key) in the
//! same commit as its event, and kept there for `matrix.txn_retention_secs` (24 hours by
//! default, as Synapse) however busy the room. This window keeps the room's latest transactions
//! (at most [`MAX_PER_ROOM`], none older than the retention) so that most retries and most new
//! sends are decided without a database read: it knows the time from which it holds *every*
//! transaction of the room ([`TxnWindow::lookup`] answers [`Lookup::New`] only when that covers
//! the whole retention, and [`Lookup::Ask`] otherwise, and the caller then asks the store).
//!
//! A transaction is kept as a 64-bit hash of its key with the event ID (about 100 bytes); the
//! caller confirms a hit against the stored event, so a hash collision cannot answer with
//! another transaction's event.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash as _, Hasher as _};

use ruma::OwnedEventId;

use super::state::TxnKey;

/// Most transactions cached per room. A send whose retry comes after this many others in the
/// same room is answered from the store.
pub const MAX_PER_ROOM: usize = 2048;

/// What the window knows of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Sent before, creating this event (or, after a hash collision, another: confirm it).
    Sent(OwnedEventId),
    /// Never sent within the retention: the window holds every transaction of that time.
    New,
    /// Not in the window, which does not reach back over the whole retention: ask the store.
    Ask,
}

/// The cached transactions of one room.
#[derive(Debug)]
pub struct TxnWindow {
    /// How long a transaction is remembered, in milliseconds.
    retention_ms: i64,
    events: HashMap<u64, OwnedEventId>,
    /// Key hashes by arrival, oldest first, with their time (unix ms).
    order: VecDeque<(i64, u64)>,
    /// Every transaction of the room accepted at or after this time (unix ms) is in the window.
    complete_from: i64,
}

fn hash(key: &TxnKey) -> u64 {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

impl TxnWindow {
    /// An empty window that holds every transaction accepted from `complete_from` (unix ms) on.
    pub fn new(retention_ms: i64, complete_from: i64) -> Self {
        TxnWindow {
            retention_ms,
            events: HashMap::new(),
            order: VecDeque::new(),
            complete_from,
        }
    }

    /// What the window knows of `key` at `now_ms`.
    pub fn lookup(&self, key: &TxnKey, now_ms: i64) -> Lookup {
        match self.events.get(&hash(key)) {
            Some(event) => Lookup::Sent(event.clone()),
            None if self.complete_from <= now_ms - self.retention_ms => Lookup::New,
            None => Lookup::Ask,
        }
    }

    /// Remembers a transaction accepted at `now_ms` (times do not decrease), forgetting the
    /// expired and the oldest beyond the cap.
    pub fn insert(&mut self, key: &TxnKey, event: OwnedEventId, now_ms: i64) {
        while let Some(&(at, old)) = self.order.front() {
            let expired = at < now_ms - self.retention_ms;
            if !expired && self.order.len() < MAX_PER_ROOM {
                break;
            }
            self.order.pop_front();
            self.events.remove(&old);
            if !expired {
                // Dropped while still remembered by the store: the window no longer holds
                // everything accepted at that time.
                self.complete_from = self.complete_from.max(at + 1);
            }
        }
        let h = hash(key);
        self.order.push_back((now_ms, h));
        self.events.insert(h, event);
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use ruma::{event_id, user_id};

    use super::*;
    use crate::rooms::{Txn, TxnScope};

    const KEEP: i64 = 1000;

    fn key(id: &str) -> TxnKey {
        (
            user_id!("@a:x").to_owned(),
            Txn {
                device: "D".into(),
                scope: TxnScope::Send,
                id: id.into(),
            },
        )
    }

    #[test]
    fn a_complete_window_answers_alone_until_it_drops_a_live_transaction() {
        // Complete over the whole retention (a room with few transactions).
        let mut w = TxnWindow::new(KEEP, 0);
        w.insert(&key("1"), event_id!("$one").to_owned(), 10);
        assert_eq!(
            w.lookup(&key("1"), 20),
            Lookup::Sent(event_id!("$one").to_owned())
        );
        assert_eq!(w.lookup(&key("2"), 20), Lookup::New);
        // Expired ones are forgotten and still known to be new.
        w.insert(&key("2"), event_id!("$two").to_owned(), KEEP + 11);
        assert_eq!(w.lookup(&key("1"), KEEP + 11), Lookup::New);
        // Beyond the cap, the oldest live one is dropped: the store must be asked.
        for i in 0..MAX_PER_ROOM {
            w.insert(
                &key(&format!("n{i}")),
                event_id!("$n").to_owned(),
                KEEP + 12,
            );
        }
        assert_eq!(w.len(), MAX_PER_ROOM);
        assert_eq!(w.lookup(&key("2"), KEEP + 12), Lookup::Ask);
        assert_eq!(w.lookup(&key("never"), KEEP + 12), Lookup::Ask);
        // Once everything it dropped is past the retention, it answers alone again.
        assert_eq!(w.lookup(&key("never"), 2 * KEEP + 12), Lookup::New);
    }

    #[test]
    fn a_window_loaded_partially_asks_the_store() {
        let w = TxnWindow::new(KEEP, 500);
        assert_eq!(w.lookup(&key("old"), 600), Lookup::Ask);
        assert_eq!(w.lookup(&key("old"), KEEP + 500), Lookup::New);
    }
}
