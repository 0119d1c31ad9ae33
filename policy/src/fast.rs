//! Conditions on the context alone, compiled to a small tree evaluated on the query's
//! [`Facts`] directly.
//!
//! Most operator conditions compare context facts with constants (`context.hour < 8`,
//! `context.from_domain != context.to_domain`, `context.to like "domain://*"`). Cedar's
//! evaluator builds the context record and walks its general AST for them; this tree answers
//! the same without either. Only a subset compiles, where Cedar's evaluation cannot fail: boolean,
//! long and string literals, the node's own context fields, `&&`, `||`, `!`, `if`, `==`, `<`,
//! `<=` (`!=`, `>` and `>=` are written with those), `like`, and `context has <field>`. Anything
//! else (arithmetic, which can overflow; entities; sets; extension functions; a field the node
//! does not fill) leaves the condition to Cedar. A test checks both agree.

use crate::query::Facts;
use cedar_policy_core::ast::{BinaryOp, Expr, ExprKind, Literal, Pattern, UnaryOp, Var};

/// A compiled condition.
#[derive(Debug, Clone)]
pub(crate) struct Fast(Cond);

/// A boolean expression.
#[derive(Debug, Clone)]
pub(crate) enum Cond {
    Const(bool),
    Field(BoolField),
    Not(Box<Cond>),
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
    If(Box<Cond>, Box<Cond>, Box<Cond>),
    LongLess(Long, Long),
    LongLessEq(Long, Long),
    Eq(Operand, Operand),
    Like(Str, Pattern),
}

/// A long operand.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Long {
    Const(i64),
    Field(LongField),
}

/// A string operand.
#[derive(Debug, Clone)]
pub(crate) enum Str {
    Const(Box<str>),
    Field(StrField),
}

