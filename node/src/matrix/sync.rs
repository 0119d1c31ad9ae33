//! `GET /sync` (v3): the caller's rooms (joined, invited, left), their timelines, state,
//! ephemeral events, account data and unread counts, plus global account data, to-device
//! messages, device-list changes and one-time-key counts, since a token.
//!
//! A response covers the stream up to the position visible when it was built (everything below
//! it is committed), so the next `since` never skips a write. With a `since` and a `timeout`, the
//! request waits (long-poll) until the notifier reports something for the caller or the timeout
//! passes; it subscribes before building, so nothing that lands in between is missed.

use std::time::Duration;

use axum::extract::State;
use ruma::api::client::filter::{FilterDefinition, RoomEventFilter};
use ruma::api::client::sync::sync_events::UnreadNotificationsCount;
use ruma::api::client::sync::sync_events::v3::{
    self, Filter, InviteState, InvitedRoom, JoinedRoom, LeftRoom, State as RoomStateSection,
    StateEvents, Timeline,
};
use ruma::events::room::member::MembershipState;
use ruma::serde::Raw;
use ruma::{OwnedRoomId, UInt};
use tokio::time::Instant;

use super::accounts::Caller;
use super::error::{MatrixError, MatrixResult, RumaResponse};
use super::event_filter;
use super::events::page;
use super::extract::Ruma;
use super::token::{self, SyncToken};
use crate::node::Node;
use crate::rooms::Pdu;
use crate::store::rooms::MembershipRow;

/// Timeline events per room when the filter sets no limit.
const DEFAULT_TIMELINE_LIMIT: u32 = 10;
/// The longest long-poll.
const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// State event types shown to an invitee (stripped state).
const INVITE_STATE_TYPES: [&str; 6] = [
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.canonical_alias",
    "m.room.avatar",
    "m.room.encryption",
];

pub(crate) async fn sync(
    State(node): State<Node>,
    req: Ruma<v3::Request>,
) -> MatrixResult<v3::Response> {
    let caller = req.caller;
    let b = req.body;
    let filter = match b.filter {
        None => FilterDefinition::default(),
        Some(Filter::FilterDefinition(def)) => def,
        Some(Filter::FilterId(id)) => node
            .userdata()
            .filters()
            .get(&caller.user_id, &id)
            .await?
            .ok_or_else(|| MatrixError::NotFound(format!("unknown filter {id}")))?,
        Some(_) => return Err(MatrixError::InvalidParam("unsupported filter".to_owned())),
    };
    let since = b.since.as_deref().map(SyncToken::parse).transpose()?;
    let timeout = b.timeout.unwrap_or_default().min(MAX_TIMEOUT);
    let deadline = Instant::now() + timeout;
    let mut wake = node.stream().notifier().subscribe(&caller.user_id);
    loop {
        let response = build(&node, &caller, since, b.full_state, &filter).await?;
        let empty = response.rooms.is_empty()
            && response.account_data.is_empty()
            && response.to_device.is_empty()
            && response.device_lists.is_empty();
        if since.is_none() || b.full_state || !empty || Instant::now() >= deadline {
            return Ok(RumaResponse(response));
        }
        tokio::select! {
            changed = wake.changed() => {
                if changed.is_err() {
                    return Ok(RumaResponse(response));
                }
            }
            () = tokio::time::sleep_until(deadline) => return Ok(RumaResponse(response)),
            () = node.shutdown_token().cancelled() => return Ok(RumaResponse(response)),
        }
    }
}

