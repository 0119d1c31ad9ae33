//! The entity types of the `Rethink` namespace, parsed once, and uid construction.

use cedar_policy::EntityTypeName;
use cedar_policy_core::ast::{Eid, EntityType, EntityUID};
use std::str::FromStr;

/// The namespace of the canonical schema.
pub(crate) const NAMESPACE: &str = "Rethink";

/// The entity types the crate synthesizes entities of.
#[derive(Debug, Clone)]
pub(crate) struct Types {
    pub(crate) group: EntityType,
    pub(crate) domain: EntityType,
    pub(crate) user: EntityType,
    pub(crate) runtime: EntityType,
    pub(crate) hyperty: EntityType,
    pub(crate) object: EntityType,
    pub(crate) node: EntityType,
    pub(crate) action: EntityType,
}

impl Types {
    pub(crate) fn new() -> Self {
        Self {
            group: name("Group"),
            domain: name("Domain"),
            user: name("User"),
            runtime: name("Runtime"),
            hyperty: name("Hyperty"),
            object: name("Object"),
            node: name("Node"),
            action: name("Action"),
        }
    }

    /// The entity types the schema must declare (every one but `Action`).
    pub(crate) fn entity_types(&self) -> [&EntityType; 7] {
        [
            &self.group,
            &self.domain,
            &self.user,
            &self.runtime,
            &self.hyperty,
            &self.object,
            &self.node,
        ]
    }
}

/// The uid `ty::"id"`.
pub(crate) fn uid(ty: &EntityType, id: &str) -> EntityUID {
    EntityUID::from_components(ty.clone(), Eid::new(id), None)
}

fn name(basename: &str) -> EntityType {
    // Constant, valid type names (see the test below): this cannot fail.
    let name = EntityTypeName::from_str(&format!("{NAMESPACE}::{basename}"))
        .expect("valid entity type name");
    AsRef::<EntityType>::as_ref(&name).clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_namespaced() {
        let types = Types::new();
        assert_eq!(types.hyperty.to_string(), "Rethink::Hyperty");
        assert_eq!(
            uid(&types.action, "matrix:send").to_string(),
            r#"Rethink::Action::"matrix:send""#
        );
    }
}
