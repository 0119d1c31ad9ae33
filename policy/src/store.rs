//! The operator's entity store (`entities.json`), validated against the schema at load, with
//! what each entity reaches precomputed so that a request can take a small slice of it.

use crate::error::PolicyError;
use crate::hash::FastMap;
use crate::sources::Source;
use cedar_policy::Schema;
use cedar_policy_core::ast::{Entity, EntityUID, Literal, PartialValue, Value, ValueKind};
use std::collections::HashSet;
use std::sync::Arc;

/// One operator entity (its hierarchy closed at load) and the entities it reaches.
#[derive(Debug)]
pub(crate) struct Stored {
    pub(crate) entity: Arc<Entity>,
    /// Its ancestors, and the entities its attributes name (one level: direct values, set
    /// elements, record fields) with their ancestors; those the store has. Never the entity
    /// itself.
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
        let mut entities = FastMap::default();
        for (uid, entity) in &shared {
            let mut reached: HashSet<EntityUID> = entity.ancestors().cloned().collect();
            let mut named = Vec::new();
            for (_, value) in entity.attrs() {
                if let PartialValue::Value(value) = value {
                    collect_uids(value, true, &mut named);
                }
            }
            for target in named {
                if let Some(target_entity) = shared.get(&target) {
                    reached.extend(target_entity.ancestors().cloned());
                }
                reached.insert(target);
            }
            reached.remove(uid);
            let reach = reached
                .iter()
                .filter_map(|r| shared.get(r).cloned())
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

/// The uids a value names: itself, or (at the top level only) its elements or fields.
fn collect_uids(value: &Value, top: bool, out: &mut Vec<EntityUID>) {
    match &value.value {
        ValueKind::Lit(Literal::EntityUID(uid)) => out.push(EntityUID::clone(uid)),
        ValueKind::Set(set) if top => {
            set.authoritative
                .iter()
                .for_each(|v| collect_uids(v, false, out));
        }
        ValueKind::Record(record) if top => {
            record.values().for_each(|v| collect_uids(v, false, out));
        }
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
