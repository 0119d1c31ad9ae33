//! rethink-guest-envelope: a reTHINK message as our guests hold it ([`Msg`], the fields of the
//! WIT `envelope` record), read from and written to the JSON text of one message.
//!
//! Nothing is reformatted: `id`, `body` and every other top-level field keep their exact JSON
//! text, so a message relayed through a stub arrives as it was sent (only the order of the
//! unknown top-level fields may change: they are written in key order).
//!
//! Shared by the guests, which turn [`Msg`] into their generated `Envelope` field by field
//! (each guest's bindings have their own types).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// A reTHINK message, the fields of the WIT `envelope` record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Msg {
    /// The id as JSON text (`7` or `"a1"`).
    pub id: String,
    /// The message type.
    pub kind: String,
    pub from: String,
    /// One entry for a message with a single `to`.
    pub to: Vec<String>,
    /// The body object as JSON text.
    pub body: Option<String>,
    /// Every other top-level field, as the JSON text of one object.
    pub extra: Option<String>,
}

/// Why a text is not a reTHINK message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Not a JSON object.
    NotObject(String),
    /// A required field is missing or has the wrong type.
    Field(&'static str),
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotObject(e) => write!(f, "not a JSON object: {e}"),
            Self::Field(name) => write!(f, "missing or invalid field `{name}`"),
        }
    }
}

impl std::error::Error for ParseError {}

type Fields = BTreeMap<String, Box<RawValue>>;

/// The fields of one JSON object, in text order, borrowed from the text (a key with escapes is
/// unescaped into its own string). Reading a message this way allocates nothing per field.
struct Top<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'a> Top<'a> {
    fn parse(text: &'a str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The value of `key` (the last one, should the key be repeated), taken out of the list.
    fn take(&mut self, key: &str) -> Option<&'a RawValue> {
        let last = self.0.iter().rposition(|(k, _)| k == key)?;
        let (_, value) = self.0.remove(last);
        // A repeated key's earlier values go too, as in a map; the others keep their order.
        if self.0[..last].iter().any(|(k, _)| k == key) {
            self.0.retain(|(k, _)| k != key);
        }
        Some(value)
    }

    /// The remaining fields as one object's text, in key order (the last of a repeated key),
    /// or `None` when none remain.
    fn rest(mut self) -> Option<String> {
        if self.0.is_empty() {
            return None;
        }
        // Stable: among equal keys the text order stays, and the last one is kept.
        self.0.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = String::from("{");
        for (i, (key, value)) in self.0.iter().enumerate() {
            if self.0.get(i + 1).is_some_and(|(next, _)| next == key) {
                continue;
            }
            if out.len() > 1 {
                out.push(',');
            }
            push_str_json(&mut out, key);
            out.push(':');
            out.push_str(value.get());
        }
        out.push('}');
        Some(out)
    }
}

impl<'de> Deserialize<'de> for Top<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Top<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Top<'de>, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(Key(key)) = map.next_key()? {
                    fields.push((key, map.next_value::<&'de RawValue>()?));
                }
                Ok(Top(fields))
            }
        }
        deserializer.deserialize_map(V)
    }
}

/// An object key, borrowed unless it has escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(V)
    }
}

