//! Entity slicing: the small entity set one request is evaluated against.
//!
//! It holds the entities synthesized from the query ([`synth`](crate::synth)), each merged with
//! the operator's entity of the same uid if there is one (the operator's attributes and parents,
//! plus the synthesized parents); then every operator entity an evaluation can dereference from
//! them or from the entity literals of the candidate policies (see [`store`](crate::store));
//! then the action entities. Ancestors are not entities of the slice: each entity carries its
//! closed ancestor set, which is all `in` reads. The operator's store is never copied: the
//! slice shares its entities, and what each stored entity reaches is listed at load.
//!
//! The ancestor lists ([`Anchors`]) are computed first: they are all the index needs to pick
//! the candidate policies, and the entity set is built only when a candidate reads entities.
//!
//! The slice is not validated (the operator's entities were validated at load), and its
//! hierarchy's closure is computed here rather than by Cedar: stored entities are closed
//! already and synthesized chains are at most three deep, while Cedar's general algorithm costs
//! tens of microseconds on a dozen entities. An operator entity that gains synthesized parents
//! is copied with them, and so is any sliced entity below it.

use crate::names::{Types, uid};
use crate::query::Query;
use crate::store::{Store, Stored};
use crate::synth::{Synth, Synthesized, synthesize};
use cedar_policy_core::ast::{Entity, EntityUID, PartialValue, Value};
use cedar_policy_core::entities::{Entities, NoEntitiesSchema, TCComputation};
use cedar_policy_core::extensions::Extensions;
use smol_str::SmolStr;
use std::collections::HashSet;
use std::sync::Arc;

/// What a request is about: the synthesized entities, their stored versions, and their closed
/// ancestor lists. Enough to find the candidate policies; the entity set is built from it only
/// when some candidate's condition reads entities ([`Anchors::entities`]).
#[derive(Debug)]
pub(crate) struct Anchors<'s> {
    synth: Synthesized,
    stored: Vec<Option<&'s Stored>>,
    closures: Vec<Vec<EntityUID>>,
}

/// How many entities a slice can hold before its map grows.
const ROOM: usize = 32;

/// An empty entity set with room for [`ROOM`] entities (filled, then emptied). Each request
/// fills a clone of it (a clone keeps the capacity), so building a slice does not rehash:
/// Cedar's map hashes uids with SipHash, and growing a fresh map step by step rehashes more
/// entities than the slice holds.
#[derive(Debug, Clone)]
pub(crate) struct Blank(Entities);

impl Blank {
    pub(crate) fn new(types: &Types) -> Self {
        let fill = (0..ROOM).map(|i| {
            let uid = uid(&types.group, &i.to_string());
            (Arc::new(Entity::with_uid(uid.clone())), uid)
        });
        let (entities, uids): (Vec<_>, Vec<_>) = fill.unzip();
        let room = Entities::new()
            .add_entities(
                entities,
                None::<&NoEntitiesSchema>,
                TCComputation::AssumeAlreadyComputed,
                Extensions::all_available(),
            )
            .ok()
            .and_then(|e| {
                e.remove_entities(uids, TCComputation::AssumeAlreadyComputed)
                    .ok()
            });
        // Adding and removing unrelated entities cannot fail; if it did, start from scratch.
        Self(room.unwrap_or_default())
    }

    /// The empty entity set, for requests whose conditions read no entity.
    pub(crate) fn empty(&self) -> &Entities {
        &self.0
    }

    /// An entity set of `entities` (closed already, no two of one uid).
    pub(crate) fn fill(&self, entities: Vec<Arc<Entity>>) -> Result<Entities, String> {
        self.0
            .clone()
            .add_entities(
                entities,
                None::<&NoEntitiesSchema>,
                TCComputation::AssumeAlreadyComputed,
                Extensions::all_available(),
            )
            .map_err(|e| e.to_string())
    }
}

impl<'s> Anchors<'s> {
    /// Synthesizes the query's entities and closes their ancestor lists against `store`.
    pub(crate) fn new(types: &Types, store: &'s Store, query: &Query<'_>) -> Self {
        Self::from_synthesized(store, synthesize(types, query))
    }

