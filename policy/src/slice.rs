//! Entity slicing: the small entity set one request is evaluated against.
//!
//! It holds the entities synthesized from the query ([`synth`](crate::synth)), each merged with
//! the operator's entity of the same uid if there is one (the operator's attributes and parents,
//! plus the synthesized parents); then every operator entity they reach (ancestors, and the
//! entities their attributes name, one level, with their ancestors); then the action entities.
//! The operator's store is never copied: the slice shares its entities, and what each stored
//! entity reaches is listed at load.
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

/// The slice for one request, with the request's principal and resource and their ancestors.
#[derive(Debug)]
pub(crate) struct Slice {
    pub(crate) principal: EntityUID,
    pub(crate) principal_ancestors: Vec<EntityUID>,
    pub(crate) resource: EntityUID,
    pub(crate) resource_ancestors: Vec<EntityUID>,
    pub(crate) entities: Entities,
}

/// How many entities a slice can hold before its map grows.
const ROOM: usize = 48;

/// An empty entity set with room for [`ROOM`] entities (filled, then emptied). Each request
/// fills a clone of it (a clone keeps the capacity), so building a slice does not rehash:
/// Cedar's map hashes uids with SipHash, and growing a fresh map step by step rehashes more
/// entities than the slice holds (about a tenth of a decision).
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
}

/// Synthesizes the query's entities and slices the operator's store around them.
pub(crate) fn slice(
    types: &Types,
    store: &Store,
    blank: &Blank,
    action_entities: &[Arc<Entity>],
    query: &Query<'_>,
) -> Result<Slice, String> {
    let synth = synthesize(types, query);
    let items = &synth.items;
    let stored: Vec<Option<&Stored>> = items.iter().map(|item| store.get(&item.uid)).collect();
    let closures = closures(store, &synth, &stored);

    let mut slice: Vec<Arc<Entity>> = Vec::with_capacity(items.len() + 12 + action_entities.len());
    // Does some synthesized entity have ancestors its stored version lacks?
    let mut grew = false;
    for ((item, closure), stored) in items.iter().zip(&closures).zip(&stored) {
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

    // What the stored ones reach. (Synthesized entities only name synthesized entities.)
    let first_stored = slice.len();
    for reached in stored.iter().flatten().flat_map(|s| s.reach.iter()) {
        let new = !slice[first_stored..]
            .iter()
            .any(|e| Arc::ptr_eq(e, reached));
        if new && synth.position(reached.uid()).is_none() {
            slice.push(Arc::clone(reached));
        }
    }
    if grew {
        for entity in &mut slice[first_stored..] {
            extend_below_synthesized(entity, &synth, &closures);
        }
    }
    slice.extend(action_entities.iter().cloned());

    let entities = blank
        .0
        .clone()
        .add_entities(
            slice,
            None::<&NoEntitiesSchema>,
            TCComputation::AssumeAlreadyComputed,
            Extensions::all_available(),
        )
        .map_err(|e| e.to_string())?;
    let mut closures = closures;
    let resource_ancestors = closures[synth.resource].clone();
    let principal_ancestors = std::mem::take(&mut closures[synth.principal]);
    Ok(Slice {
        principal: items[synth.principal].uid.clone(),
        principal_ancestors,
        resource: items[synth.resource].uid.clone(),
        resource_ancestors,
        entities,
    })
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
