//! The Cedar context record built from the query's [`Facts`].

use crate::query::Facts;
use cedar_policy_core::ast::{Context, Value};
use smol_str::SmolStr;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The context of a request: one attribute per field of `facts`, named as in the schema.
pub(crate) fn context(facts: &Facts<'_>) -> Context {
    let string = |s: &str| Value::from(SmolStr::new(s));
    let pairs = [
        ("time", Value::from(facts.time)),
        ("weekday", Value::from(facts.weekday)),
        ("hour", Value::from(facts.hour)),
        ("transport", string(facts.transport)),
        ("message_type", string(facts.message_type)),
        ("from", string(facts.from)),
        ("to", string(facts.to)),
        ("from_scheme", string(facts.from_scheme)),
        ("to_scheme", string(facts.to_scheme)),
        ("from_domain", string(facts.from_domain)),
        ("to_domain", string(facts.to_domain)),
        ("size", Value::from(facts.size)),
        ("authenticated", Value::from(facts.authenticated)),
        ("idp", string(facts.idp)),
        ("rate_per_minute", Value::from(facts.rate_per_minute)),
        ("allocations", Value::from(facts.allocations)),
    ];
    let record: BTreeMap<SmolStr, Value> = pairs
        .into_iter()
        .map(|(k, v)| (SmolStr::new_static(k), v))
        .collect();
    Context::Value(Arc::new(record))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field of the schema's `Facts` record, and no other, is in the context.
    #[test]
    fn context_matches_the_schema() {
        let schema = crate::SCHEMA;
        let start = schema.find("type Facts = {").unwrap();
        let end = start + schema[start..].find("};").unwrap();
        let mut declared: Vec<&str> = schema[start..end]
            .lines()
            .skip(1)
            .filter_map(|l| l.trim().split_once(':').map(|(k, _)| k))
            .collect();
        declared.sort_unstable();
        let Context::Value(record) = context(&Facts::default()) else {
            panic!("a concrete context");
        };
        let keys: Vec<&str> = record.keys().map(SmolStr::as_str).collect();
        assert_eq!(keys, declared);
    }
}