    /// Closes the ancestor lists of `synth` against `store`.
    pub(crate) fn from_synthesized(store: &'s Store, synth: Synthesized) -> Self {
        let stored: Vec<Option<&Stored>> = synth
            .items
            .iter()
            .map(|item| store.get(&item.uid))
            .collect();
        let closures = closures(store, &synth, &stored);
        Self {
            synth,
            stored,
            closures,
        }
    }

    /// Anchors computed before (by [`Anchors::from_synthesized`] on the same store).
    pub(crate) fn from_parts(
        store: &'s Store,
        synth: Synthesized,
        closures: Vec<Vec<EntityUID>>,
    ) -> Self {
        let stored = synth
            .items
            .iter()
            .map(|item| store.get(&item.uid))
            .collect();
        Self {
            synth,
            stored,
            closures,
        }
    }

    /// The synthesized entities and their closed ancestor lists, for
    /// [`Anchors::from_parts`].
    pub(crate) fn into_parts(self) -> (Synthesized, Vec<Vec<EntityUID>>) {
        (self.synth, self.closures)
    }

    /// The uids of what the stored entities reach, and their ancestors.
    pub(crate) fn reached(&self) -> impl Iterator<Item = &EntityUID> {
        self.stored
            .iter()
            .flatten()
            .flat_map(|s| s.reach.iter())
            .flat_map(|e| std::iter::once(e.uid()).chain(e.ancestors()))
    }

    /// The principal and its ancestors.
    pub(crate) fn principal(&self) -> (&EntityUID, &[EntityUID]) {
        let i = self.synth.principal;
        (&self.synth.items[i].uid, &self.closures[i])
    }

    /// The resource and its ancestors.
    pub(crate) fn resource(&self) -> (&EntityUID, &[EntityUID]) {
        let i = self.synth.resource;
        (&self.synth.items[i].uid, &self.closures[i])
    }

    /// The synthesized entities and their ancestor lists.
    pub(crate) fn synthesized(&self) -> (&Synthesized, &[Vec<EntityUID>]) {
        (&self.synth, &self.closures)
    }

    /// The entity set the request is evaluated against: the synthesized entities (merged with
    /// the stored ones), what the stored ones and the `literals` reach, and `actions` (the
    /// request's action and any action literals).
    pub(crate) fn entities<'a>(
        &self,
        store: &Store,
        blank: &Blank,
        actions: impl IntoIterator<Item = &'a Arc<Entity>>,
        literals: impl IntoIterator<Item = &'a EntityUID>,
    ) -> Result<Entities, String> {
        blank.fill(self.entity_list(store, actions, literals))
    }

    /// The entities of [`Anchors::entities`], as a list without duplicates.
    pub(crate) fn entity_list<'a>(
        &self,
        store: &Store,
        actions: impl IntoIterator<Item = &'a Arc<Entity>>,
        literals: impl IntoIterator<Item = &'a EntityUID>,
    ) -> Vec<Arc<Entity>> {
        let synth = &self.synth;
        let items = &synth.items;
        let closures = &self.closures;
        let mut slice: Vec<Arc<Entity>> = Vec::with_capacity(ROOM);
        // Does some synthesized entity have ancestors its stored version lacks?
        let mut grew = false;
        for ((item, closure), stored) in items.iter().zip(closures).zip(&self.stored) {
            let entity = match stored {
                // The closure holds the stored ancestors: equal sizes mean nothing was gained.
                Some(stored) if closure.len() == stored.entity.ancestors().count() => {
                    Arc::clone(&stored.entity)
                }
                Some(stored) => {
                    grew = true;
                    let mut entity = Entity::clone(&stored.entity);
                    for parent in &item.parents {
                        entity.add_parent(parent.clone());
                    }
                    for ancestor in closure {
                        if !entity.is_descendant_of(ancestor) {
                            entity.add_indirect_ancestor(ancestor.clone());
                        }
                    }
                    Arc::new(entity)
                }
                None => {
                    grew |= !closure.is_empty();
                    Arc::new(synthesized(item, closure))
                }
            };
            slice.push(entity);
        }

        // What the stored ones and the literals reach. (Synthesized entities only name
        // synthesized entities.)
        let first_stored = slice.len();
        let add = |slice: &mut Vec<Arc<Entity>>, entity: &Arc<Entity>| {
            let new = !slice[first_stored..].iter().any(|e| Arc::ptr_eq(e, entity));
            if new && synth.position(entity.uid()).is_none() {
                slice.push(Arc::clone(entity));
            }
        };
        for reached in self.stored.iter().flatten().flat_map(|s| s.reach.iter()) {
            add(&mut slice, reached);
        }
        for literal in literals {
            if let Some(stored) = store.get(literal) {
                add(&mut slice, &stored.entity);
                for reached in &stored.reach {
                    add(&mut slice, reached);
                }
            }
        }
        if grew {
            for entity in &mut slice[first_stored..] {
                extend_below_synthesized(entity, synth, closures);
            }
        }
        for action in actions {
            if !slice.iter().any(|e| e.uid() == action.uid()) {
                slice.push(Arc::clone(action));
            }
        }

        slice
    }
}

