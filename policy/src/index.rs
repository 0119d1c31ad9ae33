//! The per-action index.
//!
//! For every action of the schema, the policies whose action scope can match it (unconstrained,
//! `== A`, or `in [...]` naming A or a group A belongs to), and the action entities (A and its
//! groups) a request for A needs. Within an action, policies are bucketed by the entity their
//! principal scope names (`== E`, `in E`), else by the one their resource scope names, else
//! kept open; a request looks only at the buckets of its principal, its resource and their
//! ancestors, so policies about other groups are not even looked at. The scopes are decided
//! here (exactly as Cedar does, on the slice's ancestor sets); only the `when`/`unless`
//! conditions go to Cedar's evaluator, as one expression built once per policy at load.

use crate::error::PolicyError;
use crate::fast::Fast;
use crate::hash::FastMap;
use crate::names::Types;
use crate::reads::Reads;
use cedar_policy::{
    ActionConstraint, Effect, EntityUid, Policy, PolicySet, PrincipalConstraint,
    ResourceConstraint, Schema,
};
use cedar_policy_core::ast::{Entity, EntityType, EntityUID, Expr};
use std::collections::HashSet;
use std::sync::Arc;

/// A scope constraint on the principal or the resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scope {
    Any,
    Eq(EntityUID),
    In(EntityUID),
    Is(EntityType),
    IsIn(EntityType, EntityUID),
}

impl Scope {
    fn principal(constraint: PrincipalConstraint) -> Self {
        match constraint {
            PrincipalConstraint::Any => Self::Any,
            PrincipalConstraint::Eq(u) => Self::Eq(u.into()),
            PrincipalConstraint::In(u) => Self::In(u.into()),
            PrincipalConstraint::Is(t) => Self::Is(AsRef::<EntityType>::as_ref(&t).clone()),
            PrincipalConstraint::IsIn(t, u) => {
                Self::IsIn(AsRef::<EntityType>::as_ref(&t).clone(), u.into())
            }
        }
    }

    fn resource(constraint: ResourceConstraint) -> Self {
        match constraint {
            ResourceConstraint::Any => Self::Any,
            ResourceConstraint::Eq(u) => Self::Eq(u.into()),
            ResourceConstraint::In(u) => Self::In(u.into()),
            ResourceConstraint::Is(t) => Self::Is(AsRef::<EntityType>::as_ref(&t).clone()),
            ResourceConstraint::IsIn(t, u) => {
                Self::IsIn(AsRef::<EntityType>::as_ref(&t).clone(), u.into())
            }
        }
    }

    /// The entity the constraint names, if any.
    fn anchor(&self) -> Option<&EntityUID> {
        match self {
            Self::Eq(u) | Self::In(u) | Self::IsIn(_, u) => Some(u),
            Self::Any | Self::Is(_) => None,
        }
    }

    /// Does an entity `uid` with these `ancestors` satisfy the constraint? (Cedar's scope
    /// semantics: `in` is equality or ancestry, `is` compares the entity type.)
    pub(crate) fn admits(&self, uid: &EntityUID, ancestors: &[EntityUID]) -> bool {
        let within = |u: &EntityUID| u == uid || ancestors.contains(u);
        match self {
            Self::Any => true,
            Self::Eq(u) => u == uid,
            Self::In(u) => within(u),
            Self::Is(t) => t == uid.entity_type(),
            Self::IsIn(t, u) => t == uid.entity_type() && within(u),
        }
    }
}

/// One policy, ready to evaluate.
#[derive(Debug)]
pub(crate) struct Compiled {
    pub(crate) id: String,
    pub(crate) forbid: bool,
    /// The `when` and `unless` clauses as one Cedar expression (`None`: always true). The
    /// scopes are checked by [`Scope::admits`] and the action scope by the index.
    pub(crate) condition: Option<Expr>,
    pub(crate) principal: Scope,
    pub(crate) resource: Scope,
    /// What the condition reads: whether it needs the request's entity slice, and the entity
    /// literals the slice must then hold.
    pub(crate) reads: Reads,
    /// The condition compiled for the query's facts, when it reads only the context.
    pub(crate) fast: Option<Fast>,
}

