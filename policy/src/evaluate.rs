//! Evaluating the candidate policies of one request with Cedar's evaluator, and combining
//! their results as Cedar's authorizer does: a satisfied forbid denies, else a satisfied permit
//! allows, else the default denies; a policy whose evaluation errs is skipped and reported.

use crate::decision::Decision;
use crate::index::Compiled;
use crate::query::Facts;
use cedar_policy_core::ast::{Literal, Request, SlotEnv, Value, ValueKind};
use cedar_policy_core::entities::Entities;
use cedar_policy_core::evaluator::Evaluator;
use cedar_policy_core::extensions::Extensions;

/// Evaluates `candidates` (indices into `policies`, whose scopes admit the request) for the
/// request `request` makes against `entities`: compiled conditions on `facts`, the others with
/// Cedar's evaluator. The request (and its context record) is made only if some candidate
/// needs Cedar's evaluator.
pub(crate) fn evaluate(
    request: impl FnOnce() -> Request,
    facts: &Facts<'_>,
    entities: &Entities,
    policies: &[Compiled],
    candidates: &[usize],
) -> Decision {
    let conditional = candidates
        .iter()
        .any(|&i| policies[i].condition.is_some() && policies[i].fast.is_none());
    let evaluator =
        conditional.then(|| Evaluator::new(request(), entities, Extensions::all_available()));
    let slots = SlotEnv::new();
    let mut permits = Vec::new();
    let mut forbids = Vec::new();
    let mut errors = Vec::new();
    for &i in candidates {
        let policy = &policies[i];
        let satisfied = match (&policy.condition, &evaluator) {
            (None, _) => true,
            (Some(_), _) if policy.fast.is_some() => {
                policy.fast.as_ref().is_some_and(|fast| fast.eval(facts))
            }
            // Not reached: there is an evaluator when some candidate has a condition.
            (Some(_), None) => false,
            (Some(condition), Some(evaluator)) => match evaluator.interpret(condition, &slots) {
                Ok(Value {
                    value: ValueKind::Lit(Literal::Bool(satisfied)),
                    ..
                }) => satisfied,
                // Cannot happen to a validated policy: conditions are boolean.
                Ok(other) => {
                    errors.push(format!(
                        "{}: condition is not a boolean: {other}",
                        policy.id
                    ));
                    false
                }
                Err(e) => {
                    errors.push(format!("{}: {e}", policy.id));
                    false
                }
            },
        };
        match (satisfied, policy.forbid) {
            (true, true) => forbids.push(i),
            (true, false) => permits.push(i),
            (false, _) => {}
        }
    }
    errors.sort_unstable();
    let (allowed, determining) = match (forbids.is_empty(), permits.is_empty()) {
        (false, _) => (false, forbids),
        (true, false) => (true, permits),
        (true, true) => (false, Vec::new()),
    };
    let mut ids: Vec<String> = determining
        .iter()
        .map(|&i| policies[i].id.clone())
        .collect();
    ids.sort_unstable();
    Decision {
        allowed,
        policies: ids,
        errors,
    }
}
