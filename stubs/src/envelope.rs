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
        // Most messages have none: no second parse for them.
        extra: if env.has_extra_fields() {
            extra_of(env.json())
        } else {
            None
        },
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
    let mut text = String::with_capacity(
        64 + w.id.len()
            + w.from.len()
            + w.to.iter().map(|t| t.len() + 3).sum::<usize>()
            + w.body.as_ref().map_or(0, String::len)
            + w.extra.as_ref().map_or(0, String::len),
    );
    let q = |s: &str| {
        // Addresses and types rarely need escapes: copied as they are when they do not.
        if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
            let mut out = String::with_capacity(s.len() + 2);
            out.push('"');
            out.push_str(s);
            out.push('"');
            out
        } else {
            serde_json::to_string(s).unwrap_or_default()
        }
    };
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
    let body = w.body.as_deref().map(str::trim);
    if let Some(body) = body {
        if !body.starts_with('{') {
            return Err(bad("`body` is not a JSON object"));
        }
        text.push_str(",\"body\":");
        text.push_str(body);
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
    // One parse checks everything. `id` and `body` went in as text: a value that is not one
    // JSON value, or that smuggles more fields in, parses to other spans (or not at all).
    let env = Envelope::parse(&text)
        .map_err(|e| Failure::new(400, format!("malformed envelope: {e}")))?;
    if env.id_json() != w.id.trim() {
        return Err(bad("`id` is not one JSON value"));
    }
    if env.body_json() != body {
        return Err(bad("`body` is not one JSON object"));
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wit(id: &str, body: Option<&str>, extra: Option<&str>) -> WitEnvelope {
        WitEnvelope {
            id: id.into(),
            type_: "update".into(),
            from: "hyperty://a.test/x".into(),
            to: vec!["hyperty://a.test/y".into()],
            body: body.map(Into::into),
            extra: extra.map(Into::into),
        }
    }

    #[test]
    fn a_guest_envelope_round_trips() {
        let env = from_wit(&wit("7", Some(r#"{"v":"a\"b"}"#), Some(r#"{"cseq":3}"#))).unwrap();
        assert_eq!(env.id_json(), "7");
        assert_eq!(env.body_json(), Some(r#"{"v":"a\"b"}"#));
        assert!(env.has_extra_fields());
        let back = to_wit(&env);
        assert_eq!(back.extra.as_deref(), Some(r#"{"cseq":3}"#));
        let plain = from_wit(&wit("\"s\"", None, None)).unwrap();
        assert!(!plain.has_extra_fields());
        assert_eq!(to_wit(&plain).extra, None);
    }

    #[test]
    fn fields_smuggled_through_id_or_body_are_refused() {
        for (id, body) in [
            (r#"1,"from":"hyperty://evil.test/z""#, None),
            (r#"1,"cseq":9"#, None),
            ("1", Some(r#"{"a":1},"from":"hyperty://evil.test/z""#)),
            ("1", Some(r#"{"a":1},"cseq":9"#)),
            ("1", Some(r#"{"a":1}}"#)),
            ("1", Some(r#"{"a":"#)),
            ("1", Some("[1]")),
            ("{}", None),
        ] {
            let got = from_wit(&wit(id, body, None));
            assert_eq!(
                got.as_ref().map_err(|f| f.code).err(),
                Some(400),
                "id {id}, body {body:?}: {got:?}"
            );
        }
    }

    #[test]
    fn strings_that_need_escapes_are_escaped() {
        let mut w = wit("1", None, None);
        w.type_ = "up\"date".into();
        let env = from_wit(&w).unwrap();
        assert_eq!(env.kind().as_str(), "up\"date");
    }
}