/// The closed ancestor list of every synthesized entity: its stored ancestors and synthesized
/// parents, and the ancestors of those (the closed lists of the synthesized ones among them,
/// which may have gained synthesized parents; the stored ancestors of the others).
fn closures(store: &Store, synth: &Synthesized, stored: &[Option<&Stored>]) -> Vec<Vec<EntityUID>> {
    let items = &synth.items;
    let direct: Vec<Vec<EntityUID>> = items
        .iter()
        .zip(stored)
        .map(|(item, stored)| {
            let mut list: Vec<EntityUID> = stored
                .map(|s| s.entity.ancestors().cloned().collect())
                .unwrap_or_default();
            for parent in &item.parents {
                if !list.contains(parent) {
                    list.push(parent.clone());
                }
            }
            list
        })
        .collect();
    let mut closures: Vec<Option<Vec<EntityUID>>> = vec![None; items.len()];
    // Synthesized chains are short (hyperty, runtime, user or domain) and acyclic: close an
    // item once the synthesized entities among its ancestors are closed.
    let mut pending: Vec<usize> = (0..items.len()).collect();
    while !pending.is_empty() {
        let before = pending.len();
        pending.retain(|&i| {
            let mut waiting = direct[i].iter().filter_map(|a| synth.position(a));
            if waiting.any(|j| j != i && closures[j].is_none()) {
                return true;
            }
            let mut list = direct[i].clone();
            for ancestor in &direct[i] {
                let mut add = |uid: &EntityUID| {
                    if *uid != items[i].uid && !list.contains(uid) {
                        list.push(uid.clone());
                    }
                };
                match synth.position(ancestor).and_then(|j| closures[j].as_ref()) {
                    Some(inherited) => inherited.iter().for_each(&mut add),
                    None => {
                        if let Some(s) = store.get(ancestor) {
                            s.entity.ancestors().for_each(&mut add);
                        }
                    }
                }
            }
            closures[i] = Some(list);
            false
        });
        if pending.len() == before {
            // A cycle (only an operator's extended schema could make one): stop there.
            for &i in &pending {
                closures[i] = Some(direct[i].clone());
            }
            break;
        }
    }
    closures
        .into_iter()
        .map(Option::unwrap_or_default)
        .collect()
}

/// A synthesized entity the operator's store does not have.
fn synthesized(item: &Synth, closure: &[EntityUID]) -> Entity {
    let attrs = item.attrs.iter().map(|(name, value)| {
        (
            SmolStr::new_static(name),
            PartialValue::Value(Value::from(value.clone())),
        )
    });
    let parents: HashSet<EntityUID> = item.parents.iter().cloned().collect();
    let indirect = closure
        .iter()
        .filter(|a| !item.parents.contains(a))
        .cloned()
        .collect();
    Entity::new_with_attr_partial_value(item.uid.clone(), attrs, indirect, parents, [])
}

/// Gives a stored entity that lies below a synthesized one that one's synthesized ancestors.
fn extend_below_synthesized(
    entity: &mut Arc<Entity>,
    synth: &Synthesized,
    closures: &[Vec<EntityUID>],
) {
    let gained: Vec<&EntityUID> = entity
        .ancestors()
        .filter_map(|a| synth.position(a))
        .flat_map(|i| &closures[i])
        .filter(|a| *a != entity.uid() && !entity.is_descendant_of(a))
        .collect();
    if !gained.is_empty() {
        let mut copy = Entity::clone(entity);
        for ancestor in gained {
            copy.add_indirect_ancestor(ancestor.clone());
        }
        *entity = Arc::new(copy);
    }
}
