//! Strict validation of the policy set against the schema; the first error (in file order)
//! is reported with its file, position and policy id.

use crate::error::PolicyError;
use crate::parse::{Parsed, locate};
use crate::sources::Source;
use crate::span::{describe, offset, position};
use cedar_policy::{Schema, ValidationMode, Validator};

/// Validates every policy of `parsed` strictly against `schema`.
pub(crate) fn validate(
    schema: &Schema,
    parsed: &Parsed,
    files: &[Source<'_>],
) -> Result<(), PolicyError> {
    let validator = Validator::new(schema.clone());
    let result = validator.validate(&parsed.set, ValidationMode::Strict);
    let first = result
        .validation_errors()
        .map(|error| {
            let id = error.policy_id();
            let file_index = parsed.origin.get(id).copied().unwrap_or(0);
            let file = files.get(file_index);
            let text = file.map_or("", |f| f.text);
            let at = offset(error).unwrap_or_else(|| {
                parsed
                    .set
                    .policy(id)
                    .map_or(0, |p| locate(text, &p.to_string()))
            });
            (file_index, at, error)
        })
        .min_by_key(|(file_index, at, _)| (*file_index, *at));
    match first {
        None => Ok(()),
        Some((file_index, at, error)) => {
            let file = files.get(file_index);
            let at = position(file.map_or("", |f| f.text), at);
            let policy = error.policy_id().to_string();
            // Cedar starts its messages with the policy, which the error names on its own.
            let message = describe(error);
            let prefix = format!("for policy `{policy}`, ");
            let message = message
                .strip_prefix(&prefix)
                .map_or(message.clone(), str::to_owned);
            Err(PolicyError::Validation {
                file: file.map_or_else(String::new, |f| f.name.to_owned()),
                line: at.line,
                col: at.col,
                policy,
                message,
            })
        }
    }
}
