//! [`Pdu`]: one room event as the node keeps it (the signed federation form), its view for
//! ruma's state-resolution auth checks ([`state_res::Event`]), and its client form (what
//! `/sync`, `/messages` and `/event` return).

use std::sync::{Arc, OnceLock};

use ruma::events::TimelineEventType;
use ruma::serde::Raw;
use ruma::state_res;
use ruma::{
    EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UInt,
    UserId,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// A stored room event. `json` is the signed PDU (without `event_id`), the other fields are
/// parsed from it.
#[derive(Debug, Clone)]
pub struct Pdu {
    pub event_id: OwnedEventId,
    pub stream: i64,
    pub fields: PduFields,
    /// The transaction ID, for the sending device only (`unsigned.transaction_id`).
    pub txn: Option<(String, String)>,
    /// The client form of the redaction that redacted this event, if any.
    pub redacted_because: Option<Box<RawValue>>,
    /// The client forms without a transaction ID (what every device but the sender's sees),
    /// without and with `room_id`, serialized once.
    pub client: [OnceLock<Box<RawValue>>; 2],
}

/// The fields of a PDU that the node reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PduFields {
    pub room_id: OwnedRoomId,
    pub sender: OwnedUserId,
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
    #[serde(rename = "type")]
    pub kind: TimelineEventType,
    pub content: Box<RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_key: Option<String>,
    #[serde(default)]
    pub prev_events: Vec<OwnedEventId>,
    #[serde(default)]
    pub auth_events: Vec<OwnedEventId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redacts: Option<OwnedEventId>,
    pub depth: UInt,
}

/// The client form of an event, as ruma's `Raw` of any event type `T`.
#[derive(Serialize)]
struct ClientEvent<'a> {
    content: &'a RawValue,
    event_id: &'a EventId,
    origin_server_ts: MilliSecondsSinceUnixEpoch,
    #[serde(skip_serializing_if = "Option::is_none")]
    room_id: Option<&'a RoomId>,
    sender: &'a UserId,
    #[serde(skip_serializing_if = "Option::is_none")]
    state_key: Option<&'a str>,
    #[serde(rename = "type")]
    kind: &'a TimelineEventType,
    #[serde(skip_serializing_if = "Option::is_none")]
    redacts: Option<&'a EventId>,
    unsigned: Unsigned<'a>,
}

#[derive(Serialize)]
struct Unsigned<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    transaction_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    redacted_because: Option<&'a RawValue>,
}

impl Pdu {
    /// Parses a stored PDU.
    pub fn from_stored(
        event_id: OwnedEventId,
        stream: i64,
        json: &str,
        txn: Option<(String, String)>,
        redacted_because: Option<Box<RawValue>>,
    ) -> Result<Self, serde_json::Error> {
        Ok(Pdu {
            event_id,
            stream,
            fields: serde_json::from_str(json)?,
            txn,
            redacted_because,
            client: Default::default(),
        })
    }

    pub fn kind(&self) -> &TimelineEventType {
        &self.fields.kind
    }

    pub fn sender(&self) -> &UserId {
        &self.fields.sender
    }

    pub fn state_key(&self) -> Option<&str> {
        self.fields.state_key.as_deref()
    }

    pub fn content(&self) -> &RawValue {
        &self.fields.content
    }

    /// The client form. `device` is the requesting user and device: the transaction ID is
    /// shown only to the device that sent the event. `with_room_id` adds `room_id` (left out in
    /// `/sync`, where the room is the key).
    pub fn to_client<T>(&self, device: Option<(&UserId, &str)>, with_room_id: bool) -> Raw<T> {
        let transaction_id = match (&self.txn, device) {
            (Some((txn_device, txn_id)), Some((user, dev)))
                if user == self.sender() && txn_device == dev =>
            {
                Some(txn_id.as_str())
            }
            _ => None,
        };
        if transaction_id.is_none() {
            let cached = self.client[usize::from(with_room_id)]
                .get_or_init(|| self.serialize_client(None, with_room_id));
            return Raw::from_json(cached.clone());
        }
        Raw::from_json(self.serialize_client(transaction_id, with_room_id))
    }

    fn serialize_client(&self, transaction_id: Option<&str>, with_room_id: bool) -> Box<RawValue> {
        let event = ClientEvent {
            content: &self.fields.content,
            event_id: &self.event_id,
            origin_server_ts: self.fields.origin_server_ts,
            room_id: with_room_id.then_some(&*self.fields.room_id),
            sender: &self.fields.sender,
            state_key: self.fields.state_key.as_deref(),
            kind: &self.fields.kind,
            redacts: self.fields.redacts.as_deref(),
            unsigned: Unsigned {
                transaction_id,
                redacted_because: self.redacted_because.as_deref(),
            },
        };
        // Serializing borrowed JSON values and identifiers cannot fail.
        serde_json::value::to_raw_value(&event).unwrap_or_else(|_| RawValue::NULL.to_owned())
    }
}

/// A shared PDU as ruma's state-resolution code reads events.
#[derive(Debug, Clone)]
pub struct AuthEvent(pub Arc<Pdu>);

impl state_res::Event for AuthEvent {
    type Id = OwnedEventId;

    fn event_id(&self) -> &Self::Id {
        &self.0.event_id
    }

    fn room_id(&self) -> Option<&RoomId> {
        Some(&self.0.fields.room_id)
    }

    fn sender(&self) -> &UserId {
        &self.0.fields.sender
    }

    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.0.fields.origin_server_ts
    }

    fn event_type(&self) -> &TimelineEventType {
        &self.0.fields.kind
    }

    fn content(&self) -> &RawValue {
        &self.0.fields.content
    }

    fn state_key(&self) -> Option<&str> {
        self.0.fields.state_key.as_deref()
    }

    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.0.fields.prev_events.iter())
    }

    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.0.fields.auth_events.iter())
    }

    fn redacts(&self) -> Option<&Self::Id> {
        self.0.fields.redacts.as_ref()
    }

    fn rejected(&self) -> bool {
        false
    }
}
