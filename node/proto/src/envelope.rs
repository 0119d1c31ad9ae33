//! The envelope: a reTHINK message with its header parsed once and its JSON text kept whole.

use std::borrow::Cow;
use std::sync::Arc;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

use crate::address::{AddressError, AddressRef};
use crate::kind::MessageType;
use crate::text::{Text, span_of};

/// Why a message was refused. Each maps to a 400 response at the transport edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("not valid JSON: {0}")]
    NotJson(String),
    #[error("a message must be a JSON object")]
    NotAnObject,
    #[error("a batch must hold at least one message")]
    EmptyBatch,
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    #[error("field `{field}` {reason}")]
    InvalidField {
        field: &'static str,
        reason: &'static str,
    },
    #[error("field `{field}` is not an address: {source}")]
    InvalidAddress {
        field: &'static str,
        #[source]
        source: AddressError,
    },
    #[error("invalid message: {0}")]
    Invalid(String),
}

impl ParseError {
    pub(crate) fn from_serde(e: &serde_json::Error) -> Self {
        if e.is_data() {
            ParseError::Invalid(e.to_string())
        } else {
            ParseError::NotJson(e.to_string())
        }
    }
}

/// The recipients of a message: `to` as a string or as an array of strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Recipients {
    One(Text),
    Many(Box<[Text]>),
}

/// A parsed reTHINK message.
///
/// It holds the message's JSON text (shared, so fan-out copies nothing) and the header fields as
/// spans into it. The body is located but not parsed; [`Envelope::body`] parses it on demand.
/// A top-level `seq` sent by a peer is removed at parse time, because `seq` belongs to the node.
#[derive(Debug, Clone)]
pub struct Envelope {
    raw: Arc<str>,
    id: Text,
    kind: MessageType,
    from: Text,
    to: Recipients,
    body: Option<(u32, u32)>,
    /// Whether the message has top-level fields besides the header, `body` and `seq`.
    extra: bool,
}

/// The top-level fields of a message, borrowed from its text, and whether any other field is
/// present (`extra`). Deserialized by hand (the derive would be as fast but cannot say whether
/// unknown fields were skipped, which the stub host needs to know without a second parse).
#[derive(Default)]
struct Header<'a> {
    id: Option<&'a RawValue>,
    kind: Option<&'a RawValue>,
    from: Option<&'a RawValue>,
    to: Option<&'a RawValue>,
    body: Option<&'a RawValue>,
    seq: bool,
    extra: bool,
}

/// A top-level key of a message.
enum Field {
    Id,
    Type,
    From,
    To,
    Body,
    Seq,
    Other,
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Field;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Field, E> {
                Ok(match v {
                    "id" => Field::Id,
                    "type" => Field::Type,
                    "from" => Field::From,
                    "to" => Field::To,
                    "body" => Field::Body,
                    "seq" => Field::Seq,
                    _ => Field::Other,
                })
            }
        }
        d.deserialize_identifier(V)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Header<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = Header<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a reTHINK message")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> Result<Header<'a>, M::Error> {
                let mut h = Header::default();
                // A field named twice is refused, as the derive does.
                // A `null` counts as absent, except for `id` (`"id": null` is present, for the
                // rare JSON-RPC-like peer: refused, or allowed where `allow_null_id` says so).
                fn once<'a, E: serde::de::Error>(
                    slot: &mut Option<&'a RawValue>,
                    value: &'a RawValue,
                    name: &'static str,
                ) -> Result<(), E> {
                    if name != "id" && value.get() == "null" {
                        return Ok(());
                    }
                    if slot.replace(value).is_some() {
                        return Err(E::duplicate_field(name));
                    }
                    Ok(())
                }
                while let Some(key) = map.next_key::<Field>()? {
                    match key {
                        Field::Id => once(&mut h.id, map.next_value()?, "id")?,
                        Field::Type => once(&mut h.kind, map.next_value()?, "type")?,
                        Field::From => once(&mut h.from, map.next_value()?, "from")?,
                        Field::To => once(&mut h.to, map.next_value()?, "to")?,
                        Field::Body => once(&mut h.body, map.next_value()?, "body")?,
                        Field::Seq => {
                            map.next_value::<IgnoredAny>()?;
                            h.seq = true;
                        }
                        Field::Other => {
                            map.next_value::<IgnoredAny>()?;
                            h.extra = true;
                        }
                    }
                }
                Ok(h)
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

