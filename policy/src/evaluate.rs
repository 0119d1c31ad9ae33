//! Evaluating the candidate policies of one request with Cedar's evaluator, and combining
//! their results as Cedar's authorizer does: a satisfied forbid denies, else a satisfied permit
//! allows, else the default denies; a policy whose evaluation errs is skipped and reported.

use crate::decision::Decision;
use crate::index::Compiled;
use cedar_policy_core::ast::{Literal, Request, SlotEnv, Value, ValueKind};
use cedar_policy_core::entities::Entities;
use cedar_policy_core::evaluator::Evaluator;
use cedar_policy_core::extensions::Extensions;

/// Evaluates `candidates` (indices into `policies`, whose scopes admit the request) for
/// `request` against `entities`.
pub(crate) fn evaluate(
    request: Request,
    entities: &Entities,
    policies: &[Compiled],
    candidates: &[usize],
) -> Decision {
    let evaluator = Evaluator::new(request, entities, Extensions::all_available());
    let slots = SlotEnv::new();
    let mut permits = Vec::new();
    let mut forbids = Vec::new();
    let mut errors = Vec::new();
    for &i in candidates {
        let policy = &policies[i];
        let Some(condition) = &policy.condition else {
            if policy.forbid {
                forbids.push(policy.id.clone());
            } else {
                permits.push(policy.id.clone());
            }
            continue;
        };
        match evaluator.interpret(condition, &slots) {
            Ok(Value {
                value: ValueKind::Lit(Literal::Bool(satisfied)),
                ..
            }) => {
                if satisfied && policy.forbid {
                    forbids.push(policy.id.clone());
                } else if satisfied {
                    permits.push(policy.id.clone());
                }
            }
            // Cannot happen to a validated policy: conditions are boolean.
            Ok(other) => errors.push(format!(
                "{}: condition is not a boolean: {other}",
                policy.id
            )),
            Err(e) => errors.push(format!("{}: {e}", policy.id)),
        }
    }
    errors.sort_unstable();
    let (allowed, mut ids) = match (forbids.is_empty(), permits.is_empty()) {
        (false, _) => (false, forbids),
        (true, false) => (true, permits),
        (true, true) => (false, Vec::new()),
    };
    ids.sort_unstable();
    Decision {
        allowed,
        policies: ids,
        errors,
    }
}
