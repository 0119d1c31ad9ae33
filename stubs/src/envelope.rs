//! The envelope crossing the boundary: a parsed [`Envelope`] to the WIT record (header typed,
//! body and other fields as JSON text) and back (the record's fields written as one JSON text,
//! then parsed and validated like any message from a runtime).

use rethink_proto::Envelope;
use serde_json::value::RawValue;

use crate::bindings::WitEnvelope;
use crate::error::Failure;

const HEADER: [&str; 5] = ["id", "type", "from", "to", "body"];

/// The WIT record of `env`.
pub(crate) fn to_wit(env: &Envelope) -> WitEnvelope {
    WitEnvelope {
        id: env.id_json().to_owned(),
        type_: env.kind().as_str().to_owned(),
        from: env.from().to_owned(),
        to: env.to().map(str::to_owned).collect(),
        body: env.body_json().map(str::to_owned),
        extra: extra_of(env.json()),
    }
}

/// The top-level fields other than the header and body, as one JSON object's text.
fn extra_of(json: &str) -> Option<String> {
    type Fields<'a> = Vec<(std::borrow::Cow<'a, str>, &'a RawValue)>;
    let map: std::collections::BTreeMap<std::borrow::Cow<'_, str>, &RawValue> =
        serde_json::from_str(json).ok()?;
    let others: Fields<'_> = map
        .into_iter()
        .filter(|(k, _)| !HEADER.contains(&k.as_ref()))
        .collect();
    if others.is_empty() {
        return None;
    }
    let mut out = String::from("{");
    for (k, v) in others {
        if out.len() > 1 {
            out.push(',');
        }
        out.push_str(&serde_json::to_string(&k).ok()?);
        out.push(':');
        out.push_str(v.get());
    }
    out.push('}');
    Some(out)
}

/// The envelope a guest sent, as a message the bus can route: 400 if it is malformed.
pub(crate) fn from_wit(w: &WitEnvelope) -> Result<Envelope, Failure> {
    let bad = |what: &str| Failure::new(400, format!("malformed envelope: {what}"));
    if serde_json::from_str::<&RawValue>(&w.id).is_err() {
        return Err(bad("`id` is not JSON text"));
    }
    let mut text = String::with_capacity(
        64 + w.id.len()
            + w.from.len()
            + w.to.iter().map(|t| t.len() + 3).sum::<usize>()
            + w.body.as_ref().map_or(0, String::len)
            + w.extra.as_ref().map_or(0, String::len),
    );
    let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
    text.push_str("{\"id\":");
    text.push_str(w.id.trim());
    text.push_str(",\"type\":");
    text.push_str(&q(&w.type_));
    text.push_str(",\"from\":");
    text.push_str(&q(&w.from));
    text.push_str(",\"to\":");
    match w.to.as_slice() {
        [one] => text.push_str(&q(one)),
        [] => return Err(bad("`to` is empty")),
        many => {
            text.push('[');
            for (i, t) in many.iter().enumerate() {
                if i > 0 {
                    text.push(',');
                }
                text.push_str(&q(t));
            }
            text.push(']');
        }
    }
    if let Some(body) = &w.body {
        let raw: &RawValue =
            serde_json::from_str(body).map_err(|_| bad("`body` is not JSON text"))?;
        if !raw.get().starts_with('{') {
            return Err(bad("`body` is not a JSON object"));
        }
        text.push_str(",\"body\":");
        text.push_str(raw.get());
    }
    if let Some(extra) = &w.extra {
        let map: std::collections::BTreeMap<std::borrow::Cow<'_, str>, &RawValue> =
            serde_json::from_str(extra).map_err(|_| bad("`extra` is not a JSON object"))?;
        for (k, v) in map {
            if HEADER.contains(&k.as_ref()) || k == "seq" {
                return Err(bad("`extra` repeats a header field"));
            }
            text.push(',');
            text.push_str(&q(&k));
            text.push(':');
            text.push_str(v.get());
        }
    }
    text.push('}');
    Envelope::parse(&text).map_err(|e| Failure::new(400, format!("malformed envelope: {e}")))
}