fn string_field<'a>(raw: &'a RawValue, field: &'static str) -> Result<Cow<'a, str>, ParseError> {
    match raw.get().as_bytes().first() {
        Some(b'"') => {
            serde_json::from_str::<Cow<'a, str>>(raw.get()).map_err(|e| ParseError::from_serde(&e))
        }
        _ => Err(ParseError::InvalidField {
            field,
            reason: "must be a string",
        }),
    }
}

fn address_field<'a>(raw: &'a RawValue, field: &'static str) -> Result<Cow<'a, str>, ParseError> {
    let s = string_field(raw, field)?;
    AddressRef::parse(&s).map_err(|source| ParseError::InvalidAddress { field, source })?;
    Ok(s)
}

impl Envelope {
    /// Parses one message from its JSON text.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        Self::parse_inner(text, false)
    }

    pub(crate) fn parse_inner(text: &str, allow_null_id: bool) -> Result<Self, ParseError> {
        let text = text.trim();
        if !text.starts_with('{') {
            return match serde_json::from_str::<IgnoredAny>(text) {
                Err(e) => Err(ParseError::NotJson(e.to_string())),
                Ok(_) => Err(ParseError::NotAnObject),
            };
        }
        // Copy once into the shared text, then borrow every header field from it.
        let raw: Arc<str> = Arc::from(text);
        let header: Header<'_> =
            serde_json::from_str(&raw).map_err(|e| ParseError::from_serde(&e))?;
        if header.seq {
            // Rare: a peer sent its own `seq`. Rewrite the text once without it.
            let mut map: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(text).map_err(|e| ParseError::from_serde(&e))?;
            map.remove("seq");
            let clean = serde_json::to_string(&map).map_err(|e| ParseError::from_serde(&e))?;
            return Self::parse_inner(&clean, allow_null_id);
        }
        Self::from_header(Arc::clone(&raw), header, allow_null_id)
    }

    fn from_header(raw: Arc<str>, h: Header<'_>, allow_null_id: bool) -> Result<Self, ParseError> {
        let id = h.id.ok_or(ParseError::MissingField("id"))?;
        let id_ok = match id.get().as_bytes().first() {
            Some(b'"' | b'-' | b'0'..=b'9') => true,
            Some(b'n') => allow_null_id,
            _ => false,
        };
        if !id_ok {
            return Err(ParseError::InvalidField {
                field: "id",
                reason: "must be a number or a string",
            });
        }
        let kind_raw = h.kind.ok_or(ParseError::MissingField("type"))?;
        let kind = string_field(kind_raw, "type")?;
        if kind.is_empty() {
            return Err(ParseError::InvalidField {
                field: "type",
                reason: "must not be empty",
            });
        }
        let from = address_field(h.from.ok_or(ParseError::MissingField("from"))?, "from")?;
        let to_raw = h.to.ok_or(ParseError::MissingField("to"))?;
        let to = match to_raw.get().as_bytes().first() {
            Some(b'[') => {
                let items: Vec<&RawValue> =
                    serde_json::from_str(to_raw.get()).map_err(|e| ParseError::from_serde(&e))?;
                if items.is_empty() {
                    return Err(ParseError::InvalidField {
                        field: "to",
                        reason: "must not be an empty array",
                    });
                }
                let mut out = Vec::with_capacity(items.len());
                let mut seen = std::collections::HashSet::new();
                for item in items {
                    let address = address_field(item, "to")?;
                    // A recipient named twice gets the message once.
                    let fresh = if out.len() < 8 {
                        !out.iter().any(|t: &Text| t.get(&raw) == address)
                    } else {
                        if seen.is_empty() {
                            seen.extend(out.iter().map(|t: &Text| t.get(&raw).to_owned()));
                        }
                        seen.insert(address.to_string())
                    };
                    if fresh {
                        out.push(Text::new(&raw, address));
                    }
                }
                Recipients::Many(out.into_boxed_slice())
            }
            _ => Recipients::One(Text::new(&raw, address_field(to_raw, "to")?)),
        };
        let body = match h.body {
            Some(b) if b.get().starts_with('{') => span_of(&raw, b.get()),
            Some(b) if b.get() == "null" => None,
            Some(_) => {
                return Err(ParseError::InvalidField {
                    field: "body",
                    reason: "must be an object",
                });
            }
            None => None,
        };
        Ok(Envelope {
            id: Text::new(&raw, Cow::Borrowed(id.get())),
            kind: MessageType::from_type_str(&kind),
            from: Text::new(&raw, from),
            to,
            body,
            extra: h.extra,
            raw,
        })
    }

    /// Whether the message has top-level fields other than `id`, `type`, `from`, `to` and
    /// `body` (a peer-sent `seq` is removed at parse time and does not count).
    pub fn has_extra_fields(&self) -> bool {
        self.extra
    }

    /// The message's JSON text (without any peer-sent `seq`).
    pub fn json(&self) -> &str {
        &self.raw
    }

    /// The shared JSON text, for outboxes and stores that keep the message.
    pub fn shared_json(&self) -> &Arc<str> {
        &self.raw
    }

    /// The `id` as raw JSON (`7` or `"7"`), to echo back exactly as given.
    pub fn id_json(&self) -> &str {
        self.id.get(&self.raw)
    }

    /// The message type.
    pub fn kind(&self) -> &MessageType {
        &self.kind
    }

    /// The sender address.
    pub fn from(&self) -> &str {
        self.from.get(&self.raw)
    }

    /// The distinct recipient addresses, in the order given (a repeated one is kept once).
    pub fn to(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        let slice: &[Text] = match &self.to {
            Recipients::One(t) => std::slice::from_ref(t),
            Recipients::Many(ts) => ts,
        };
        slice.iter().map(|t| t.get(&self.raw))
    }

    /// The first (usually the only) recipient.
    pub fn first_to(&self) -> &str {
        match &self.to {
            Recipients::One(t) => t.get(&self.raw),
            Recipients::Many(ts) => ts[0].get(&self.raw),
        }
    }

    /// The body as raw JSON text, if present.
    pub fn body_json(&self) -> Option<&str> {
        self.body.map(|(a, b)| &self.raw[a as usize..b as usize])
    }

    /// Parses the body (or `{}` when absent) into `T`. Only components that need the body call this.
    pub fn body<'a, T: Deserialize<'a>>(&'a self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.body_json().unwrap_or("{}"))
    }

    /// The same message with its body replaced by `body` (a JSON object's text), every other
    /// field kept byte for byte. For the rare node-side rewrite (identity assertion).
    pub fn with_body(&self, body: &str) -> Result<Envelope, ParseError> {
        let text = match self.body {
            Some((a, b)) => format!(
                "{}{}{}",
                &self.raw[..a as usize],
                body,
                &self.raw[b as usize..]
            ),
            None => {
                let head = self.raw.trim_end();
                let head = head.strip_suffix('}').unwrap_or(head);
                format!("{head},\"body\":{body}}}")
            }
        };
        Self::parse_inner(&text, true)
    }

    /// Appends the frame the node sends for this message: the message with `"seq":N` first.
    pub fn write_frame(json: &str, seq: u64, out: &mut String) {
        use std::fmt::Write;
        out.reserve(json.len() + 24);
        // `json` always starts with `{` and holds at least the header fields.
        let _ = write!(out, "{{\"seq\":{seq},");
        out.push_str(&json[1..]);
    }

    /// The frame for this message with `seq`, as a new string.
    pub fn frame(&self, seq: u64) -> String {
        let mut out = String::new();
        Self::write_frame(&self.raw, seq, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_unknown_fields_and_body_text() {
        let text = r#"{"id":1,"type":"x","from":"a://d/1","to":"a://d/2","extra":{"k":[1,2]},"body":{"b":"\u00e9"}}"#;
        let e = Envelope::parse(text).unwrap();
        assert_eq!(e.json(), text);
        assert_eq!(e.body_json(), Some(r#"{"b":"\u00e9"}"#));
        assert_eq!(e.kind().as_str(), "x");
    }

    #[test]
    fn escaped_strings_are_unescaped() {
        let e = Envelope::parse(
            r#"{"id":"a\"b","type":"upd\u0061te","from":"a://d/\u0031","to":"a://d/2"}"#,
        )
        .unwrap();
        assert_eq!(e.id_json(), r#""a\"b""#);
        assert_eq!(e.kind(), &MessageType::Update);
        assert_eq!(e.from(), "a://d/1");
    }

    #[test]
    fn with_body_replaces_or_adds_the_body() {
        let e = Envelope::parse(
            r#"{"id":1,"type":"x","from":"a://d/1","to":"a://d/2","body":{"a":1},"z":true}"#,
        )
        .unwrap();
        let r = e.with_body(r#"{"a":1,"b":2}"#).unwrap();
        assert_eq!(
            r.json(),
            r#"{"id":1,"type":"x","from":"a://d/1","to":"a://d/2","body":{"a":1,"b":2},"z":true}"#
        );
        let bare =
            Envelope::parse(r#"{"id":1,"type":"x","from":"a://d/1","to":"a://d/2"}"#).unwrap();
        let r = bare.with_body(r#"{"k":"v"}"#).unwrap();
        assert_eq!(r.body_json(), Some(r#"{"k":"v"}"#));
        assert_eq!(r.from(), "a://d/1");
    }

    #[test]
    fn strips_a_peer_sent_seq() {
        let e = Envelope::parse(r#"{"seq":99,"id":1,"type":"x","from":"a://d/1","to":"a://d/2"}"#)
            .unwrap();
        assert!(!e.json().contains("99"));
        let framed: serde_json::Value = serde_json::from_str(&e.frame(5)).unwrap();
        assert_eq!(framed["seq"], 5);
        assert_eq!(framed["id"], 1);
    }

    #[test]
    fn frame_prepends_seq_and_stays_valid_json() {
        let e =
            Envelope::parse(r#" {"id":1,"type":"x","from":"a://d/1","to":["a://d/2","a://d/3"]} "#)
                .unwrap();
        let v: serde_json::Value = serde_json::from_str(&e.frame(42)).unwrap();
        assert_eq!(v["seq"], 42);
        assert_eq!(v["to"][1], "a://d/3");
        assert_eq!(e.to().collect::<Vec<_>>(), ["a://d/2", "a://d/3"]);
    }

    #[test]
    fn repeated_recipients_are_kept_once() {
        let many: Vec<String> = (0..10_000).map(|i| format!("a://d/{}", i % 3)).collect();
        let text =
            serde_json::json!({"id": 1, "type": "x", "from": "a://d/1", "to": many}).to_string();
        let e = Envelope::parse(&text).unwrap();
        assert_eq!(
            e.to().collect::<Vec<_>>(),
            ["a://d/0", "a://d/1", "a://d/2"]
        );
        let spread: Vec<String> = (0..20).chain(0..20).map(|i| format!("a://d/{i}")).collect();
        let text =
            serde_json::json!({"id": 1, "type": "x", "from": "a://d/1", "to": spread}).to_string();
        let e = Envelope::parse(&text).unwrap();
        assert_eq!(e.to().len(), 20);
        assert_eq!(e.first_to(), "a://d/0");
    }

    #[test]
    fn refuses_non_canonical_senders_and_recipients() {
        for (text, field) in [
            (
                r#"{"id":1,"type":"x","from":"hyperty-runtime://d/rA/../rB","to":"a://d/2"}"#,
                "from",
            ),
            (
                r#"{"id":1,"type":"x","from":"hyperty://d/mine/%2e%2e/other","to":"a://d/2"}"#,
                "from",
            ),
            (
                r#"{"id":1,"type":"x","from":"a://d/1","to":"hyperty://d/x/./y"}"#,
                "to",
            ),
            (
                r#"{"id":1,"type":"x","from":"a://d/1","to":["a://d/2","a://d/3/%2E%2e"]}"#,
                "to",
            ),
        ] {
            match Envelope::parse(text) {
                Err(ParseError::InvalidAddress {
                    field: f,
                    source: AddressError::DotSegment(_),
                }) => assert_eq!(f, field, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn refuses_what_routing_cannot_trust() {
        let cases: &[(&str, ParseError)] = &[
            (
                r#"{"type":"x","from":"a://d/1","to":"a://d/2"}"#,
                ParseError::MissingField("id"),
            ),
            (
                r#"{"id":1,"from":"a://d/1","to":"a://d/2"}"#,
                ParseError::MissingField("type"),
            ),
            (
                r#"{"id":1,"type":"x","to":"a://d/2"}"#,
                ParseError::MissingField("from"),
            ),
            (
                r#"{"id":1,"type":"x","from":"a://d/1"}"#,
                ParseError::MissingField("to"),
            ),
            (
                r#"{"id":null,"type":"x","from":"a://d/1","to":"a://d/2"}"#,
                ParseError::InvalidField {
                    field: "id",
                    reason: "must be a number or a string",
                },
            ),
            (
                r#"{"id":1,"type":5,"from":"a://d/1","to":"a://d/2"}"#,
                ParseError::InvalidField {
                    field: "type",
                    reason: "must be a string",
                },
            ),
            (
                r#"{"id":1,"type":"x","from":"a://d/1","to":[]}"#,
                ParseError::InvalidField {
                    field: "to",
                    reason: "must not be an empty array",
                },
            ),
            (
                r#"{"id":1,"type":"x","from":"a://d/1","to":"a://d/2","body":[1]}"#,
                ParseError::InvalidField {
                    field: "body",
                    reason: "must be an object",
                },
            ),
            (r#"[1]"#, ParseError::NotAnObject),
        ];
        for (text, want) in cases {
            assert_eq!(&Envelope::parse(text).unwrap_err(), want, "{text}");
        }
        assert!(matches!(
            Envelope::parse(r#"{"id":1,"type":"x","from":"a://d/1","to":"nope"}"#),
            Err(ParseError::InvalidAddress { field: "to", .. })
        ));
        assert!(matches!(
            Envelope::parse("{oops"),
            Err(ParseError::NotJson(_))
        ));
        assert!(matches!(
            Envelope::parse(r#"{"id":1,"id":2,"type":"x","from":"a://d/1","to":"a://d/2"}"#),
            Err(ParseError::Invalid(_))
        ));
    }

    #[test]
    fn extra_fields_are_noticed_and_duplicates_refused() {
        let plain = Envelope::parse(
            r#"{"id":1,"type":"update","from":"hyperty://a.test/x","to":"hyperty://a.test/y","body":{"k":1}}"#,
        )
        .unwrap();
        assert!(!plain.has_extra_fields());
        let seq = Envelope::parse(
            r#"{"seq":4,"id":1,"type":"update","from":"hyperty://a.test/x","to":"hyperty://a.test/y"}"#,
        )
        .unwrap();
        assert!(
            !seq.has_extra_fields(),
            "a peer's seq is removed, not extra"
        );
        let extra = Envelope::parse(
            r#"{"id":1,"type":"update","from":"hyperty://a.test/x","to":"hyperty://a.test/y","cseq":2}"#,
        )
        .unwrap();
        assert!(extra.has_extra_fields());
        let twice = Envelope::parse(
            r#"{"id":1,"type":"update","from":"hyperty://a.test/x","from":"hyperty://a.test/z","to":"hyperty://a.test/y"}"#,
        );
        assert!(twice.is_err(), "{twice:?}");
        let null_type = Envelope::parse(
            r#"{"id":1,"type":null,"from":"hyperty://a.test/x","to":"hyperty://a.test/y"}"#,
        );
        assert_eq!(null_type.unwrap_err(), ParseError::MissingField("type"));
    }
}
