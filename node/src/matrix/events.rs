//! Room events: `send` (idempotent per device and transaction ID), `redact`, state
//! (`GET /state`, `GET/PUT /state/{type}/{stateKey}`), `GET /event/{eventId}`, `/messages`
//! (both directions) and `/context`.

use axum::extract::State;
use ruma::UInt;
use ruma::api::Direction;
use ruma::api::client::context::get_context;
use ruma::api::client::filter::RoomEventFilter;
use ruma::api::client::message::{get_message_events, send_message_event};
use ruma::api::client::redact::redact_event;
use ruma::api::client::room::get_room_event;
use ruma::api::client::state::{get_state_event_for_key, get_state_events, send_state_event};
use ruma::events::{StateEventType, TimelineEventType};
use serde_json::value::{RawValue, to_raw_value};

use super::accounts::Caller;
use super::error::{MatrixError, MatrixResult, RumaResponse};
use super::event_filter;
use super::extract::Ruma;
use super::token;
use crate::node::Node;
use crate::rooms::{NewEvent, Pdu, RoomError, Txn, TxnScope};

/// Most events one `/messages` or `/context` page returns.
const MAX_PAGE: u32 = 1000;

fn device(caller: &Caller) -> (&ruma::UserId, &str) {
    (&caller.user_id, caller.device_id.as_str())
}

pub(crate) async fn send_message(
    State(node): State<Node>,
    req: Ruma<send_message_event::v3::Request>,
) -> MatrixResult<send_message_event::v3::Response> {
    limit_send(&node, &req.caller)?;
    let b = req.body;
    let event = NewEvent {
        kind: TimelineEventType::from(b.event_type.to_string()),
        content: b.body.into_json(),
        state_key: None,
        redacts: None,
    };
    let sent = node
        .matrix_send(
            &b.room_id,
            &req.caller,
            event,
            Some((TxnScope::Send, b.txn_id.to_string())),
        )
        .await?;
    Ok(RumaResponse(send_message_event::v3::Response::new(
        sent.event_id,
    )))
}

pub(crate) async fn send_state(
    State(node): State<Node>,
    req: Ruma<send_state_event::v3::Request>,
) -> MatrixResult<send_state_event::v3::Response> {
    limit_send(&node, &req.caller)?;
    let b = req.body;
    let event = NewEvent {
        kind: TimelineEventType::from(b.event_type.to_string()),
        content: b.body.into_json(),
        state_key: Some(b.state_key),
        redacts: None,
    };
    let sent = node
        .matrix_send(&b.room_id, &req.caller, event, None)
        .await?;
    Ok(RumaResponse(send_state_event::v3::Response::new(
        sent.event_id,
    )))
}

pub(crate) async fn redact(
    State(node): State<Node>,
    req: Ruma<redact_event::v3::Request>,
) -> MatrixResult<redact_event::v3::Response> {
    limit_send(&node, &req.caller)?;
    let b = req.body;
    let mut content = serde_json::json!({ "redacts": b.event_id });
    if let Some(reason) = b.reason {
        content["reason"] = reason.into();
    }
    let event = NewEvent {
        kind: TimelineEventType::RoomRedaction,
        content: to_raw_value(&content).map_err(|source| MatrixError::Json {
            what: "redaction content",
            source,
        })?,
        state_key: None,
        redacts: Some(b.event_id),
    };
    let sent = node
        .matrix_send(
            &b.room_id,
            &req.caller,
            event,
            Some((TxnScope::Redact, b.txn_id.to_string())),
        )
        .await?;
    Ok(RumaResponse(redact_event::v3::Response::new(sent.event_id)))
}

pub(crate) async fn get_state(
    State(node): State<Node>,
    req: Ruma<get_state_events::v3::Request>,
) -> MatrixResult<get_state_events::v3::Response> {
    let state = node
        .rooms()
        .current_state(&req.body.room_id, &req.caller.user_id)
        .await?;
    let device = device(&req.caller);
    Ok(RumaResponse(get_state_events::v3::Response::new(
        state
            .iter()
            .map(|pdu| pdu.to_client(Some(device), true))
            .collect(),
    )))
}

pub(crate) async fn get_state_for_key(
    State(node): State<Node>,
    req: Ruma<get_state_event_for_key::v3::Request>,
) -> MatrixResult<get_state_event_for_key::v3::Response> {
    let b = req.body;
    let pdu = node
        .rooms()
        .state_event(&b.room_id, &req.caller.user_id, &b.event_type, &b.state_key)
        .await?;
    let json: Box<RawValue> = match b.format {
        get_state_event_for_key::v3::StateEventFormat::Event => pdu
            .to_client::<()>(Some(device(&req.caller)), true)
            .into_json(),
        _ => pdu.content().to_owned(),
    };
    Ok(RumaResponse(get_state_event_for_key::v3::Response::new(
        json,
    )))
}