/// One sync response, from `since` up to the currently visible position.
async fn build(
    node: &Node,
    caller: &Caller,
    since: Option<SyncToken>,
    full_state: bool,
    filter: &FilterDefinition,
) -> Result<v3::Response, MatrixError> {
    let upto = node.stream().visible();
    let typing = node.userdata().typing_serial();
    let from = since.map_or(0, |t| t.pos);
    let mut response = v3::Response::new(SyncToken { pos: upto, typing }.to_string());
    let user = caller.user_id.as_str();
    let memberships = node.rooms().store().user_rooms(user).await?;
    for row in memberships {
        if row.stream > upto {
            continue;
        }
        let Ok(room_id) = OwnedRoomId::try_from(row.room_id.as_str()) else {
            continue;
        };
        if !room_wanted(&filter.room.rooms, &filter.room.not_rooms, &room_id) {
            continue;
        }
        let changed = since.is_none() || row.stream > from;
        match row.membership.as_str() {
            m if m == MembershipState::Join.as_str() => {
                let room = joined_room(
                    node,
                    caller,
                    &room_id,
                    &row,
                    since,
                    upto,
                    full_state || changed,
                    filter,
                )
                .await?;
                if let Some(room) = room {
                    response.rooms.join.insert(room_id, room);
                }
            }
            m if m == MembershipState::Invite.as_str() => {
                if changed || full_state {
                    let room = invited_room(node, &room_id, caller, upto).await?;
                    response.rooms.invite.insert(room_id, room);
                }
            }
            _ => {
                let wanted = if since.is_some() {
                    changed
                } else {
                    filter.room.include_leave
                };
                if wanted && !row.forgotten {
                    let room = left_room(node, caller, &room_id, &row, from, filter).await?;
                    response.rooms.leave.insert(room_id, room);
                }
            }
        }
    }
    let global = node
        .userdata()
        .sync_global(&caller.user_id, &caller.device_id, from, upto)
        .await?;
    response.account_data.events = global.account_data;
    response.to_device.events = global.to_device;
    response.device_lists.changed = global.device_lists_changed;
    response.device_one_time_keys_count = global.one_time_keys_count;
    Ok(response)
}

fn room_wanted(
    rooms: &Option<Vec<OwnedRoomId>>,
    not_rooms: &[OwnedRoomId],
    room_id: &OwnedRoomId,
) -> bool {
    rooms.as_ref().is_none_or(|r| r.contains(room_id)) && !not_rooms.contains(room_id)
}

fn timeline_limit(filter: &RoomEventFilter) -> u32 {
    filter
        .limit
        .map_or(DEFAULT_TIMELINE_LIMIT, |l| {
            u32::try_from(u64::from(l)).unwrap_or(u32::MAX)
        })
        .clamp(1, 1000)
}

/// The last events of a room in `(after, upto]`: the timeline, oldest first, and whether
/// older events were left out.
async fn timeline(
    node: &Node,
    caller: &Caller,
    room_id: &OwnedRoomId,
    after: i64,
    upto: i64,
    filter: &RoomEventFilter,
) -> Result<(Timeline, Vec<Pdu>), MatrixError> {
    let limit = timeline_limit(filter);
    let (mut events, stopped) = page(node, room_id, after, upto, limit, true, filter).await?;
    events.reverse();
    let device = (&*caller.user_id, caller.device_id.as_str());
    let mut timeline = Timeline::new();
    // More events exist before the first one returned if the scan stopped early.
    timeline.limited = stopped.is_some()
        && node
            .rooms()
            .store()
            .events(
                room_id.as_str(),
                after,
                events.first().map_or(upto, |p| p.stream - 1),
                1,
                true,
            )
            .await?
            .first()
            .is_some();
    timeline.prev_batch = Some(token::pagination(
        events.first().map_or(upto, |p| p.stream - 1),
    ));
    timeline.events = events
        .iter()
        .map(|p| p.to_client(Some(device), false))
        .collect();
    Ok((timeline, events))
}

/// State events to send with a timeline: with `full`, the room's state before the timeline;
/// otherwise what changed between `from` and the timeline's start (only when it is limited).
async fn state_section(
    node: &Node,
    caller: &Caller,
    room_id: &OwnedRoomId,
    from: i64,
    upto: i64,
    timeline: &[Pdu],
    full: bool,
    limited: bool,
    filter: &RoomEventFilter,
) -> Result<Vec<Raw<ruma::events::AnySyncStateEvent>>, MatrixError> {
    if !full && !limited {
        return Ok(Vec::new());
    }
    let start = timeline.first().map_or(upto + 1, |p| p.stream);
    let state = node
        .rooms()
        .store()
        .state_upto(room_id.as_str(), upto)
        .await?;
    let device = (&*caller.user_id, caller.device_id.as_str());
    Ok(state
        .iter()
        .filter(|p| p.stream < start && (full || p.stream > from))
        .filter(|p| !timeline.iter().any(|t| t.event_id == p.event_id))
        .filter(|p| event_filter::matches(filter, p))
        .map(|p| p.to_client(Some(device), false))
        .collect())
}