/// The string a JSON string text stands for, borrowed when it has no escapes.
fn json_str(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = raw.get();
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.contains('\\') {
        // A string token without escapes: its text is the string (the parser checked it).
        return Some(Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(text).ok().map(Cow::Owned)
}

impl Msg {
    /// Reads one message from the JSON text of an object.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let fields = Top::parse(text).map_err(|e| ParseError::NotObject(e.to_string()))?;
        Self::from_top(fields)
    }

    /// Reads one message from the raw fields of an object.
    pub fn from_fields(fields: Fields) -> Result<Self, ParseError> {
        Self::from_top(Top(fields
            .iter()
            .map(|(k, v)| (Cow::Borrowed(k.as_str()), v.as_ref()))
            .collect()))
    }

    fn from_top(mut fields: Top<'_>) -> Result<Self, ParseError> {
        let id = fields.take("id").ok_or(ParseError::Field("id"))?;
        if !(id.get().starts_with('"')
            || id
                .get()
                .starts_with(|c: char| c.is_ascii_digit() || c == '-'))
        {
            return Err(ParseError::Field("id"));
        }
        let kind = string_field(&mut fields, "type")?;
        let from = string_field(&mut fields, "from")?;
        let to_raw = fields.take("to").ok_or(ParseError::Field("to"))?;
        let to = match json_str(to_raw) {
            Some(one) => vec![one.into_owned()],
            None => serde_json::from_str::<Vec<String>>(to_raw.get())
                .map_err(|_| ParseError::Field("to"))?,
        };
        if to.is_empty() {
            return Err(ParseError::Field("to"));
        }
        let body = match fields.take("body") {
            Some(raw) if raw.get() == "null" => None,
            Some(raw) if raw.get().starts_with('{') => Some(raw.get().to_owned()),
            Some(_) => return Err(ParseError::Field("body")),
            None => None,
        };
        Ok(Self {
            id: id.get().to_owned(),
            kind,
            from,
            to,
            body,
            extra: fields.rest(),
        })
    }

    /// The JSON text of the message: `to` is a string when there is one recipient.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(
            64 + self.from.len()
                + self.to.iter().map(String::len).sum::<usize>()
                + self.body.as_ref().map_or(0, String::len)
                + self.extra.as_ref().map_or(0, String::len),
        );
        out.push_str("{\"id\":");
        out.push_str(&self.id);
        out.push_str(",\"type\":");
        push_str_json(&mut out, &self.kind);
        out.push_str(",\"from\":");
        push_str_json(&mut out, &self.from);
        out.push_str(",\"to\":");
        if let [one] = self.to.as_slice() {
            push_str_json(&mut out, one);
        } else {
            out.push('[');
            for (i, to) in self.to.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_str_json(&mut out, to);
            }
            out.push(']');
        }
        if let Some(body) = &self.body {
            out.push_str(",\"body\":");
            out.push_str(body);
        }
        if let Some(mut fields) = self.extra.as_deref().and_then(|t| Top::parse(t).ok()) {
            for key in ["id", "type", "from", "to", "body"] {
                fields.take(key);
            }
            if let Some(rest) = fields.rest() {
                // `{...}`: its fields follow the header's.
                out.push(',');
                out.push_str(&rest[1..rest.len() - 1]);
            }
        }
        out.push('}');
        out
    }

    /// The extra top-level fields (empty when there are none or `extra` is not an object).
    pub fn extra_fields(&self) -> Fields {
        self.extra
            .as_deref()
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or_default()
    }

    /// Removes the extra top-level field `key`, returning its JSON text.
    pub fn take_extra(&mut self, key: &str) -> Option<String> {
        let text = self.extra.as_deref()?;
        let mut fields = Top::parse(text).ok()?;
        let taken = fields.take(key)?.get().to_owned();
        self.extra = fields.rest();
        Some(taken)
    }

    /// Sets the extra top-level field `key` to the JSON text `value` (nothing changes when
    /// `value` is not one JSON value); the other extra fields stay.
    pub fn set_extra(&mut self, key: &str, value: &str) {
        let Ok(raw) = serde_json::from_str::<&RawValue>(value) else {
            return;
        };
        let mut fields = self
            .extra
            .as_deref()
            .and_then(|text| Top::parse(text).ok())
            .unwrap_or(Top(Vec::new()));
        // Last, so it wins over an earlier value of the same key.
        fields.0.push((Cow::Borrowed(key), raw));
        self.extra = fields.rest();
    }

    /// The body as a JSON value (`Null` when absent or unreadable).
    pub fn body_value(&self) -> serde_json::Value {
        self.body
            .as_deref()
            .and_then(|b| serde_json::from_str(b).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    /// A `response` to this message: from its first `to`, to its `from`, the same `id`, with
    /// `body` `{code, ...fields}`.
    pub fn reply(&self, body: serde_json::Value) -> Msg {
        Msg {
            id: self.id.clone(),
            kind: "response".to_owned(),
            from: self.to.first().cloned().unwrap_or_default(),
            to: vec![self.from.clone()],
            body: Some(body.to_string()),
            extra: None,
        }
    }
}

fn string_field(fields: &mut Top<'_>, name: &'static str) -> Result<String, ParseError> {
    let raw = fields.take(name).ok_or(ParseError::Field(name))?;
    json_str(raw)
        .map(Cow::into_owned)
        .ok_or(ParseError::Field(name))
}

/// Writes `s` as a JSON string: copied as it is when nothing in it needs an escape.
pub fn push_str_json(out: &mut String, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        // serde_json writes a string as JSON text; writing into a String cannot fail.
        let _ = write!(out, "{}", serde_json::Value::from(s));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_the_text_of_id_body_and_extra() {
        let text = r#"{"id":"a1","type":"create","from":"hyperty://d/a","to":["hyperty://d/b","hyperty://d/c"],"body":{"x": 1.50},"seq":7,"aa":[1]}"#;
        let mut m = Msg::parse(text).expect("parses");
        assert_eq!(m.id, "\"a1\"");
        assert_eq!(m.body.as_deref(), Some(r#"{"x": 1.50}"#));
        assert_eq!(m.extra.as_deref(), Some(r#"{"aa":[1],"seq":7}"#));
        assert_eq!(m.take_extra("seq").as_deref(), Some("7"));
        assert_eq!(
            m.to_json(),
            r#"{"id":"a1","type":"create","from":"hyperty://d/a","to":["hyperty://d/b","hyperty://d/c"],"body":{"x": 1.50},"aa":[1]}"#
        );
        let one = Msg::parse(r#"{"id":3,"type":"read","from":"a://x/y","to":"b://x/y"}"#)
            .expect("parses");
        assert_eq!(one.to, vec!["b://x/y"]);
        assert_eq!(
            one.to_json(),
            r#"{"id":3,"type":"read","from":"a://x/y","to":"b://x/y"}"#
        );
    }

    #[test]
    fn refuses_what_is_not_a_message() {
        assert!(matches!(Msg::parse("[1]"), Err(ParseError::NotObject(_))));
        assert_eq!(
            Msg::parse(r#"{"id":1,"type":"read","from":"a://x/y"}"#),
            Err(ParseError::Field("to"))
        );
        assert_eq!(
            Msg::parse(r#"{"id":1,"type":"read","from":"a://x/y","to":[]}"#),
            Err(ParseError::Field("to"))
        );
        assert_eq!(
            Msg::parse(r#"{"id":1,"type":"read","from":"a://x/y","to":"b://x/y","body":3}"#),
            Err(ParseError::Field("body"))
        );
    }

    #[test]
    fn repeated_and_escaped_keys_read_as_a_map_would() {
        // The last of a repeated key wins; extra fields come out in key order, once each.
        let m = Msg::parse(
            r#"{"id":1,"type":"a","type":"b","from":"x://d/a","to":"y://d/b","z":1,"\u0073eq":2,"z":3}"#,
        )
        .expect("parses");
        assert_eq!(m.kind, "b");
        assert_eq!(m.extra.as_deref(), Some(r#"{"seq":2,"z":3}"#));
        let escaped = Msg::parse(r#"{"id":1,"type":"a\"b","from":"x://d/a","to":"y://d/\u0062"}"#)
            .expect("parses");
        assert_eq!(escaped.kind, "a\"b");
        assert_eq!(escaped.to, vec!["y://d/b"]);
        assert_eq!(
            escaped.to_json(),
            r#"{"id":1,"type":"a\"b","from":"x://d/a","to":"y://d/b"}"#
        );
    }

    #[test]
    fn extra_fields_are_set_and_taken() {
        let mut m =
            Msg::parse(r#"{"id":1,"type":"a","from":"x://d/a","to":"y://d/b"}"#).expect("parses");
        assert_eq!(m.take_extra("seq"), None);
        m.set_extra("cseq", "4");
        assert_eq!(m.extra.as_deref(), Some(r#"{"cseq":4}"#));
        m.set_extra("b", "[1, 2]");
        m.set_extra("cseq", "5");
        m.set_extra("bad", "not json");
        assert_eq!(m.extra.as_deref(), Some(r#"{"b":[1, 2],"cseq":5}"#));
        assert_eq!(m.take_extra("cseq").as_deref(), Some("5"));
        assert_eq!(m.take_extra("cseq"), None);
        assert_eq!(m.take_extra("b").as_deref(), Some("[1, 2]"));
        assert_eq!(m.extra, None);
    }
}