/// What a request for one action looks at.
#[derive(Debug)]
pub(crate) struct ActionSlot {
    /// `Rethink::Action::"<name>"`.
    pub(crate) uid: EntityUID,
    /// The action entity (with its closed ancestors), for `action in ...` to evaluate. Its
    /// groups are never dereferenced, so they are not needed as entities.
    pub(crate) entity: Arc<Entity>,
    /// Whether some policy of this action has a scope that names an entity: only then does
    /// finding the candidates need the ancestors of the principal and resource.
    pub(crate) scoped: bool,
    /// Policies whose scopes name no entity (indices into [`ActionIndex::policies`]).
    open: Vec<usize>,
    /// Policies by the entity their principal scope names.
    by_principal: FastMap<EntityUID, Vec<usize>>,
    /// Policies whose principal scope names none, by the entity their resource scope names.
    by_resource: FastMap<EntityUID, Vec<usize>>,
    /// How many policies can apply to this action.
    count: usize,
    /// This slot's position among the index's slots (for per-slot caches).
    position: usize,
}

/// The policies in the buckets of `entity` and its `ancestors` (from `by_anchor`) whose scope
/// (`scope_of`) admits `entity`.
fn bucket(
    by_anchor: &FastMap<EntityUID, Vec<usize>>,
    policies: &[Compiled],
    scope_of: impl Fn(&Compiled) -> &Scope,
    entity: &EntityUID,
    ancestors: &[EntityUID],
) -> Box<[usize]> {
    std::iter::once(entity)
        .chain(ancestors)
        .filter_map(|a| by_anchor.get(a))
        .flatten()
        .copied()
        .filter(|&i| scope_of(&policies[i]).admits(entity, ancestors))
        .collect()
}

impl ActionSlot {
    /// Pushes onto `out` the policies of this action whose scopes admit this principal and
    /// resource (given their ancestors in the request's slice).
    pub(crate) fn candidates(
        &self,
        policies: &[Compiled],
        principal: (&EntityUID, &[EntityUID]),
        resource: (&EntityUID, &[EntityUID]),
        out: &mut Vec<usize>,
    ) {
        if !self.scoped {
            out.extend(&self.open);
            return;
        }
        let admits = |i: &usize| {
            let p = &policies[*i];
            p.principal.admits(principal.0, principal.1)
                && p.resource.admits(resource.0, resource.1)
        };
        out.extend(self.open.iter().filter(|i| admits(i)));
        for anchor in std::iter::once(principal.0).chain(principal.1.iter()) {
            if let Some(bucket) = self.by_principal.get(anchor) {
                out.extend(bucket.iter().filter(|i| admits(i)));
            }
        }
        for anchor in std::iter::once(resource.0).chain(resource.1.iter()) {
            if let Some(bucket) = self.by_resource.get(anchor) {
                out.extend(bucket.iter().filter(|i| admits(i)));
            }
        }
    }

    /// The policies of this action in the buckets of `principal` and its `ancestors` whose
    /// principal scope admits it (their resource scope is checked per request).
    pub(crate) fn principal_bucket(
        &self,
        policies: &[Compiled],
        principal: &EntityUID,
        ancestors: &[EntityUID],
    ) -> Box<[usize]> {
        bucket(
            &self.by_principal,
            policies,
            |p| &p.principal,
            principal,
            ancestors,
        )
    }

    /// The policies of this action in the buckets of `resource` and its `ancestors` whose
    /// resource scope admits it (their principal scope is checked per request).
    pub(crate) fn resource_bucket(
        &self,
        policies: &[Compiled],
        resource: &EntityUID,
        ancestors: &[EntityUID],
    ) -> Box<[usize]> {
        bucket(
            &self.by_resource,
            policies,
            |p| &p.resource,
            resource,
            ancestors,
        )
    }

    /// [`ActionSlot::candidates`] from the buckets of the principal and of the resource found
    /// before ([`ActionSlot::principal_bucket`], [`ActionSlot::resource_bucket`]).
    pub(crate) fn candidates_from(
        &self,
        policies: &[Compiled],
        principal: (&EntityUID, &[EntityUID], &[usize]),
        resource: (&EntityUID, &[EntityUID], &[usize]),
        out: &mut Vec<usize>,
    ) {
        if !self.scoped {
            out.extend(&self.open);
            return;
        }
        let admits_principal =
            |i: &&usize| policies[**i].principal.admits(principal.0, principal.1);
        let admits_resource = |i: &&usize| policies[**i].resource.admits(resource.0, resource.1);
        out.extend(
            self.open
                .iter()
                .filter(admits_principal)
                .filter(admits_resource),
        );
        out.extend(principal.2.iter().filter(admits_resource));
        out.extend(resource.2.iter().filter(admits_principal));
    }

