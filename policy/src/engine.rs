//! The engine: loads a policy directory (parse, validate strictly, index) and decides queries.

use crate::SCHEMA;
use crate::action::action_name;
use crate::chain::Chains;
use crate::context::context_of;
use crate::decision::Decision;
use crate::error::PolicyError;
use crate::evaluate::evaluate;
use crate::index::{ActionIndex, ActionSlot, Compiled};
use crate::names::Types;
use crate::parse::parse;
use crate::query::Query;
use crate::slice::{Anchors, Blank};
use crate::sources::{Source, Sources};
use crate::span::{describe, offset, position};
use crate::store::Store;
use crate::validate::validate;
use cedar_policy::{PolicySet, Schema};
use cedar_policy_core::ast::{EntityType, EntityUIDEntry, Request};
use std::fmt;
use std::sync::Arc;

/// The policy decision point: an immutable, validated, indexed policy directory.
///
/// Cheap to share (`Send + Sync`); swap a whole new `Engine` in to change policies.
pub struct Engine {
    types: Types,
    index: ActionIndex,
    store: Store,
    blank: Blank,
    /// The synthesized chains of the principals and resources seen so far.
    chains: Chains,
    /// Every policy, as loaded.
    all: PolicySet,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("policies", &self.policy_count())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Parses the schema, the policies and the entities, validates the policies strictly and the
    /// entities against the schema, and indexes the policies by action.
    pub fn load(sources: &Sources<'_>) -> Result<Self, PolicyError> {
        let types = Types::new();
        let schema = load_schema(&types, &sources.schema)?;
        let parsed = parse(&sources.policies)?;
        validate(&schema, &parsed, &sources.policies)?;
        let store = Store::load(sources.entities.as_ref(), &schema)?;
        let index = ActionIndex::build(&types, &schema, &parsed.set, sources.schema.name)?;
        Ok(Self {
            blank: Blank::new(&types),
            chains: Chains::default(),
            types,
            index,
            store,
            all: parsed.set,
        })
    }

    /// The built-in default when no policy directory is configured: the canonical schema and
    /// one policy, `@id("default-allow") permit(principal, action, resource);`.
    pub fn allow_all() -> Self {
        let sources = Sources {
            schema: Source {
                name: "schema.cedarschema",
                text: SCHEMA,
            },
            policies: vec![Source {
                name: "default.cedar",
                text: r#"@id("default-allow") permit(principal, action, resource);"#,
            }],
            entities: None,
        };
        // Constant sources, loaded by a test: this cannot fail.
        Self::load(&sources).expect("the built-in allow-all policy set loads")
    }

    /// Decides one query. Never fails: a query that cannot be evaluated is denied, with the
    /// reason in [`Decision::errors`].
    pub fn decide(&self, query: &Query<'_>) -> Decision {
        let action = action_name(query.action);
        let Some(slot) = self.index.get(action) else {
            return Decision::failed(format!("action \"{action}\" is not declared in the schema"));
        };
        let slots = self.index.slot_count();
        let principal = self
            .chains
            .principal(&self.types, &self.store, slots, &query.principal);
        let resource = self
            .chains
            .resource(&self.types, &self.store, slots, &query.resource);
        if principal.interacts(&resource) {
            return self.decide_whole(slot, query);
        }
        let policies = &self.index.policies;
        let mut candidates = Vec::new();
        let (by_principal, by_resource): (&[usize], &[usize]) = if slot.scoped() {
            (
                principal.bucket(slot.position(), |uid, ancestors| {
                    slot.principal_bucket(policies, uid, ancestors)
                }),
                resource.bucket(slot.position(), |uid, ancestors| {
                    slot.resource_bucket(policies, uid, ancestors)
                }),
            )
        } else {
            (&[], &[])
        };
        slot.candidates_from(
            policies,
            (&principal.uid, &principal.ancestors, by_principal),
            (&resource.uid, &resource.ancestors, by_resource),
            &mut candidates,
        );
        let reading = || {
            candidates
                .iter()
                .map(|&i| &policies[i].reads)
                .filter(|reads| reads.entities)
        };
        let sliced;
        let entities = if reading().next().is_none() {
            self.blank.empty()
        } else {
            // Entity literals are sliced with the whole query.
            if reading().any(|reads| !reads.literals.is_empty()) {
                return self.decide_whole(slot, query);
            }
            let mut list = principal.entities(&self.store).to_vec();
            for entity in resource.entities(&self.store) {
                match list.iter().find(|e| e.uid() == entity.uid()) {
                    None => list.push(Arc::clone(entity)),
                    Some(same) if Arc::ptr_eq(same, entity) || same.deep_eq(entity) => {}
                    // Differing versions of one entity: merge them as one query.
                    Some(_) => return self.decide_whole(slot, query),
                }
            }
            list.push(Arc::clone(&slot.entity));
            match self.blank.fill(list) {
                Ok(entities) => {
                    sliced = entities;
                    &sliced
                }
                Err(e) => return Decision::failed(format!("entities: {e}")),
            }
        };
        let request = || {
            Request::new_unchecked(
                EntityUIDEntry::known(principal.uid.clone(), None),
                EntityUIDEntry::known(slot.uid.clone(), None),
                EntityUIDEntry::known(resource.uid.clone(), None),
                Some(context_of(
                    &query.context,
                    context_mask(policies, &candidates),
                )),
            )
        };
        evaluate(request, &query.context, entities, policies, &candidates)
    }

