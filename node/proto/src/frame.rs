//! WebSocket frames: one JSON message per text frame, or a JSON array of messages (a batch).
//!
//! A message that cannot be parsed is returned as [`Rejected`], carrying whatever `id` and `from`
//! could be salvaged so the transport can answer the sender with a 400 that echoes its `id`.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::address::AddressRef;
use crate::envelope::{Envelope, ParseError};

/// A message refused at parse time, with what is known about its sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub error: ParseError,
    /// The message's `id` as raw JSON, when it had a usable one.
    pub id_json: Option<String>,
    /// The message's `from`, when it was a valid address.
    pub from: Option<String>,
}

/// The content of one text frame.
#[derive(Debug)]
pub enum Frame {
    /// A single message.
    Single(Result<Envelope, Rejected>),
    /// A batch: each element is judged on its own.
    Batch(Vec<Result<Envelope, Rejected>>),
    /// Not JSON at all, or an empty batch: nothing can be salvaged.
    Invalid(ParseError),
}

#[derive(Deserialize)]
struct Salvage<'a> {
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    from: Option<&'a RawValue>,
}

/// Reads what can be read of a message that is refused as a whole: its `id` (raw JSON, when a
/// number or a string) and its `from` (when a valid address).
pub fn salvage(text: &str) -> (Option<String>, Option<String>) {
    let Ok(s) = serde_json::from_str::<Salvage<'_>>(text.trim()) else {
        return (None, None);
    };
    let id =
        s.id.filter(|id| matches!(id.get().as_bytes().first(), Some(b'"' | b'-' | b'0'..=b'9')))
            .map(|id| id.get().to_owned());
    let from = s
        .from
        .and_then(|f| serde_json::from_str::<String>(f.get()).ok())
        .filter(|f| AddressRef::parse(f).is_ok());
    (id, from)
}

fn rejected(text: &str, error: ParseError) -> Rejected {
    let (id_json, from) = salvage(text);
    Rejected {
        error,
        id_json,
        from,
    }
}

fn parse_one(text: &str) -> Result<Envelope, Rejected> {
    Envelope::parse(text).map_err(|e| rejected(text, e))
}

/// Parses a text frame.
pub fn parse_frame(text: &str) -> Frame {
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        match serde_json::from_str::<Vec<&RawValue>>(trimmed) {
            Ok(items) if items.is_empty() => Frame::Invalid(ParseError::EmptyBatch),
            Ok(items) => Frame::Batch(items.into_iter().map(|m| parse_one(m.get())).collect()),
            Err(e) => Frame::Invalid(ParseError::NotJson(e.to_string())),
        }
    } else {
        match parse_one(trimmed) {
            Err(Rejected {
                error: e @ ParseError::NotJson(_),
                ..
            }) => Frame::Invalid(e),
            other => Frame::Single(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_batch_and_garbage() {
        assert!(matches!(
            parse_frame(r#"{"id":1,"type":"x","from":"a://d/1","to":"a://d/2"}"#),
            Frame::Single(Ok(_))
        ));
        match parse_frame(r#"[{"id":1,"type":"x","from":"a://d/1","to":"a://d/2"},{"id":2}]"#) {
            Frame::Batch(items) => {
                assert!(items[0].is_ok());
                let rej = items[1].as_ref().unwrap_err();
                assert_eq!(rej.id_json.as_deref(), Some("2"));
                assert_eq!(rej.error, ParseError::MissingField("type"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_frame("not json"),
            Frame::Invalid(ParseError::NotJson(_))
        ));
        assert!(matches!(
            parse_frame("[]"),
            Frame::Invalid(ParseError::EmptyBatch)
        ));
    }

    #[test]
    fn salvages_id_and_sender_of_a_refused_message() {
        match parse_frame(r#"{"id":"7","type":"create","from":"hyperty://d/a"}"#) {
            Frame::Single(Err(rej)) => {
                assert_eq!(rej.id_json.as_deref(), Some(r#""7""#));
                assert_eq!(rej.from.as_deref(), Some("hyperty://d/a"));
                assert_eq!(rej.error, ParseError::MissingField("to"));
            }
            other => panic!("{other:?}"),
        }
    }
}