#[allow(clippy::too_many_arguments)]
async fn joined_room(
    node: &Node,
    caller: &Caller,
    room_id: &OwnedRoomId,
    row: &MembershipRow,
    since: Option<SyncToken>,
    upto: i64,
    full: bool,
    filter: &FilterDefinition,
) -> Result<Option<JoinedRoom>, MatrixError> {
    let from = since.map_or(0, |t| t.pos);
    let after = if full { 0 } else { from };
    let (timeline, events) =
        timeline(node, caller, room_id, after, upto, &filter.room.timeline).await?;
    let state = state_section(
        node,
        caller,
        room_id,
        from,
        upto,
        &events,
        full,
        timeline.limited,
        &filter.room.state,
    )
    .await?;
    let extras = node
        .userdata()
        .sync_room(
            &caller.user_id,
            room_id,
            from,
            upto,
            since.map_or(0, |t| t.typing),
        )
        .await?;
    if !full
        && timeline.events.is_empty()
        && state.is_empty()
        && extras.account_data.is_empty()
        && extras.ephemeral.is_empty()
    {
        return Ok(None);
    }
    let mut room = JoinedRoom::new();
    room.timeline = timeline;
    room.state = RoomStateSection::Before(state_events(state));
    room.account_data.events = extras.account_data;
    room.ephemeral.events = extras.ephemeral;
    room.unread_notifications = unread(node, caller, room_id, row, upto).await?;
    Ok(Some(room))
}

fn state_events(events: Vec<Raw<ruma::events::AnySyncStateEvent>>) -> StateEvents {
    let mut state = StateEvents::new();
    state.events = events;
    state
}

/// Messages from others after the caller's read receipt (or after joining, without one).
async fn unread(
    node: &Node,
    caller: &Caller,
    room_id: &OwnedRoomId,
    row: &MembershipRow,
    upto: i64,
) -> Result<UnreadNotificationsCount, MatrixError> {
    let receipt = node
        .userdata()
        .read_receipt(&caller.user_id, room_id)
        .await?;
    let read_at = match receipt {
        Some(event_id) => node
            .rooms()
            .store()
            .event(event_id.as_str())
            .await?
            .map_or(row.stream, |p| p.stream),
        None => row.stream,
    };
    let count = node
        .rooms()
        .store()
        .count_from_others(room_id.as_str(), caller.user_id.as_str(), read_at, upto)
        .await?;
    let mut unread = UnreadNotificationsCount::new();
    unread.notification_count = Some(UInt::try_from(count).unwrap_or(UInt::MAX));
    unread.highlight_count = Some(UInt::from(0u32));
    Ok(unread)
}

/// An invitation: the stripped state the invitee may see, with the invite itself.
async fn invited_room(
    node: &Node,
    room_id: &OwnedRoomId,
    caller: &Caller,
    upto: i64,
) -> Result<InvitedRoom, MatrixError> {
    let state = node
        .rooms()
        .store()
        .state_upto(room_id.as_str(), upto)
        .await?;
    let events = state
        .iter()
        .filter(|p| {
            let kind = p.kind().to_string();
            INVITE_STATE_TYPES.contains(&kind.as_str())
                || (kind == "m.room.member" && p.state_key() == Some(caller.user_id.as_str()))
        })
        .map(stripped)
        .collect::<Result<Vec<_>, _>>()?;
    let mut invite_state = InviteState::new();
    invite_state.events = events;
    Ok(InvitedRoom::from(invite_state))
}

/// The stripped form of a state event.
fn stripped<T>(pdu: &Pdu) -> Result<Raw<T>, MatrixError> {
    #[derive(serde::Serialize)]
    struct Stripped<'a> {
        content: &'a serde_json::value::RawValue,
        sender: &'a ruma::UserId,
        state_key: &'a str,
        #[serde(rename = "type")]
        kind: String,
    }
    Raw::new(&Stripped {
        content: pdu.content(),
        sender: pdu.sender(),
        state_key: pdu.state_key().unwrap_or_default(),
        kind: pdu.kind().to_string(),
    })
    .map(Raw::cast_unchecked)
    .map_err(|e| MatrixError::Internal(format!("stripped state: {e}")))
}

/// A room the caller left (or was kicked or banned from) since the last sync: its timeline up to
/// the caller's leave event.
async fn left_room(
    node: &Node,
    caller: &Caller,
    room_id: &OwnedRoomId,
    row: &MembershipRow,
    from: i64,
    filter: &FilterDefinition,
) -> Result<LeftRoom, MatrixError> {
    let (timeline, events) = timeline(
        node,
        caller,
        room_id,
        from,
        row.stream,
        &filter.room.timeline,
    )
    .await?;
    let state = state_section(
        node,
        caller,
        room_id,
        from,
        row.stream,
        &events,
        from == 0,
        timeline.limited,
        &filter.room.state,
    )
    .await?;
    let mut room = LeftRoom::new();
    room.timeline = timeline;
    room.state = RoomStateSection::Before(state_events(state));
    Ok(room)
}
