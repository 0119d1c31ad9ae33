//! What a data object's room is made of at creation ([`room_spec`]): public, with the object's
//! alias, named after the object, and an `org.rethink.object` state event (state key `""`)
//! describing it.
//!
//! When the room is created by the object's `create` ([`Creation`]), the room's name is the
//! object's `body.value.name` (a non-empty string, at most [`MAX_NAME_CHARS`] characters kept),
//! and the state event carries `url`, `reporter`, `schema` (the create's `body.schema`, when a
//! string) and `value` (the create's `body.value`, the object's initial value; left out, with
//! `"truncated": true`, when its JSON is longer than [`MAX_VALUE_BYTES`], so the event stays
//! well under Matrix's 64 KiB limit). A room created lazily for an object whose `create` the node
//! never saw (by its first subscription or update) is named after the object's address and its
//! state event carries only `url`.

use ruma::OwnedRoomAliasId;
use serde_json::value::to_raw_value;
use serde_json::{Map, Value, json};

use super::BridgeError;
use crate::rooms::create::{CreateRoom, InitialState, Preset};

/// The state event type describing the room's data object.
pub const OBJECT_EVENT: &str = "org.rethink.object";
/// The longest initial value kept in the state event, in bytes of JSON.
pub const MAX_VALUE_BYTES: usize = 32 * 1024;
/// The longest room name taken from the object's value, in characters.
pub const MAX_NAME_CHARS: usize = 255;

/// The `create` of a data object, as the bus saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Creation {
    pub reporter: String,
    /// The `create` message's body (`Null` when it had none or it did not read).
    pub body: Value,
}

impl Creation {
    /// The creation by `reporter` whose message body is `body` (JSON text).
    pub fn new(reporter: &str, body: Option<&str>) -> Self {
        let body = body
            .and_then(|b| serde_json::from_str(b).ok())
            .unwrap_or(Value::Null);
        Self {
            reporter: reporter.to_owned(),
            body,
        }
    }

    /// The object's name in its initial value, if it has one.
    fn name(&self) -> Option<String> {
        let name = self.body.pointer("/value/name")?.as_str()?.trim();
        (!name.is_empty()).then(|| name.chars().take(MAX_NAME_CHARS).collect())
    }

    /// The `org.rethink.object` content of `object`.
    fn describe(&self, object: &str) -> Value {
        let mut content = json!({ "url": object, "reporter": self.reporter });
        if let Some(schema) = self.body.get("schema").filter(|s| s.is_string()) {
            content["schema"] = schema.clone();
        }
        if let Some(value) = self.body.get("value") {
            let fits = serde_json::to_string(value).is_ok_and(|v| v.len() <= MAX_VALUE_BYTES);
            if fits {
                content["value"] = value.clone();
            } else {
                content["truncated"] = Value::Bool(true);
            }
        }
        content
    }
}

/// The `createRoom` of `object`'s room, with the alias `alias`, created by the virtual user of
/// `hyperty` (its display name), from `creation` when the object's `create` was seen.
pub fn room_spec(
    object: &str,
    alias: OwnedRoomAliasId,
    hyperty: &str,
    creation: Option<&Creation>,
) -> Result<CreateRoom, BridgeError> {
    let (name, description) = match creation {
        Some(c) => (c.name(), c.describe(object)),
        None => (None, json!({ "url": object })),
    };
    let mut profile = Map::new();
    profile.insert("displayname".to_owned(), Value::String(hyperty.to_owned()));
    Ok(CreateRoom {
        version: None,
        preset: Preset::PublicChat,
        name: Some(name.unwrap_or_else(|| object.to_owned())),
        topic: Some(format!("reTHINK data object {object}")),
        alias: Some(alias),
        invite: Vec::new(),
        is_direct: false,
        initial_state: vec![InitialState {
            kind: OBJECT_EVENT.to_owned(),
            state_key: String::new(),
            content: to_raw_value(&description).map_err(|source| BridgeError::Json {
                what: "object description",
                source,
            })?,
        }],
        creation_content: None,
        power_level_override: None,
        creator_profile: profile,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OBJECT: &str = "comm://example.com/chat-1";

    fn alias() -> OwnedRoomAliasId {
        OwnedRoomAliasId::try_from("#_hyperty_comm.chat-1:example.com").unwrap()
    }

    fn object_state(spec: &CreateRoom) -> Value {
        assert_eq!(spec.initial_state.len(), 1);
        let s = &spec.initial_state[0];
        assert_eq!((s.kind.as_str(), s.state_key.as_str()), (OBJECT_EVENT, ""));
        serde_json::from_str(s.content.get()).unwrap()
    }

    #[test]
    fn a_created_object_names_its_room_and_describes_its_initial_value() {
        let body =
            json!({"value": {"name": "  Team chat ", "n": 1}, "schema": "hyperty-catalogue://c/s"});
        let c = Creation::new("hyperty://example.com/h", Some(&body.to_string()));
        let spec = room_spec(OBJECT, alias(), "hyperty://example.com/h", Some(&c)).unwrap();
        assert_eq!(spec.name.as_deref(), Some("Team chat"));
        assert_eq!(
            object_state(&spec),
            json!({"url": OBJECT, "reporter": "hyperty://example.com/h",
                "schema": "hyperty-catalogue://c/s", "value": {"name": "  Team chat ", "n": 1}})
        );
    }

    #[test]
    fn a_lazily_created_room_is_named_after_the_object() {
        let spec = room_spec(OBJECT, alias(), "hyperty://example.com/h", None).unwrap();
        assert_eq!(spec.name.as_deref(), Some(OBJECT));
        assert_eq!(object_state(&spec), json!({"url": OBJECT}));
        // A create without a usable name or body falls back the same way for the name.
        let c = Creation::new("hyperty://example.com/h", Some("{\"value\":{\"name\":7}}"));
        let spec = room_spec(OBJECT, alias(), "h", Some(&c)).unwrap();
        assert_eq!(spec.name.as_deref(), Some(OBJECT));
        let c = Creation::new("hyperty://example.com/h", None);
        let spec = room_spec(OBJECT, alias(), "h", Some(&c)).unwrap();
        assert_eq!(
            object_state(&spec),
            json!({"url": OBJECT, "reporter": "hyperty://example.com/h"})
        );
    }

    #[test]
    fn large_values_and_names_are_bounded() {
        let big = "x".repeat(MAX_VALUE_BYTES);
        let body = json!({"value": {"name": "é".repeat(300), "blob": big}});
        let c = Creation::new("r", Some(&body.to_string()));
        let spec = room_spec(OBJECT, alias(), "r", Some(&c)).unwrap();
        assert_eq!(
            spec.name.as_ref().map(|n| n.chars().count()),
            Some(MAX_NAME_CHARS)
        );
        let state = object_state(&spec);
        assert_eq!(state["truncated"], true);
        assert!(state.get("value").is_none());
    }
}
