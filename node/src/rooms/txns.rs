//! [`TxnWindow`]: the client transactions a room remembers, so that a repeated `PUT` with the
//! same transaction ID (per sender, device, endpoint) returns the first event and stores
//! nothing.
//!
//! A room remembers its transactions of the last [`KEEP_MS`] (30 minutes, as other homeservers
//! do), at most [`MAX_PER_ROOM`] of them; when a room is loaded the window is refilled from the
//! stored events, so a retry after a restart is still recognised. Checking memory only keeps a
//! database read off every send. A transaction is kept as a 64-bit hash of its key with the
//! event ID (about 100 bytes); the caller confirms a hit against the stored event, so a hash
//! collision cannot answer with another transaction's event.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash as _, Hasher as _};

use ruma::OwnedEventId;

use super::state::TxnKey;

/// How long a transaction is remembered, in milliseconds.
pub const KEEP_MS: i64 = 30 * 60 * 1000;
/// Most transactions remembered per room.
pub const MAX_PER_ROOM: usize = 2048;

/// The remembered transactions of one room.
#[derive(Debug, Default)]
pub struct TxnWindow {
    events: HashMap<u64, OwnedEventId>,
    /// Key hashes by arrival, oldest first, with their time (unix ms).
    order: VecDeque<(i64, u64)>,
}

fn hash(key: &TxnKey) -> u64 {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

impl TxnWindow {
    /// The event of a remembered transaction (or, in the rare case of a hash collision, of
    /// another: confirm against the event).
    pub fn get(&self, key: &TxnKey) -> Option<&OwnedEventId> {
        self.events.get(&hash(key))
    }

    /// Remembers a transaction sent at `now_ms`, forgetting the expired and the oldest beyond
    /// the cap.
    pub fn insert(&mut self, key: TxnKey, event: OwnedEventId, now_ms: i64) {
        while let Some((at, _)) = self.order.front() {
            if *at >= now_ms - KEEP_MS && self.order.len() < MAX_PER_ROOM {
                break;
            }
            if let Some((_, old)) = self.order.pop_front() {
                self.events.remove(&old);
            }
        }
        let h = hash(&key);
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
    fn transactions_are_forgotten_after_the_window_or_beyond_the_cap() {
        let mut w = TxnWindow::default();
        w.insert(key("1"), event_id!("$one").to_owned(), 0);
        assert_eq!(w.get(&key("1")).map(|e| e.as_str()), Some("$one"));
        w.insert(key("2"), event_id!("$two").to_owned(), KEEP_MS + 1);
        assert!(w.get(&key("1")).is_none(), "expired");
        assert!(w.get(&key("2")).is_some());
        for i in 0..MAX_PER_ROOM {
            w.insert(
                key(&format!("n{i}")),
                event_id!("$n").to_owned(),
                KEEP_MS + 2,
            );
        }
        assert_eq!(w.len(), MAX_PER_ROOM);
        assert!(w.get(&key("2")).is_none(), "the oldest goes beyond the cap");
    }
}
