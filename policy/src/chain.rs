//! Per-sender and per-target caches of the synthesized chains.
//!
//! The entities a principal implies (the sender, its runtime, user and domain, merged with the
//! operator's entities, their ancestor lists closed, and what they reach in the store) depend
//! only on the principal's fields and the store, so they are computed once per distinct
//! principal and kept ([`Chains`]); likewise for resources. A request then takes both chains
//! as they are, provided they do not interact: when one chain's entity with synthesized
//! parents (a hyperty, runtime, object or node) also appears in the other chain, or among the
//! ancestors of what the other reaches, the two must be merged as one query, and the engine
//! falls back to synthesizing the whole query (see [`Chain::interacts`]).
//!
//! Each cache holds at most [`CAPACITY`] chains (a new one replaces an arbitrary one when
//! full). A chain's entities are built the first time a condition reads them. Lookups hash the
//! query's fields (no allocation) and compare them with the chain's own copy, so a hash
//! collision is only a miss.

use crate::hash::{FastHasher, FastMap};
use crate::names::Types;
use crate::query::{Principal, PrincipalKind, Resource, ResourceKind};
use crate::slice::Anchors;
use crate::store::Store;
use crate::synth::{Synthesized, synthesize_principal, synthesize_resource};
use cedar_policy_core::ast::{Entity, EntityUID};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

/// How many chains each cache keeps.
pub(crate) const CAPACITY: usize = 4096;

/// The synthesized entities of one principal or one resource, ready to use.
#[derive(Debug)]
pub(crate) struct Chain {
    key: Key,
    /// The principal's (or resource's) uid.
    pub(crate) uid: EntityUID,
    /// Its closed ancestors.
    pub(crate) ancestors: Vec<EntityUID>,
    /// The synthesized entities that have synthesized parents.
    parented: Vec<EntityUID>,
    /// Every uid of the chain's entities, and their ancestors.
    ancestry: Vec<EntityUID>,
    /// The synthesized entities and their closed ancestor lists, for [`Chain::entities`].
    synth: Synthesized,
    closures: Vec<Vec<EntityUID>>,
    /// The chain's entities, built the first time a condition reads them.
    entities: OnceLock<Vec<Arc<Entity>>>,
    /// Per action slot, the policies in the buckets of this principal (or resource) that its
    /// scope admits, found the first time the chain is decided for that action.
    buckets: Box<[OnceLock<Box<[usize]>>]>,
}

impl Chain {
    fn build(key: Key, anchors: Anchors<'_>, principal: bool, slots: usize) -> Self {
        let (uid, ancestors) = if principal {
            anchors.principal()
        } else {
            anchors.resource()
        };
        let (uid, ancestors) = (uid.clone(), ancestors.to_vec());
        let mut ancestry: Vec<EntityUID> = Vec::new();
        {
            let (synth, closures) = anchors.synthesized();
            let items = synth.items.iter().map(|item| &item.uid);
            for uid in items
                .chain(closures.iter().flatten())
                .chain(anchors.reached())
            {
                if !ancestry.contains(uid) {
                    ancestry.push(uid.clone());
                }
            }
        }
        let (synth, closures) = anchors.into_parts();
        Self {
            key,
            uid,
            ancestors,
            parented: synth
                .items
                .iter()
                .filter(|item| !item.parents.is_empty())
                .map(|item| item.uid.clone())
                .collect(),
            ancestry,
            synth,
            closures,
            entities: OnceLock::new(),
            buckets: (0..slots).map(|_| OnceLock::new()).collect(),
        }
    }

    /// The bucketed policies of slot `position` that admit this chain's principal (or
    /// resource), computed by `find` the first time.
    pub(crate) fn bucket(
        &self,
        position: usize,
        find: impl FnOnce(&EntityUID, &[EntityUID]) -> Box<[usize]>,
    ) -> &[usize] {
        match self.buckets.get(position) {
            Some(cell) => cell.get_or_init(|| find(&self.uid, &self.ancestors)),
            None => &[],
        }
    }

    /// The chain's entities: the synthesized ones merged with the stored ones, and what they
    /// reach in the store; no two of one uid. `store` is the one the chain was built from.
    pub(crate) fn entities(&self, store: &Store) -> &[Arc<Entity>] {
        self.entities.get_or_init(|| {
            Anchors::from_parts(store, self.synth.clone(), self.closures.clone()).entity_list(
                store,
                [],
                [],
            )
        })
    }