    /// Whether some policy of this action is in a bucket.
    pub(crate) fn scoped(&self) -> bool {
        self.scoped
    }

    /// This slot's position among the index's slots.
    pub(crate) fn position(&self) -> usize {
        self.position
    }

    /// How many policies can apply to this action.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.count
    }
}

/// The compiled policies, and the slot of every `Rethink::Action` of the schema by action id.
#[derive(Debug)]
pub(crate) struct ActionIndex {
    pub(crate) policies: Vec<Compiled>,
    /// Every action entity, for the action literals of conditions.
    pub(crate) actions: FastMap<EntityUID, Arc<Entity>>,
    slots: FastMap<String, ActionSlot>,
}

impl ActionIndex {
    /// Compiles `set` and splits it by the actions `schema` declares.
    pub(crate) fn build(
        types: &Types,
        schema: &Schema,
        set: &PolicySet,
        schema_file: &str,
    ) -> Result<Self, PolicyError> {
        let action_entities = schema.action_entities().map_err(|e| PolicyError::Schema {
            file: schema_file.to_owned(),
            message: e.to_string(),
        })?;
        let mut listed: Vec<&Policy> = set.policies().collect();
        listed.sort_by(|a, b| a.id().cmp(b.id()));
        let policies: Vec<Compiled> = listed.iter().map(|p| compile(p)).collect();
        let mut slots = FastMap::default();
        for action in schema.actions() {
            if AsRef::<EntityUID>::as_ref(action).entity_type() != &types.action {
                continue;
            }
            let ancestors: HashSet<EntityUid> = action_entities
                .ancestors(action)
                .into_iter()
                .flatten()
                .cloned()
                .collect();
            let Some(entity) = action_entities.get(action) else {
                return Err(PolicyError::Schema {
                    file: schema_file.to_owned(),
                    message: format!("action {action} has no entity"),
                });
            };
            let mut slot = ActionSlot {
                uid: action.clone().into(),
                entity: Arc::new(AsRef::<Entity>::as_ref(entity).clone()),
                scoped: false,
                open: Vec::new(),
                by_principal: FastMap::default(),
                by_resource: FastMap::default(),
                count: 0,
                position: slots.len(),
            };
            for (i, policy) in listed.iter().enumerate() {
                if !applies(&policy.action_constraint(), action, &ancestors) {
                    continue;
                }
                slot.count += 1;
                let compiled = &policies[i];
                slot.scoped |= compiled.principal != Scope::Any || compiled.resource != Scope::Any;
                if let Some(anchor) = compiled.principal.anchor() {
                    slot.by_principal.entry(anchor.clone()).or_default().push(i);
                } else if let Some(anchor) = compiled.resource.anchor() {
                    slot.by_resource.entry(anchor.clone()).or_default().push(i);
                } else {
                    slot.open.push(i);
                }
            }
            slots.insert(action.id().unescaped().to_owned(), slot);
        }
        let actions = action_entities
            .iter()
            .map(|e| {
                let e: &Entity = e.as_ref();
                (e.uid().clone(), Arc::new(e.clone()))
            })
            .collect();
        Ok(Self {
            policies,
            actions,
            slots,
        })
    }

    /// How many slots there are.
    pub(crate) fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// The slot of the action with this id.
    pub(crate) fn get(&self, action: &str) -> Option<&ActionSlot> {
        self.slots.get(action)
    }
}

fn compile(policy: &Policy) -> Compiled {
    let condition = AsRef::<cedar_policy_core::ast::Policy>::as_ref(policy)
        .non_scope_constraints()
        .cloned();
    Compiled {
        id: policy.id().to_string(),
        forbid: policy.effect() == Effect::Forbid,
        reads: condition.as_ref().map(Reads::of).unwrap_or_default(),
        fast: condition.as_ref().and_then(Fast::compile),
        condition,
        principal: Scope::principal(policy.principal_constraint()),
        resource: Scope::resource(policy.resource_constraint()),
    }
}

/// Can a policy with this action scope apply to `action` (whose groups are `ancestors`)?
fn applies(
    constraint: &ActionConstraint,
    action: &EntityUid,
    ancestors: &HashSet<EntityUid>,
) -> bool {
    match constraint {
        ActionConstraint::Any => true,
        ActionConstraint::Eq(a) => a == action,
        ActionConstraint::In(list) => list.iter().any(|a| a == action || ancestors.contains(a)),
    }
}
