//! The Cedar context record built from the query's [`Facts`].

use crate::query::Facts;
use cedar_policy_core::ast::{Context, Value};
use smol_str::SmolStr;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The names of the context fields, in the order of [`context`]'s record; bit `i` of a field
/// mask stands for `FIELDS[i]`.
pub(crate) const FIELDS: [&str; 16] = [
    "time",
    "weekday",
    "hour",
    "transport",
    "message_type",
    "from",
    "to",
    "from_scheme",
    "to_scheme",
    "from_domain",
    "to_domain",
    "size",
    "authenticated",
    "idp",
    "rate_per_minute",
    "allocations",
];

/// The mask of every field.
pub(crate) const ALL_FIELDS: u32 = (1 << FIELDS.len()) - 1;

/// The mask bit of the field `name`, if the node fills it.
pub(crate) fn field_bit(name: &str) -> Option<u32> {
    FIELDS.iter().position(|f| *f == name).map(|i| 1 << i)
}

/// The context of a request: one attribute per field of `facts`, named as in the schema.
#[cfg(test)]
pub(crate) fn context(facts: &Facts<'_>) -> Context {
    context_of(facts, ALL_FIELDS)
}

/// The context of a request with only the fields in `mask`: evaluating conditions that read no
/// other field (see [`Reads`](crate::reads::Reads)) gives the same results as on the whole
/// record, and the record costs less to build.
pub(crate) fn context_of(facts: &Facts<'_>, mask: u32) -> Context {
    let string = |s: &str| Value::from(SmolStr::new(s));
    let value = |i: usize| match i {
        0 => Value::from(facts.time),
        1 => Value::from(facts.weekday),
        2 => Value::from(facts.hour),
        3 => string(facts.transport),
        4 => string(facts.message_type),
        5 => string(facts.from),
        6 => string(facts.to),
        7 => string(facts.from_scheme),
        8 => string(facts.to_scheme),
        9 => string(facts.from_domain),
        10 => string(facts.to_domain),
        11 => Value::from(facts.size),
        12 => Value::from(facts.authenticated),
        13 => string(facts.idp),
        14 => Value::from(facts.rate_per_minute),
        _ => Value::from(facts.allocations),
    };
    let record: BTreeMap<SmolStr, Value> = FIELDS
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(i, name)| (SmolStr::new_static(name), value(i)))
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
        let mut fields = FIELDS.to_vec();
        fields.sort_unstable();
        assert_eq!(fields, declared);
    }

    #[test]
    fn a_mask_keeps_only_its_fields() {
        let mask = field_bit("hour").unwrap() | field_bit("to").unwrap();
        let Context::Value(record) = context_of(&Facts::default(), mask) else {
            panic!("a concrete context");
        };
        let keys: Vec<&str> = record.keys().map(SmolStr::as_str).collect();
        assert_eq!(keys, ["hour", "to"]);
        assert_eq!(field_bit("nope"), None);
    }
}
