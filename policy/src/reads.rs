//! What a policy condition reads from the entity store.
//!
//! Cedar's evaluator consults the entities of a request only to dereference an entity
//! (`e.attr`, `e has attr`, tags) and for `in` (the ancestors of its left operand). A condition
//! that does neither, such as one on `context` alone, is decided the same against any entity
//! set, so a request whose candidate policies all are of that kind needs no entity slice. The
//! entity literals a condition names (`Rethink::User::"root".blocked`) are entities the slice
//! must hold besides those the query implies.

use crate::context::{ALL_FIELDS, field_bit};
use cedar_policy_core::ast::{BinaryOp, EntityUID, Expr, ExprKind, Literal, Var};

/// What one condition reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Reads {
    /// Whether evaluating it may consult the entity store.
    pub(crate) entities: bool,
    /// The entity literals it names, each once.
    pub(crate) literals: Vec<EntityUID>,
    /// The context fields it reads, as a mask of [`FIELDS`](crate::context::FIELDS): all of
    /// them when it uses `context` other than as `context.<field>` or `context has <field>`,
    /// or names a field the node does not fill.
    pub(crate) context: u32,
}

impl Reads {
    /// What `condition` reads (conservatively: a dereference of anything but `context` counts).
    pub(crate) fn of(condition: &Expr) -> Self {
        let mut reads = Self::default();
        // Uses of `context`, and those that read one named field.
        let (mut uses, mut fields) = (0, 0);
        for e in condition.subexpressions() {
            match e.expr_kind() {
                ExprKind::Var(Var::Context) => uses += 1,
                ExprKind::GetAttr { expr, attr } | ExprKind::HasAttr { expr, attr }
                    if matches!(expr.expr_kind(), ExprKind::Var(Var::Context)) =>
                {
                    fields += 1;
                    reads.context |= field_bit(attr).unwrap_or(ALL_FIELDS);
                }
                ExprKind::ExtHasAttr { expr, attrs }
                    if matches!(expr.expr_kind(), ExprKind::Var(Var::Context)) =>
                {
                    fields += 1;
                    reads.context |= field_bit(attrs.first()).unwrap_or(ALL_FIELDS);
                }
                _ => {}
            }
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
        if uses > fields {
            reads.context = ALL_FIELDS;
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
        assert!(!r.entities && r.literals.is_empty());
        let r = reads(r#"principal is Rethink::User && resource == Rethink::Object::"o""#);
        assert!(!r.entities);
        assert_eq!(r.literals.len(), 1);
    }

    #[test]
    fn context_fields_read() {
        let bit = |name| field_bit(name).unwrap();
        assert_eq!(reads("context.hour < 8").context, bit("hour"));
        assert_eq!(
            reads("context has idp && context.to like \"x*\"").context,
            bit("idp") | bit("to")
        );
        assert_eq!(reads("principal has user").context, 0);
        assert_eq!(reads("context.extra == 1").context, ALL_FIELDS);
        assert_eq!(reads("context == {}").context, ALL_FIELDS);
        assert_eq!(reads("{a: context}.a.hour < 8").context, ALL_FIELDS);
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