/// The last position of a room `user` may read: everything visible for a member, up to their
/// leave for a former member.
async fn readable_upto(
    node: &Node,
    room_id: &ruma::RoomId,
    user: &ruma::UserId,
) -> Result<i64, MatrixError> {
    let visible = node.stream().visible();
    let bound = node.rooms().reader_bound(room_id, user).await?;
    Ok(bound.map_or(visible, |b| b.min(visible)))
}

/// An event of a room, if the caller may read it; and how far the caller may read the room.
async fn room_event(
    node: &Node,
    caller: &Caller,
    room_id: &ruma::RoomId,
    event_id: &ruma::EventId,
) -> Result<(Pdu, i64), MatrixError> {
    let upto = readable_upto(node, room_id, &caller.user_id).await?;
    let pdu = node
        .rooms()
        .store()
        .event(event_id.as_str())
        .await?
        .filter(|pdu| pdu.fields.room_id == room_id && pdu.stream <= upto)
        .ok_or_else(|| MatrixError::NotFound(format!("unknown event {event_id}")))?;
    Ok((pdu, upto))
}

pub(crate) async fn get_event(
    State(node): State<Node>,
    req: Ruma<get_room_event::v3::Request>,
) -> MatrixResult<get_room_event::v3::Response> {
    let (pdu, _) = room_event(&node, &req.caller, &req.body.room_id, &req.body.event_id).await?;
    Ok(RumaResponse(get_room_event::v3::Response::new(
        pdu.to_client(Some(device(&req.caller)), true),
    )))
}

/// Most events one [`page`] looks at: a filter that matches few of them makes the page stop
/// there, with a position to go on from, rather than scan the room's whole history.
const MAX_SCAN: u32 = MAX_PAGE;

/// Fewest events [`page`] reads in a query after its first (a page of 1 through a sparse
/// filter would otherwise cost one query per event).
const SCAN_BATCH: u32 = 100;

/// Events of `room_id` in `(after, upto]` that pass `filter`: up to `limit`, forwards or
/// backwards, looking at [`MAX_SCAN`] events at most. Returns them and the position where the
/// scan stopped (the last event looked at), `None` when the range is exhausted.
pub(crate) async fn page(
    node: &Node,
    room_id: &ruma::RoomId,
    after: i64,
    upto: i64,
    limit: u32,
    backwards: bool,
    filter: &RoomEventFilter,
) -> Result<(Vec<Pdu>, Option<i64>), MatrixError> {
    let store = node.rooms().store();
    let mut out = Vec::new();
    let (mut lo, mut hi) = (after, upto);
    let mut scanned = 0u32;
    loop {
        let want = limit.saturating_sub(out.len() as u32);
        // The first query reads what is wanted (with no filter, all that is needed); those
        // after it, which a filter made necessary, read whole batches.
        let read = if scanned == 0 {
            want
        } else {
            want.max(SCAN_BATCH)
        };
        let read = read.min(MAX_SCAN - scanned);
        let batch = store
            .events(room_id.as_str(), lo, hi, read, backwards)
            .await?;
        let exhausted = (batch.len() as u32) < read;
        scanned += batch.len() as u32;
        let mut last = None;
        for pdu in batch {
            last = Some(pdu.stream);
            if event_filter::matches(filter, &pdu) {
                out.push(pdu);
                if out.len() as u32 >= limit {
                    return Ok((out, last));
                }
            }
        }
        let Some(last) = last else {
            return Ok((out, None));
        };
        if exhausted {
            return Ok((out, None));
        }
        if scanned >= MAX_SCAN {
            return Ok((out, Some(last)));
        }
        if backwards {
            hi = last - 1;
        } else {
            lo = last;
        }
    }
}

fn limit_of(limit: UInt) -> u32 {
    u32::try_from(u64::from(limit))
        .unwrap_or(MAX_PAGE)
        .min(MAX_PAGE)
}

