//! The operator's entity store (`entities.json`), validated against the schema at load, with
//! what each entity reaches precomputed so that a request can take a small slice of it.
//!
//! What an evaluation can reach from an entity is what it can dereference: the entities named
//! by its attributes and tags (directly or inside records), and theirs, transitively. Set
//! elements are never dereferenced (Cedar has no way to take an element out of a set: sets are
//! only compared, with `contains`, `containsAll`, `containsAny` and `in`), and an entity's
//! ancestors are never needed as entities (`in` reads the closed ancestor set of its left
//! operand), so neither is reached.

use crate::error::PolicyError;
use crate::hash::FastMap;
use crate::sources::Source;
use cedar_policy::Schema;
use cedar_policy_core::ast::{Entity, EntityUID, Literal, PartialValue, Value, ValueKind};
use std::sync::Arc;

/// One operator entity (its hierarchy closed at load) and the entities it reaches.
#[derive(Debug)]
pub(crate) struct Stored {
    pub(crate) entity: Arc<Entity>,
    /// The entities an evaluation can dereference from it (see the module docs), those the
    /// store has. Never the entity itself.
    pub(crate) reach: Box<[Arc<Entity>]>,
}

/// The operator's entities by uid.
#[derive(Debug, Default)]
pub(crate) struct Store {
    entities: FastMap<EntityUID, Stored>,
}

impl Store {
    /// Parses and validates `source` against `schema` (no source: an empty store).
    pub(crate) fn load(source: Option<&Source<'_>>, schema: &Schema) -> Result<Self, PolicyError> {
        let Some(source) = source else {
            return Ok(Self::default());
        };
        let parsed =
            cedar_policy::Entities::from_json_str(source.text, Some(schema)).map_err(|e| {
                PolicyError::Entities {
                    file: source.name.to_owned(),
                    message: chain(&e),
                }
            })?;
        let core: &cedar_policy_core::entities::Entities = parsed.as_ref();
        let shared: FastMap<EntityUID, Arc<Entity>> = core
            .iter()
            .filter(|e| !e.uid().is_action())
            .map(|e| (e.uid().clone(), Arc::new(e.clone())))
            .collect();
        let named: FastMap<&EntityUID, Vec<EntityUID>> = shared
            .iter()
            .map(|(uid, entity)| (uid, dereferenceable(entity)))
            .collect();
        let mut entities = FastMap::default();
        for (uid, entity) in &shared {
            // Breadth-first over what can be dereferenced, in a stable order.
            let mut reached: Vec<&EntityUID> = vec![uid];
            let mut next = 0;
            while next < reached.len() {
                let current = reached[next];
                next += 1;
                for target in &named[current] {
                    if let Some((key, _)) = named.get_key_value(target)
                        && !reached.contains(key)
                    {
                        reached.push(key);
                    }
                }
            }
            // Never the entity itself.
            reached.remove(0);
            let reach = reached
                .iter()
                .filter_map(|r| shared.get(*r).cloned())
                .collect();
            let stored = Stored {
                entity: Arc::clone(entity),
                reach,
            };
            entities.insert(uid.clone(), stored);
        }
        Ok(Self { entities })
    }

    /// The operator's entity with this uid, and what it reaches.
    pub(crate) fn get(&self, uid: &EntityUID) -> Option<&Stored> {
        self.entities.get(uid)
    }

    /// Every stored entity.
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<Entity>> {
        self.entities.values().map(|s| &s.entity)
    }
}

/// The uids an evaluation can dereference from `entity`: those its attribute and tag values
/// name, directly or inside records (not inside sets).
fn dereferenceable(entity: &Entity) -> Vec<EntityUID> {
    let mut out = Vec::new();
    for (_, value) in entity.attrs().chain(entity.tags()) {
        if let PartialValue::Value(value) = value {
            collect_uids(value, &mut out);
        }
    }
    out
}

/// The uids a value names: itself, or the fields of a record, recursively.
fn collect_uids(value: &Value, out: &mut Vec<EntityUID>) {
    match &value.value {
        ValueKind::Lit(Literal::EntityUID(uid)) => out.push(EntityUID::clone(uid)),
        ValueKind::Record(record) => record.values().for_each(|v| collect_uids(v, out)),
        _ => {}
    }
}

/// An error and its sources, on one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = inner.source();
    }
    message
}