    /// Whether this chain and `other` cannot be used as they are for one request: an entity
    /// with synthesized parents in one is an entity, or an ancestor of an entity, of the other.
    pub(crate) fn interacts(&self, other: &Chain) -> bool {
        self.parented.iter().any(|u| other.ancestry.contains(u))
            || other.parented.iter().any(|u| self.ancestry.contains(u))
    }
}

/// The fields a chain was built from.
#[derive(Debug, PartialEq, Eq)]
enum Key {
    Principal {
        kind: PrincipalKind,
        address: Box<str>,
        runtime: Option<Box<str>>,
        user: Option<Box<str>>,
        domain: Box<str>,
    },
    Resource {
        kind: ResourceKind,
        address: Box<str>,
        owner_user: Option<Box<str>>,
        owner_runtime: Option<Box<str>>,
        domain: Box<str>,
    },
}

impl Key {
    fn principal(p: &Principal<'_>) -> Self {
        Self::Principal {
            kind: p.kind,
            address: p.address.into(),
            runtime: p.runtime.map(Into::into),
            user: p.user.map(Into::into),
            domain: p.domain.into(),
        }
    }

    fn resource(r: &Resource<'_>) -> Self {
        Self::Resource {
            kind: r.kind,
            address: r.address.into(),
            owner_user: r.owner_user.map(Into::into),
            owner_runtime: r.owner_runtime.map(Into::into),
            domain: r.domain.into(),
        }
    }

    fn is_principal(&self, p: &Principal<'_>) -> bool {
        matches!(self, Self::Principal { kind, address, runtime, user, domain }
            if *kind == p.kind
                && **address == *p.address
                && runtime.as_deref() == p.runtime
                && user.as_deref() == p.user
                && **domain == *p.domain)
    }

    fn is_resource(&self, r: &Resource<'_>) -> bool {
        matches!(self, Self::Resource { kind, address, owner_user, owner_runtime, domain }
            if *kind == r.kind
                && **address == *r.address
                && owner_user.as_deref() == r.owner_user
                && owner_runtime.as_deref() == r.owner_runtime
                && **domain == *r.domain)
    }
}

/// The caches of principal and resource chains of one engine.
#[derive(Debug, Default)]
pub(crate) struct Chains {
    principals: Cache,
    resources: Cache,
}

#[derive(Debug, Default)]
struct Cache(RwLock<FastMap<u64, Arc<Chain>>>);

impl Cache {
    fn get(&self, hash: u64, matches: impl Fn(&Key) -> bool) -> Option<Arc<Chain>> {
        let map = self.0.read().unwrap_or_else(PoisonError::into_inner);
        map.get(&hash).filter(|c| matches(&c.key)).cloned()
    }

    /// Keeps `chain`; when the cache is full, one other chain makes room (dropped after the
    /// lock is released).
    fn put(&self, hash: u64, chain: Arc<Chain>) {
        let evicted = {
            let mut map = self.0.write().unwrap_or_else(PoisonError::into_inner);
            let evicted = match map.keys().next() {
                Some(&old) if map.len() >= CAPACITY && !map.contains_key(&hash) => map.remove(&old),
                _ => None,
            };
            (evicted, map.insert(hash, chain))
        };
        drop(evicted);
    }
}

impl Chains {
    /// The chain of `p`, built on a miss.
    pub(crate) fn principal(
        &self,
        types: &Types,
        store: &Store,
        slots: usize,
        p: &Principal<'_>,
    ) -> Arc<Chain> {
        let mut h = FastHasher::default();
        (p.kind, p.address, p.runtime, p.user, p.domain).hash(&mut h);
        let hash = h.finish();
        if let Some(chain) = self.principals.get(hash, |k| k.is_principal(p)) {
            return chain;
        }
        let anchors = Anchors::from_synthesized(store, synthesize_principal(types, p));
        let chain = Arc::new(Chain::build(Key::principal(p), anchors, true, slots));
        self.principals.put(hash, Arc::clone(&chain));
        chain
    }

    /// The chain of `r`, built on a miss.
    pub(crate) fn resource(
        &self,
        types: &Types,
        store: &Store,
        slots: usize,
        r: &Resource<'_>,
    ) -> Arc<Chain> {
        let mut h = FastHasher::default();
        (r.kind, r.address, r.owner_user, r.owner_runtime, r.domain).hash(&mut h);
        let hash = h.finish();
        if let Some(chain) = self.resources.get(hash, |k| k.is_resource(r)) {
            return chain;
        }
        let anchors = Anchors::from_synthesized(store, synthesize_resource(types, r));
        let chain = Arc::new(Chain::build(Key::resource(r), anchors, false, slots));
        self.resources.put(hash, Arc::clone(&chain));
        chain
    }
}
