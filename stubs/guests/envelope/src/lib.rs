//! rethink-guest-envelope: a reTHINK message as our guests hold it ([`Msg`], the fields of the
//! WIT `envelope` record), read from and written to the JSON text of one message.
//!
//! Nothing is reformatted: `id`, `body` and every other top-level field keep their exact JSON
//! text, so a message relayed through a stub arrives as it was sent (only the order of the
//! unknown top-level fields may change: they are written in key order).
//!
//! Shared by the guests, which turn [`Msg`] into their generated `Envelope` field by field
//! (each guest's bindings have their own types).

use std::collections::BTreeMap;
use std::fmt::Write as _;

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

impl Msg {
    /// Reads one message from the JSON text of an object.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let fields: Fields =
            serde_json::from_str(text).map_err(|e| ParseError::NotObject(e.to_string()))?;
        Self::from_fields(fields)
    }

    /// Reads one message from the raw fields of an object.
    pub fn from_fields(mut fields: Fields) -> Result<Self, ParseError> {
        let id = fields.remove("id").ok_or(ParseError::Field("id"))?;
        if !(id.get().starts_with('"')
            || id
                .get()
                .starts_with(|c: char| c.is_ascii_digit() || c == '-'))
        {
            return Err(ParseError::Field("id"));
        }
        let kind = string_field(&mut fields, "type")?;
        let from = string_field(&mut fields, "from")?;
        let to_raw = fields.remove("to").ok_or(ParseError::Field("to"))?;
        let to = match serde_json::from_str::<String>(to_raw.get()) {
            Ok(one) => vec![one],
            Err(_) => serde_json::from_str::<Vec<String>>(to_raw.get())
                .map_err(|_| ParseError::Field("to"))?,
        };
        if to.is_empty() {
            return Err(ParseError::Field("to"));
        }
        let body = match fields.remove("body") {
            Some(raw) if raw.get() == "null" => None,
            Some(raw) if raw.get().starts_with('{') => Some(raw.get().to_owned()),
            Some(_) => return Err(ParseError::Field("body")),
            None => None,
        };
        let extra = (!fields.is_empty()).then(|| object_text(&fields));
        Ok(Self {
            id: id.get().to_owned(),
            kind,
            from,
            to,
            body,
            extra,
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
        for (key, value) in self.extra_fields() {
            if matches!(key.as_str(), "id" | "type" | "from" | "to" | "body") {
                continue;
            }
            out.push(',');
            push_str_json(&mut out, &key);
            out.push(':');
            out.push_str(value.get());
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
        let mut fields = self.extra_fields();
        let taken = fields.remove(key)?;
        self.extra = (!fields.is_empty()).then(|| object_text(&fields));
        Some(taken.get().to_owned())
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

fn string_field(fields: &mut Fields, name: &'static str) -> Result<String, ParseError> {
    let raw = fields.remove(name).ok_or(ParseError::Field(name))?;
    serde_json::from_str(raw.get()).map_err(|_| ParseError::Field(name))
}

fn object_text(fields: &Fields) -> String {
    let mut out = String::from("{");
    for (i, (key, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_str_json(&mut out, key);
        out.push(':');
        out.push_str(value.get());
    }
    out.push('}');
    out
}

fn push_str_json(out: &mut String, s: &str) {
    // serde_json writes a string as JSON text; writing into a String cannot fail.
    let _ = write!(out, "{}", serde_json::Value::from(s));
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
}
