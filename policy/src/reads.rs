//! What a policy condition reads from the entity store.
//!
//! Cedar's evaluator consults the entities of a request only to dereference an entity
//! (`e.attr`, `e has attr`, tags) and for `in` (the ancestors of its left operand). A condition
//! that does neither, such as one on `context` alone, is decided the same against any entity
//! set, so a request whose candidate policies all are of that kind needs no entity slice. The
//! entity literals a condition names (`Rethink::User::"root".blocked`) are entities the slice
//! must hold besides those the query implies.

use cedar_policy_core::ast::{BinaryOp, EntityUID, Expr, ExprKind, Literal, Var};

/// What one condition reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Reads {
    /// Whether evaluating it may consult the entity store.
    pub(crate) entities: bool,
    /// The entity literals it names, each once.
    pub(crate) literals: Vec<EntityUID>,
}

impl Reads {
    /// What `condition` reads (conservatively: a dereference of anything but `context` counts).
    pub(crate) fn of(condition: &Expr) -> Self {
        let mut reads = Self::default();
        for e in condition.subexpressions() {
            match e.expr_kind() {
                ExprKind::GetAttr { expr, .. }
                | ExprKind::HasAttr { expr, .. }
                | ExprKind::ExtHasAttr { expr, .. }
                    if !matches!(expr.expr_kind(), ExprKind::Var(Var::Context)) =>
                {
                    reads.entities = true;
                }
                ExprKind::BinaryApp {
                    op: BinaryOp::In | BinaryOp::GetTag | BinaryOp::HasTag,
                    ..
                } => reads.entities = true,
                ExprKind::Lit(Literal::EntityUID(uid)) if !reads.literals.contains(uid) => {
                    reads.literals.push(EntityUID::clone(uid));
                }
                _ => {}
            }
        }
        reads
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cedar_policy::Policy;
    use std::str::FromStr;

    fn reads(condition: &str) -> Reads {
        let text = format!("permit(principal, action, resource) when {{ {condition} }};");
        let policy = Policy::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        let ast: &cedar_policy_core::ast::Policy = policy.as_ref();
        Reads::of(&ast.non_scope_constraints().cloned().unwrap_or_else(|| {
            panic!("{text}: no condition");
        }))
    }

    #[test]
    fn context_alone_reads_no_entity() {
        let r = reads(r#"context.hour < 8 && context.to like "domain://*" && context has idp"#);
        assert_eq!(r, Reads::default());
        let r = reads(r#"principal is Rethink::User && resource == Rethink::Object::"o""#);
        assert!(!r.entities);
        assert_eq!(r.literals.len(), 1);
    }

    #[test]
    fn dereferences_and_membership_read_entities() {
        for condition in [
            "principal has user",
            "resource.owner == principal",
            "principal in Rethink::Group::\"g\"",
            "principal.hasTag(\"t\")",
            "context.hour < 8 || principal.getTag(\"t\") == 1",
            "{a: principal}.a has user",
        ] {
            assert!(reads(condition).entities, "{condition}");
        }
        let r = reads(r#"Rethink::User::"root".blocked.contains(principal)"#);
        assert!(r.entities);
        assert_eq!(r.literals.len(), 1);
    }
}