pub(crate) async fn messages(
    State(node): State<Node>,
    req: Ruma<get_message_events::v3::Request>,
) -> MatrixResult<get_message_events::v3::Response> {
    let b = req.body;
    let visible = readable_upto(&node, &b.room_id, &req.caller.user_id).await?;
    let limit = limit_of(b.filter.limit.unwrap_or(b.limit).min(b.limit));
    let to = b.to.as_deref().map(token::position).transpose()?;
    let backwards = b.dir == Direction::Backward;
    let from = match b.from.as_deref() {
        Some(t) => token::position(t)?,
        None if backwards => visible,
        None => 0,
    };
    let (after, upto) = if backwards {
        (to.unwrap_or(0), from.min(visible))
    } else {
        (from, to.unwrap_or(visible).min(visible))
    };
    let (events, stopped) =
        page(&node, &b.room_id, after, upto, limit, backwards, &b.filter).await?;
    let device = device(&req.caller);
    let mut resp = get_message_events::v3::Response::new();
    resp.start = token::pagination(from);
    resp.end = stopped.map(|pos| token::pagination(if backwards { pos - 1 } else { pos }));
    resp.chunk = events
        .iter()
        .map(|pdu| pdu.to_client(Some(device), true))
        .collect();
    Ok(RumaResponse(resp))
}

pub(crate) async fn context(
    State(node): State<Node>,
    req: Ruma<get_context::v3::Request>,
) -> MatrixResult<get_context::v3::Response> {
    let b = req.body;
    let (pdu, visible) = room_event(&node, &req.caller, &b.room_id, &b.event_id).await?;
    let limit = limit_of(b.limit);
    let before_n = limit / 2;
    let after_n = limit - before_n;
    let (before, _) = page(
        &node,
        &b.room_id,
        0,
        pdu.stream - 1,
        before_n,
        true,
        &b.filter,
    )
    .await?;
    let (after, _) = page(
        &node, &b.room_id, pdu.stream, visible, after_n, false, &b.filter,
    )
    .await?;
    let state = node
        .rooms()
        .current_state(&b.room_id, &req.caller.user_id)
        .await?;
    let device = device(&req.caller);
    let mut resp = get_context::v3::Response::new();
    resp.start = Some(token::pagination(
        before.last().map_or(pdu.stream - 1, |p| p.stream - 1),
    ));
    resp.end = Some(token::pagination(
        after.last().map_or(pdu.stream, |p| p.stream),
    ));
    resp.events_before = before
        .iter()
        .map(|p| p.to_client(Some(device), true))
        .collect();
    resp.event = Some(pdu.to_client(Some(device), true));
    resp.events_after = after
        .iter()
        .map(|p| p.to_client(Some(device), true))
        .collect();
    resp.state = state
        .iter()
        .filter(|p| {
            p.kind().to_string() != StateEventType::RoomMember.to_string()
                || p.state_key().is_some()
        })
        .map(|p| p.to_client(Some(device), true))
        .collect();
    Ok(RumaResponse(resp))
}

impl Node {
    /// Sends a client's event to a room: the one path of every Matrix-originated room event.
    /// The enforcement point decides first (`matrix:send`, or `matrix:state` for a state event);
    /// then the room engine; then, for a room bridged to a data object, the bus.
    pub(crate) async fn matrix_send(
        &self,
        room_id: &ruma::RoomId,
        caller: &Caller,
        event: NewEvent,
        txn: Option<(TxnScope, String)>,
    ) -> Result<crate::rooms::Sent, MatrixError> {
        let action = if event.state_key.is_some() {
            "matrix:state"
        } else {
            "matrix:send"
        };
        let permit = super::enforce::permit(
            self,
            action,
            &caller.user_id,
            Some(room_id),
            None,
            event.content.get().len(),
        )
        .await?;
        let txn = txn.map(|(scope, id)| Txn {
            device: caller.device_id.to_string(),
            scope,
            id,
        });
        let sent = self
            .rooms()
            .send(&permit, room_id, &caller.user_id, event, txn)
            .await
            .map_err(|e| match e {
                RoomError::UnknownRoom(_) => {
                    RoomError::Forbidden(format!("{} is not in room {room_id}", caller.user_id))
                }
                other => other,
            })?;
        if let Some(object) = self.bridge().object_of(room_id).await? {
            // The event is stored: a refusal on the bus side does not undo it.
            if let Err(e) = self.bridge().publish(&object, &sent.pdu).await {
                tracing::debug!(error = %e, %object, "room event not published on the bus");
            }
        }
        Ok(sent)
    }
}

/// The caller's room-send rate (`matrix::rate_limit`).
fn limit_send(node: &Node, caller: &super::accounts::Caller) -> Result<(), MatrixError> {
    node.rate_limits()
        .room_send(caller.user_id.as_str(), caller.appservice.as_deref())
}
