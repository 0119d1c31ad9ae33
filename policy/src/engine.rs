//! The engine: loads a policy directory (parse, validate strictly, index) and decides queries.

use crate::SCHEMA;
use crate::action::action_name;
use crate::context::context;
use crate::decision::Decision;
use crate::error::PolicyError;
use crate::evaluate::evaluate;
use crate::index::ActionIndex;
use crate::names::Types;
use crate::parse::parse;
use crate::query::Query;
use crate::slice::{Blank, slice};
use crate::sources::{Source, Sources};
use crate::span::{describe, offset, position};
use crate::store::Store;
use crate::validate::validate;
use cedar_policy::{PolicySet, Schema};
use cedar_policy_core::ast::{EntityType, EntityUIDEntry, Request};
use std::fmt;

/// The policy decision point: an immutable, validated, indexed policy directory.
///
/// Cheap to share (`Send + Sync`); swap a whole new `Engine` in to change policies.
pub struct Engine {
    types: Types,
    index: ActionIndex,
    store: Store,
    blank: Blank,
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
        let slice = match slice(&self.types, &self.store, &self.blank, &slot.entities, query) {
            Ok(slice) => slice,
            Err(e) => return Decision::failed(format!("entities: {e}")),
        };
        let mut candidates = Vec::new();
        slot.candidates(
            &self.index.policies,
            (&slice.principal, &slice.principal_ancestors[..]),
            (&slice.resource, &slice.resource_ancestors[..]),
            &mut candidates,
        );
        let request = Request::new_unchecked(
            EntityUIDEntry::known(slice.principal, None),
            EntityUIDEntry::known(slot.uid.clone(), None),
            EntityUIDEntry::known(slice.resource, None),
            Some(context(&query.context)),
        );
        evaluate(request, &slice.entities, &self.index.policies, &candidates)
    }

    /// The number of policies loaded.
    pub fn policy_count(&self) -> usize {
        self.all.num_of_policies()
    }
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
