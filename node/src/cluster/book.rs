//! The answers of [`super::Link`]'s lookups, kept in memory ([`LookupCache`]): who on the
//! other nodes holds an address (or that nobody does), so that a route asks PostgreSQL only
//! for an address it has not asked about since the address book last grew anywhere.
//!
//! The database stays the truth; the cache is kept from lying as follows.
//! - The book grows (a session opened, an address allocated, a subscription added): the node
//!   that grew it, once its change is committed and *before* it answers its runtime, asks every
//!   other live node to forget its answers (`rethink.directory.<node>`, NATS request/reply) and
//!   waits for their replies (`Link::announce`). So an address allocated on node 2 is found
//!   from node 1 as soon as node 2's runtime can have told anybody about it. A lookup that read
//!   the database before a forget and ends after it does not keep its answer (the
//!   [`LookupCache::generation`] moved on meanwhile).
//! - The book shrinks (a session ended or taken over, an address released, an unsubscribe):
//!   an answer may name a holder that holds the address no more. `forward` checks in the same
//!   statement that queues the message that each target session still holds the recipient;
//!   a stale one is forgotten and the recipient looked up in the database again.
//! - NATS may lose a request (this node disconnected, or too slow to read its subscription):
//!   the cache is off while the connection is down, and emptied on reconnection and on a
//!   slow-consumer report; each answer is also kept for [`TTL`] at most.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::bus::remote::RemoteHolders;
use crate::locks::lock;

/// How long one answer is kept at most (the bound on a lost forget request).
pub(super) const TTL: Duration = Duration::from_secs(5);

/// The most answers kept; beyond, the cache starts again empty.
const MAX_ENTRIES: usize = 65_536;

#[derive(Debug, Default)]
struct Inner {
    /// Moves on whenever answers are forgotten.
    generation: u64,
    /// This node listens on its directory subject (set at start).
    listening: bool,
    /// NATS is disconnected (as the client's events tell).
    disconnected: bool,
    answers: HashMap<String, (Instant, RemoteHolders)>,
}

/// The lookup answers of one node (see the module docs).
#[derive(Debug, Default)]
pub(super) struct LookupCache {
    inner: Mutex<Inner>,
}

impl LookupCache {
    /// The answer kept for `address`, if any and fresh.
    pub(super) fn get(&self, address: &str) -> Option<RemoteHolders> {
        let inner = lock(&self.inner);
        let (at, holders) = inner.answers.get(address)?;
        (at.elapsed() < TTL).then(|| holders.clone())
    }

    /// The generation to pass to [`LookupCache::insert`] for a database read starting now
    /// (`None`: the cache is off).
    pub(super) fn generation(&self) -> Option<u64> {
        let inner = lock(&self.inner);
        (inner.listening && !inner.disconnected).then_some(inner.generation)
    }

    /// Keeps `holders` for `address`, unless answers were forgotten since `generation`.
    pub(super) fn insert(&self, generation: u64, address: &str, holders: &RemoteHolders) {
        let mut inner = lock(&self.inner);
        if inner.generation != generation || !inner.listening || inner.disconnected {
            return;
        }
        if inner.answers.len() >= MAX_ENTRIES {
            inner.answers.clear();
        }
        inner
            .answers
            .insert(address.to_owned(), (Instant::now(), holders.clone()));
    }

    /// Forgets every answer (the address book grew somewhere).
    pub(super) fn forget_all(&self) {
        let mut inner = lock(&self.inner);
        inner.generation += 1;
        inner.answers.clear();
    }

    /// Forgets the answer for `address` (it named a stale holder).
    pub(super) fn forget(&self, address: &str) {
        let mut inner = lock(&self.inner);
        inner.generation += 1;
        inner.answers.remove(address);
    }

    /// This node now hears the other nodes' forget requests: the cache may be used.
    pub(super) fn set_listening(&self, listening: bool) {
        let mut inner = lock(&self.inner);
        inner.listening = listening;
        inner.generation += 1;
        inner.answers.clear();
    }

    /// The NATS connection went down (`true`) or came back (`false`): requests may have been
    /// lost either way, so every answer is forgotten.
    pub(super) fn set_disconnected(&self, disconnected: bool) {
        let mut inner = lock(&self.inner);
        inner.disconnected = disconnected;
        inner.generation += 1;
        inner.answers.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::remote::RemoteSession;

    fn held() -> RemoteHolders {
        RemoteHolders {
            subscribers: Vec::new(),
            owner: Some(RemoteSession {
                session: "s".into(),
                node: "n2".into(),
            }),
            via: None,
        }
    }

    #[test]
    fn an_answer_read_before_a_forget_is_not_kept() {
        let cache = LookupCache::default();
        assert_eq!(cache.generation(), None, "off until listening");
        cache.set_listening(true);
        let g = cache.generation().unwrap();
        cache.insert(g, "a", &held());
        assert!(cache.get("a").is_some());
        let g = cache.generation().unwrap();
        cache.forget_all();
        assert!(cache.get("a").is_none());
        cache.insert(g, "a", &held());
        assert!(cache.get("a").is_none(), "a read older than the forget");
        cache.set_disconnected(true);
        assert_eq!(cache.generation(), None, "off while disconnected");
    }
}
