//! The address book: which session owns an address (its runtime URL and allocated addresses,
//! with every path below them), and which sessions subscribe to an address.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, RwLock};

use super::session::Session;
use crate::locks::{read, write};

/// Owners and subscribers of addresses.
#[derive(Debug, Default)]
pub struct AddressBook {
    owners: RwLock<HashMap<Arc<str>, Arc<Session>>>,
    subscribers: RwLock<HashMap<Arc<str>, Vec<Arc<Session>>>>,
}

/// The longest-to-shortest candidates for the owner of `address`: the address itself, then each
/// parent path, never shorter than `scheme://authority/x`.
pub fn candidates(address: &str) -> impl Iterator<Item = &str> {
    let floor = address
        .find("://")
        .and_then(|i| address[i + 3..].find('/').map(|j| i + 3 + j + 1))
        .unwrap_or(address.len());
    let mut next = Some(address);
    std::iter::from_fn(move || {
        let current = next?;
        next = current
            .rfind('/')
            .filter(|&i| i >= floor)
            .map(|i| &current[..i]);
        Some(current)
    })
}

impl AddressBook {
    /// The session owning `address` or the closest address above it.
    pub fn owner_of(&self, address: &str) -> Option<Arc<Session>> {
        let owners = read(&self.owners);
        candidates(address).find_map(|c| owners.get(c).cloned())
    }

    /// Registers `address` for `session`; false if another session owns it.
    pub fn claim(&self, address: Arc<str>, session: &Arc<Session>) -> bool {
        match write(&self.owners).entry(address) {
            Entry::Occupied(e) => Arc::ptr_eq(e.get(), session),
            Entry::Vacant(v) => {
                v.insert(Arc::clone(session));
                true
            }
        }
    }

    /// Removes `address` if `session` owns it.
    pub fn release(&self, address: &str, session: &Arc<Session>) {
        let mut owners = write(&self.owners);
        if owners.get(address).is_some_and(|s| Arc::ptr_eq(s, session)) {
            owners.remove(address);
        }
    }

    /// Adds `session` to the subscribers of `address` (idempotent).
    pub fn subscribe(&self, address: Arc<str>, session: &Arc<Session>) {
        let mut subs = write(&self.subscribers);
        let list = subs.entry(address).or_default();
        if !list.iter().any(|s| Arc::ptr_eq(s, session)) {
            list.push(Arc::clone(session));
        }
    }

    /// Removes `session` from the subscribers of `address`.
    pub fn unsubscribe(&self, address: &str, session: &Arc<Session>) {
        let mut subs = write(&self.subscribers);
        if let Some(list) = subs.get_mut(address) {
            list.retain(|s| !Arc::ptr_eq(s, session));
            if list.is_empty() {
                subs.remove(address);
            }
        }
    }

    /// Calls `f` with the subscribers of `address`; returns `None` when there are none.
    pub fn with_subscribers<R>(
        &self,
        address: &str,
        f: impl FnOnce(&[Arc<Session>]) -> R,
    ) -> Option<R> {
        let subs = read(&self.subscribers);
        subs.get(address).map(|list| f(list))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_walk_up_to_the_first_path_segment() {
        let c: Vec<&str> = candidates("comm://d/abc/children/chat").collect();
        assert_eq!(
            c,
            [
                "comm://d/abc/children/chat",
                "comm://d/abc/children",
                "comm://d/abc"
            ]
        );
        let c: Vec<&str> = candidates("domain://registry.d").collect();
        assert_eq!(c, ["domain://registry.d"]);
        let c: Vec<&str> = candidates("mn:/session").collect();
        assert_eq!(c, ["mn:/session"]);
    }
}
