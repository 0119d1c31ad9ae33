//! Map helpers for the in-memory indexes that change at every event (change marks, room caches):
//! updating an entry by a borrowed key, cloning the key only when the entry is new.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

/// Applies `change` to the value of `key` in `map`, inserted as the default if missing; the key
/// is cloned only then.
pub(crate) fn update<K, Q, V>(map: &mut HashMap<K, V>, key: &Q, change: impl FnOnce(&mut V))
where
    K: Borrow<Q> + Hash + Eq,
    Q: ToOwned<Owned = K> + Hash + Eq + ?Sized,
    V: Default,
{
    match map.get_mut(key) {
        Some(value) => change(value),
        None => {
            let mut value = V::default();
            change(&mut value);
            map.insert(key.to_owned(), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_an_entry_or_inserts_the_changed_default() {
        let mut counts: HashMap<String, u32> = HashMap::new();
        update(&mut counts, "a", |n| *n += 2);
        update(&mut counts, "a", |n| *n += 3);
        update(&mut counts, "b", |n| *n += 1);
        assert_eq!(counts["a"], 5);
        assert_eq!(counts["b"], 1);
        assert_eq!(counts.len(), 2);
    }
}