    /// Decides `query` by synthesizing its entities as one (when its principal and resource
    /// chains interact, or a condition names entity literals).
    fn decide_whole(&self, slot: &ActionSlot, query: &Query<'_>) -> Decision {
        let anchors = Anchors::new(&self.types, &self.store, query);
        let policies = &self.index.policies;
        let mut candidates = Vec::new();
        slot.candidates(
            policies,
            anchors.principal(),
            anchors.resource(),
            &mut candidates,
        );
        let sliced;
        let entities = if candidates.iter().any(|&i| policies[i].reads.entities) {
            let literals = candidates
                .iter()
                .map(|&i| &policies[i].reads)
                .filter(|reads| reads.entities)
                .flat_map(|reads| &reads.literals);
            let actions = literals
                .clone()
                .filter_map(|uid| self.index.actions.get(uid))
                .chain(std::iter::once(&slot.entity));
            match anchors.entities(&self.store, &self.blank, actions, literals) {
                Ok(entities) => {
                    sliced = entities;
                    &sliced
                }
                Err(e) => return Decision::failed(format!("entities: {e}")),
            }
        } else {
            self.blank.empty()
        };
        let request = || {
            Request::new_unchecked(
                EntityUIDEntry::known(anchors.principal().0.clone(), None),
                EntityUIDEntry::known(slot.uid.clone(), None),
                EntityUIDEntry::known(anchors.resource().0.clone(), None),
                Some(context_of(
                    &query.context,
                    context_mask(policies, &candidates),
                )),
            )
        };
        evaluate(request, &query.context, entities, policies, &candidates)
    }

    /// The number of policies loaded.
    pub fn policy_count(&self) -> usize {
        self.all.num_of_policies()
    }
}

/// The context fields the candidates that go to Cedar's evaluator read.
fn context_mask(policies: &[Compiled], candidates: &[usize]) -> u32 {
    candidates
        .iter()
        .map(|&i| &policies[i])
        .filter(|p| p.condition.is_some() && p.fast.is_none())
        .fold(0, |mask, p| mask | p.reads.context)
}

/// Parses the schema and checks that it declares the entity types the crate synthesizes.
fn load_schema(types: &Types, source: &Source<'_>) -> Result<Schema, PolicyError> {
    let (schema, _warnings) = Schema::from_cedarschema_str(source.text).map_err(|e| {
        let message = match offset(&e) {
            Some(at) => {
                let at = position(source.text, at);
                format!("line {}, column {}: {}", at.line, at.col, describe(&e))
            }
            None => describe(&e),
        };
        PolicyError::Schema {
            file: source.name.to_owned(),
            message,
        }
    })?;
    let declared: Vec<&EntityType> = schema.entity_types().map(AsRef::as_ref).collect();
    for ty in types.entity_types() {
        if !declared.contains(&ty) {
            return Err(PolicyError::Schema {
                file: source.name.to_owned(),
                message: format!("entity type {ty} is missing (the node synthesizes it)"),
            });
        }
    }
    Ok(schema)
}

#[cfg(test)]
mod tests;