/// Any operand of `==`.
#[derive(Debug, Clone)]
pub(crate) enum Operand {
    Bool(Box<Cond>),
    Long(Long),
    Str(Str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BoolField {
    Authenticated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LongField {
    Time,
    Weekday,
    Hour,
    Size,
    RatePerMinute,
    Allocations,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StrField {
    Transport,
    MessageType,
    From,
    To,
    FromScheme,
    ToScheme,
    FromDomain,
    ToDomain,
    Idp,
}

/// A context field the node fills, by its name in the schema.
#[derive(Debug, Clone, Copy)]
enum Field {
    Bool(BoolField),
    Long(LongField),
    Str(StrField),
}

fn field(name: &str) -> Option<Field> {
    use {BoolField as B, LongField as L, StrField as S};
    Some(match name {
        "authenticated" => Field::Bool(B::Authenticated),
        "time" => Field::Long(L::Time),
        "weekday" => Field::Long(L::Weekday),
        "hour" => Field::Long(L::Hour),
        "size" => Field::Long(L::Size),
        "rate_per_minute" => Field::Long(L::RatePerMinute),
        "allocations" => Field::Long(L::Allocations),
        "transport" => Field::Str(S::Transport),
        "message_type" => Field::Str(S::MessageType),
        "from" => Field::Str(S::From),
        "to" => Field::Str(S::To),
        "from_scheme" => Field::Str(S::FromScheme),
        "to_scheme" => Field::Str(S::ToScheme),
        "from_domain" => Field::Str(S::FromDomain),
        "to_domain" => Field::Str(S::ToDomain),
        "idp" => Field::Str(S::Idp),
        _ => return None,
    })
}

impl Fast {
    /// Compiles `condition`, if it is in the subset.
    pub(crate) fn compile(condition: &Expr) -> Option<Self> {
        cond(condition).map(Self)
    }

    /// The condition's value on `facts`.
    pub(crate) fn eval(&self, facts: &Facts<'_>) -> bool {
        self.0.eval(facts)
    }
}

/// The operand an expression is, if it is in the subset.
fn operand(e: &Expr) -> Option<Operand> {
    match e.expr_kind() {
        ExprKind::Lit(Literal::Long(n)) => Some(Operand::Long(Long::Const(*n))),
        ExprKind::Lit(Literal::String(s)) => Some(Operand::Str(Str::Const(s.as_str().into()))),
        ExprKind::GetAttr { expr, attr } if is_context(expr) => match field(attr)? {
            Field::Long(f) => Some(Operand::Long(Long::Field(f))),
            Field::Str(f) => Some(Operand::Str(Str::Field(f))),
            Field::Bool(f) => Some(Operand::Bool(Box::new(Cond::Field(f)))),
        },
        _ => cond(e).map(|c| Operand::Bool(Box::new(c))),
    }
}

fn long(e: &Expr) -> Option<Long> {
    match operand(e)? {
        Operand::Long(l) => Some(l),
        _ => None,
    }
}

fn is_context(e: &Expr) -> bool {
    matches!(e.expr_kind(), ExprKind::Var(Var::Context))
}

/// The boolean expression `e` is, if it is in the subset.
fn cond(e: &Expr) -> Option<Cond> {
    let boxed = |e: &Expr| cond(e).map(Box::new);
    Some(match e.expr_kind() {
        ExprKind::Lit(Literal::Bool(b)) => Cond::Const(*b),
        ExprKind::GetAttr { expr, attr } if is_context(expr) => match field(attr)? {
            Field::Bool(f) => Cond::Field(f),
            _ => return None,
        },
        ExprKind::HasAttr { expr, attr } if is_context(expr) => {
            field(attr)?;
            Cond::Const(true)
        }
        ExprKind::UnaryApp {
            op: UnaryOp::Not,
            arg,
        } => Cond::Not(boxed(arg)?),
        ExprKind::And { left, right } => Cond::And(boxed(left)?, boxed(right)?),
        ExprKind::Or { left, right } => Cond::Or(boxed(left)?, boxed(right)?),
        ExprKind::If {
            test_expr,
            then_expr,
            else_expr,
        } => Cond::If(boxed(test_expr)?, boxed(then_expr)?, boxed(else_expr)?),
        ExprKind::BinaryApp { op, arg1, arg2 } => match op {
            BinaryOp::Less => Cond::LongLess(long(arg1)?, long(arg2)?),
            BinaryOp::LessEq => Cond::LongLessEq(long(arg1)?, long(arg2)?),
            BinaryOp::Eq => Cond::Eq(operand(arg1)?, operand(arg2)?),
            _ => return None,
        },
        ExprKind::Like { expr, pattern } => match operand(expr)? {
            Operand::Str(s) => Cond::Like(s, pattern.clone()),
            _ => return None,
        },
        _ => return None,
    })
}

impl Cond {
    fn eval(&self, f: &Facts<'_>) -> bool {
        match self {
            Self::Const(b) => *b,
            Self::Field(BoolField::Authenticated) => f.authenticated,
            Self::Not(c) => !c.eval(f),
            Self::And(a, b) => a.eval(f) && b.eval(f),
            Self::Or(a, b) => a.eval(f) || b.eval(f),
            Self::If(t, a, b) => {
                if t.eval(f) {
                    a.eval(f)
                } else {
                    b.eval(f)
                }
            }
            Self::LongLess(a, b) => a.eval(f) < b.eval(f),
            Self::LongLessEq(a, b) => a.eval(f) <= b.eval(f),
            // Values of different types are not equal (Cedar's `==` does not fail on them).
            Self::Eq(a, b) => match (a, b) {
                (Operand::Bool(a), Operand::Bool(b)) => a.eval(f) == b.eval(f),
                (Operand::Long(a), Operand::Long(b)) => a.eval(f) == b.eval(f),
                (Operand::Str(a), Operand::Str(b)) => a.eval(f) == b.eval(f),
                (a, b) => {
                    // Both sides are still evaluated, as Cedar does (neither can fail).
                    a.touch(f);
                    b.touch(f);
                    false
                }
            },
            Self::Like(s, pattern) => pattern.wildcard_match(s.eval(f)),
        }
    }
}

impl Operand {
    fn touch(&self, f: &Facts<'_>) {
        if let Self::Bool(c) = self {
            c.eval(f);
        }
    }
}

impl Long {
    fn eval(self, f: &Facts<'_>) -> i64 {
        use LongField as L;
        match self {
            Self::Const(n) => n,
            Self::Field(L::Time) => f.time,
            Self::Field(L::Weekday) => f.weekday,
            Self::Field(L::Hour) => f.hour,
            Self::Field(L::Size) => f.size,
            Self::Field(L::RatePerMinute) => f.rate_per_minute,
            Self::Field(L::Allocations) => f.allocations,
        }
    }
}

impl Str {
    fn eval<'f>(&'f self, f: &Facts<'f>) -> &'f str {
        use StrField as S;
        match self {
            Self::Const(s) => s,
            Self::Field(S::Transport) => f.transport,
            Self::Field(S::MessageType) => f.message_type,
            Self::Field(S::From) => f.from,
            Self::Field(S::To) => f.to,
            Self::Field(S::FromScheme) => f.from_scheme,
            Self::Field(S::ToScheme) => f.to_scheme,
            Self::Field(S::FromDomain) => f.from_domain,
            Self::Field(S::ToDomain) => f.to_domain,
            Self::Field(S::Idp) => f.idp,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::context;
    use crate::names::{Types, uid};
    use cedar_policy::Policy;
    use cedar_policy_core::ast::{EntityUIDEntry, Request, SlotEnv, Value, ValueKind};
    use cedar_policy_core::entities::Entities;
    use cedar_policy_core::evaluator::Evaluator;
    use cedar_policy_core::extensions::Extensions;
    use std::str::FromStr;

    fn condition(text: &str) -> Expr {
        let policy = format!("permit(principal, action, resource) when {{ {text} }};");
        let policy = Policy::from_str(&policy).unwrap_or_else(|e| panic!("{text}: {e}"));
        let ast: &cedar_policy_core::ast::Policy = policy.as_ref();
        ast.non_scope_constraints().cloned().unwrap()
    }

    fn cedar(expr: &Expr, facts: &Facts<'_>) -> bool {
        let types = Types::new();
        let request = Request::new_unchecked(
            EntityUIDEntry::known(uid(&types.user, "u"), None),
            EntityUIDEntry::known(uid(&types.action, "update"), None),
            EntityUIDEntry::known(uid(&types.hyperty, "h"), None),
            Some(context(facts)),
        );
        let entities = Entities::new();
        let evaluator = Evaluator::new(request, &entities, Extensions::all_available());
        match evaluator.interpret(expr, &SlotEnv::new()) {
            Ok(Value {
                value: ValueKind::Lit(Literal::Bool(b)),
                ..
            }) => b,
            other => panic!("{expr}: {other:?}"),
        }
    }

    const IN_SUBSET: [&str; 16] = [
        "context.hour < 8",
        "context.hour >= 8 && context.hour <= 17",
        "context.weekday > 4 || context.size >= 100",
        "context.from_domain != context.to_domain",
        "context.from_domain == \"example.com\"",
        "context.to like \"domain://registry.*\"",
        "context.from like \"*example.com/*\"",
        "!context.authenticated",
        "context.authenticated == true",
        "context.authenticated == (context.hour < 12)",
        "context has idp && context.idp == \"\"",
        "if context.size > 10 then context.rate_per_minute > 20 else context.allocations < 3",
        "context.time <= 1767700800 && context.transport == \"ws\"",
        "context.message_type == \"PING\" && !(context.to_scheme == context.from_scheme)",
        "context.hour == \"12\"",
        "true && !false",
    ];

    #[test]
    fn compiled_conditions_agree_with_cedar() {
        let mut facts = Vec::new();
        for (hour, size, authenticated) in [(3, 10, true), (12, 500, false), (17, 100, true)] {
            for (from, to) in [
                ("hyperty://example.com/1", "domain://registry.example.com"),
                ("hyperty://other.net/1", "hyperty://example.com/x"),
            ] {
                facts.push(Facts {
                    time: 1_767_700_800 + i64::from(authenticated),
                    weekday: hour % 7,
                    hour,
                    transport: "ws",
                    message_type: if size > 100 { "PING" } else { "update" },
                    from,
                    to,
                    from_scheme: "hyperty",
                    to_scheme: to.split(':').next().unwrap(),
                    from_domain: crate::address::object_base(from).split('/').nth(2).unwrap(),
                    to_domain: "example.com",
                    size,
                    authenticated,
                    idp: if authenticated { "idp.com" } else { "" },
                    rate_per_minute: size / 10,
                    allocations: hour / 5,
                });
            }
        }
        for text in IN_SUBSET {
            let expr = condition(text);
            let fast = Fast::compile(&expr).unwrap_or_else(|| panic!("{text} did not compile"));
            let mut seen = [false; 2];
            for f in &facts {
                let expected = cedar(&expr, f);
                assert_eq!(fast.eval(f), expected, "{text} on {f:?}");
                seen[usize::from(expected)] = true;
            }
            if text != "true && !false" && text != "context.hour == \"12\"" {
                assert_eq!(seen, [true, true], "{text} is constant on the samples");
            }
        }
    }

    #[test]
    fn other_conditions_are_left_to_cedar() {
        for text in [
            "context.hour + 1 > 8",
            "-context.hour < 0",
            "principal has user",
            "principal == Rethink::User::\"x\"",
            "resource is Rethink::Object",
            "context.extra == 1",
            "context has extra",
            "[1, 2].contains(context.hour)",
            "context.hour.isEmpty()",
            "ip(\"10.0.0.1\").isLoopback()",
        ] {
            let expr = Policy::from_str(&format!(
                "permit(principal, action, resource) when {{ {text} }};"
            ))
            .map(|p| {
                let ast: &cedar_policy_core::ast::Policy = p.as_ref();
                ast.non_scope_constraints().cloned().unwrap()
            });
            if let Ok(expr) = expr {
                assert!(Fast::compile(&expr).is_none(), "{text} compiled");
            }
        }
    }
}
