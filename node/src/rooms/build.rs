//! Building a new event of a room: auth events chosen from the current state, `prev_events` and
//! `depth` from the forward extremity, content hash, signature and event ID
//! ([`ServerKey`]), then the room's auth rules checked with ruma's
//! state-resolution functions. An event that fails them is never stored.

use std::sync::Arc;

use ruma::canonical_json::{CanonicalJsonObject, CanonicalJsonValue};
use ruma::events::TimelineEventType;
use ruma::state_res;
use ruma::{MilliSecondsSinceUnixEpoch, OwnedEventId, UserId};
use serde_json::value::RawValue;

use super::error::RoomError;
use super::pdu::{AuthEvent, Pdu, PduFields};
use super::signing::ServerKey;
use super::state::RoomState;

/// The largest PDU, in bytes of canonical JSON (the spec's limit).
pub const MAX_PDU_BYTES: usize = 65_536;

/// What a client or the node asks to send.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub kind: TimelineEventType,
    pub content: Box<RawValue>,
    pub state_key: Option<String>,
    pub redacts: Option<OwnedEventId>,
}

/// A built, signed and authorized event with its stored JSON.
#[derive(Debug)]
pub struct Built {
    pub pdu: Arc<Pdu>,
    pub json: String,
}

/// Builds `event` from `sender` on top of `room`, and checks it against the room's auth rules
/// (unless the caller knows that the same kind of event from the same sender passed them against
/// the same state: `check_auth` false).
pub fn build(
    room: &RoomState,
    key: &ServerKey,
    sender: &UserId,
    event: NewEvent,
    txn: Option<(String, String)>,
    check_auth: bool,
) -> Result<Built, RoomError> {
    // The content alone over the limit: refused before any hashing.
    if event.content.get().len() > MAX_PDU_BYTES {
        return Err(RoomError::TooLarge);
    }
    let auth_types = state_res::auth_types_for_event(
        &event.kind,
        sender,
        event.state_key.as_deref(),
        &event.content,
        &room.rules.authorization,
    )
    .map_err(RoomError::BadJson)?;
    let auth_events: Vec<OwnedEventId> = auth_types
        .iter()
        .filter_map(|(kind, state_key)| room.get(kind, state_key))
        .map(|pdu| pdu.event_id.clone())
        .collect();
    let (prev_events, depth) = room.extremity();
    let fields = PduFields {
        room_id: room.room_id.clone(),
        sender: sender.to_owned(),
        origin_server_ts: MilliSecondsSinceUnixEpoch::now(),
        kind: event.kind,
        content: event.content,
        state_key: event.state_key,
        prev_events,
        auth_events,
        redacts: event.redacts,
        depth,
    };
    let mut object = canonical(&fields)?;
    let event_id = key.hash_and_sign(&mut object, &room.rules)?;
    let json = serde_json::to_string(&object).map_err(|source| RoomError::Json {
        what: "serializing a PDU",
        source,
    })?;
    if json.len() > MAX_PDU_BYTES {
        return Err(RoomError::TooLarge);
    }
    let pdu = Arc::new(Pdu {
        event_id,
        stream: 0,
        fields,
        txn,
        redacted_because: None,
        client: Default::default(),
    });
    if check_auth {
        authorize(room, &pdu)?;
    }
    Ok(Built { pdu, json })
}

/// The PDU fields as canonical JSON (integers in range, no floats).
fn canonical(fields: &PduFields) -> Result<CanonicalJsonObject, RoomError> {
    let value = serde_json::to_value(fields).map_err(|source| RoomError::Json {
        what: "serializing a PDU",
        source,
    })?;
    match CanonicalJsonValue::try_from(value) {
        Ok(CanonicalJsonValue::Object(object)) => Ok(object),
        Ok(_) => Err(RoomError::PduNotAnObject),
        Err(e) => Err(RoomError::BadJson(format!(
            "content is not canonical JSON: {e}"
        ))),
    }
}

/// Checks the state-independent and state-dependent auth rules against the current state.
fn authorize(room: &RoomState, pdu: &Arc<Pdu>) -> Result<(), RoomError> {
    let candidate = AuthEvent(Arc::clone(pdu));
    state_res::check_state_independent_auth_rules(
        &room.rules.authorization,
        &candidate,
        |id: &ruma::EventId| room.by_id(id).cloned().map(AuthEvent),
    )
    .map_err(RoomError::Forbidden)?;
    state_res::check_state_dependent_auth_rules(
        &room.rules.authorization,
        &candidate,
        |kind, state_key| room.get(kind, state_key).cloned().map(AuthEvent),
    )
    .map_err(RoomError::Forbidden)?;
    Ok(())
}
