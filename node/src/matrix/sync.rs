//! `GET /sync` (v3): the caller's rooms (joined, invited, left), their timelines, state,
//! ephemeral events, account data and unread counts, plus global account data, to-device
//! messages, device-list changes, one-time-key counts and unused fallback key algorithms, since
//! a token.
//!
//! `set_presence` (default `online`) sets the caller's presence when it differs from the stored
//! one. A response covers the stream up to the position visible when it was built (everything below
//! it is committed), so the next `since` never skips a write. With a `since` and a `timeout`, the
//! request waits (long-poll) until the notifier reports something for the caller or the timeout
//! passes; it subscribes before building, so nothing that lands in between is missed. Once woken,
//! it lets the writes being committed at that moment finish first (at most 2 ms), so that under
//! load one answer carries what would otherwise take several.
//!
//! Incremental syncs ask the database only for what changed: the notifier's change marks tell
//! whether the caller, their global data, or a room's events or per-room data changed after
//! `since`; memberships and recent events come from the room caches.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use prometheus_client::metrics::gauge::Gauge;
use ruma::api::client::filter::{FilterDefinition, RoomEventFilter};
use ruma::api::client::sync::sync_events::UnreadNotificationsCount;
use ruma::api::client::sync::sync_events::v3::{
    self, InviteState, InvitedRoom, JoinedRoom, LeftRoom, State as RoomStateSection, StateEvents,
    Timeline,
};
use ruma::events::room::member::MembershipState;
use ruma::events::{AnySyncStateEvent, TimelineEventType};
use ruma::serde::Raw;
use ruma::{OwnedRoomId, UInt};

use super::accounts::Caller;
use super::error::MatrixError;
use super::event_filter;
use super::events::page;
use super::sync_answer::SyncAnswer;
use super::sync_request::SyncRequest;
use super::token::{self, SyncToken};
use crate::node::Node;
use crate::rooms::Pdu;
use crate::rooms::cache::ReadMark;
use crate::store::rooms::MembershipRow;

/// Timeline events per room when the filter sets no limit.
const DEFAULT_TIMELINE_LIMIT: u32 = 10;
/// The longest long-poll.
const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait, once woken, for the writer to finish what it is committing (see
/// [`crate::stream::StreamWriter::settled`]); a group commit takes well under a millisecond.
const SETTLE_AT_MOST: Duration = Duration::from_millis(2);
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
    req: SyncRequest,
) -> Result<SyncAnswer, MatrixError> {
    let caller = req.caller;
    let b = req.query;
    let filter = match &b.filter {
        None => Arc::new(FilterDefinition::default()),
        Some(param) => node
            .userdata()
            .filters()
            .for_sync(&caller.user_id, param)
            .await?
            .ok_or_else(|| MatrixError::NotFound(format!("unknown filter {param}")))?,
    };
    let since = b.since.as_deref().map(SyncToken::parse).transpose()?;
    // The sync counts for presence (keeps the caller from timing out) until it returns.
    let _presence = node
        .userdata()
        .presence()
        .syncing(&caller.user_id, &b.set_presence)
        .await?;
    let timeout = b.timeout().unwrap_or_default().min(MAX_TIMEOUT);
    let clock = node.clock();
    let deadline = clock.now() + timeout;
    let mut wake = node.stream().notifier().subscribe(&caller.user_id);
    let mut waiting = None;
    loop {
        let response = build(&node, &caller, since, b.full_state, &filter).await?;
        let empty = response.rooms.is_empty()
            && response.presence.is_empty()
            && response.account_data.is_empty()
            && response.to_device.is_empty()
            && response.device_lists.is_empty();
        if since.is_none() || b.full_state || !empty || clock.now() >= deadline {
            return Ok(SyncAnswer(response));
        }
        waiting.get_or_insert_with(|| Waiting::new(&node.metrics().matrix_syncs_waiting));
        tokio::select! {
            changed = wake.changed() => {
                if changed.is_err() {
                    return Ok(SyncAnswer(response));
                }
                node.stream().settled(SETTLE_AT_MOST).await;
            }
            () = clock.sleep_until(deadline) => return Ok(SyncAnswer(response)),
            () = node.shutdown_token().cancelled() => return Ok(SyncAnswer(response)),
        }
    }
}

/// Counts a long-poll as waiting (the `matrix_syncs_waiting` gauge) until dropped.
struct Waiting(Gauge);

impl Waiting {
    fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What one sync response is built from.
struct Ctx<'a> {
    node: &'a Node,
    caller: &'a Caller,
    filter: &'a FilterDefinition,
    /// The `since` position (0 for an initial sync).
    from: i64,
    /// The position the response covers.
    upto: i64,
    since_typing: u64,
    /// Typing changed somewhere since the token.
    typing_changed: bool,
}

impl Ctx<'_> {
    fn device(&self) -> (&ruma::UserId, &str) {
        (&self.caller.user_id, self.caller.device_id.as_str())
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
    let mut response = v3::Response::new(
        SyncToken {
            pos: upto,
            typing,
            to_device: None,
        }
        .to_string(),
    );
    let notifier = node.stream().notifier();
    let ctx = Ctx {
        node,
        caller,
        filter,
        from: since.map_or(0, |t| t.pos),
        upto,
        since_typing: since.map_or(0, |t| t.typing),
        typing_changed: since.is_none_or(|t| t.typing != typing),
    };
    let incremental = since.is_some() && !full_state;
    // To-device messages still waiting after the last sync's bound are due whatever changed.
    let backlog = since.and_then(|t| t.to_device);
    let global_due = !incremental
        || backlog.is_some()
        || notifier.global_due(&caller.user_id, &caller.device_id, ctx.from);
    // In every answer (the spec allows leaving the counts out only when no key is left).
    let counts = node
        .userdata()
        .keys()
        .sync_counts(&caller.user_id, &caller.device_id, global_due, upto)
        .await?;
    response.device_one_time_keys_count = counts.one_time;
    response.device_unused_fallback_key_types = Some(counts.unused_fallback);
    if incremental
        && !ctx.typing_changed
        && !global_due
        && !notifier.user_changed(&caller.user_id, ctx.from)
    {
        return Ok(response);
    }
    for row in node.rooms().caches().user_rooms(&caller.user_id) {
        if row.stream > upto {
            continue;
        }
        let Ok(room_id) = OwnedRoomId::try_from(row.room_id.as_str()) else {
            continue;
        };
        if !room_wanted(&filter.room.rooms, &filter.room.not_rooms, &room_id) {
            continue;
        }
        let changed = !incremental || row.stream > ctx.from;
        match row.membership.as_str() {
            m if m == MembershipState::Join.as_str() => {
                if let Some(room) = joined_room(&ctx, &room_id, &row, changed).await? {
                    response.rooms.join.insert(room_id, room);
                }
            }
            m if m == MembershipState::Invite.as_str() => {
                if changed {
                    let room = invited_room(&ctx, &room_id).await?;
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
                    let room = left_room(&ctx, &room_id, &row).await?;
                    response.rooms.leave.insert(room_id, room);
                }
            }
        }
    }
    if global_due {
        notifier.global_read(&caller.user_id, &caller.device_id, ctx.from);
        let global = node
            .userdata()
            .sync_global(&caller.user_id, &caller.device_id, ctx.from, backlog, upto)
            .await?;
        if let Some(cursor) = global.to_device_cursor {
            response.next_batch = SyncToken {
                pos: upto,
                typing,
                to_device: Some(cursor),
            }
            .to_string();
        }
        response.account_data.events = global.account_data;
        response.to_device.events = global.to_device;
        response.device_lists.changed = global.device_lists_changed;
        response.presence.events = global.presence;
    }
    if since.is_some() {
        let lists = &mut response.device_lists;
        super::keys::sync_membership_changes(node, caller, ctx.from, upto, lists).await?;
    }
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

/// The last events of a room in `(after, upto]` that pass the filter, oldest first, and
/// whether older ones were left out: from the room's recent events when they cover the range,
/// else from the database.
async fn last_events(
    ctx: &Ctx<'_>,
    room_id: &OwnedRoomId,
    after: i64,
    upto: i64,
    filter: &RoomEventFilter,
) -> Result<(Vec<Arc<Pdu>>, bool), MatrixError> {
    let limit = timeline_limit(filter) as usize;
    if let Some(cached) = ctx.node.rooms().caches().events(room_id, after, upto) {
        let mut events: Vec<Arc<Pdu>> = cached
            .into_iter()
            .filter(|p| event_filter::matches(filter, p))
            .collect();
        let limited = events.len() > limit;
        if limited {
            events.drain(..events.len() - limit);
        }
        return Ok((events, limited));
    }
    let (mut events, stopped) =
        page(ctx.node, room_id, after, upto, limit as u32, true, filter).await?;
    events.reverse();
    // More events exist before the first one returned if the scan stopped early.
    let limited = stopped.is_some()
        && !ctx
            .node
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
            .is_empty();
    Ok((events.into_iter().map(Arc::new).collect(), limited))
}

/// A room's timeline in `(after, upto]`, and its events.
async fn timeline(
    ctx: &Ctx<'_>,
    room_id: &OwnedRoomId,
    after: i64,
    upto: i64,
) -> Result<(Timeline, Vec<Arc<Pdu>>), MatrixError> {
    let (events, limited) =
        last_events(ctx, room_id, after, upto, &ctx.filter.room.timeline).await?;
    let mut timeline = Timeline::new();
    timeline.limited = limited;
    timeline.prev_batch = Some(token::pagination(
        events.first().map_or(upto, |p| p.stream - 1),
    ));
    timeline.events = events
        .iter()
        .map(|p| p.to_client(Some(ctx.device()), false))
        .collect();
    Ok((timeline, events))
}

/// State events to send with a timeline: with `full`, the room's state before the timeline;
/// otherwise what changed between `since` and the timeline's start (only when it is limited).
async fn state_section(
    ctx: &Ctx<'_>,
    room_id: &OwnedRoomId,
    upto: i64,
    timeline: &[Arc<Pdu>],
    full: bool,
    limited: bool,
) -> Result<Vec<Raw<AnySyncStateEvent>>, MatrixError> {
    if !full && !limited {
        return Ok(Vec::new());
    }
    let start = timeline.first().map_or(upto + 1, |p| p.stream);
    // Incremental: only what was set since the token is read.
    let after = if full { i64::MIN } else { ctx.from };
    let state = ctx
        .node
        .rooms()
        .store()
        .state_between(room_id.as_str(), after, upto)
        .await?;
    Ok(state
        .iter()
        .filter(|p| p.stream < start && (full || p.stream > ctx.from))
        .filter(|p| !timeline.iter().any(|t| t.event_id == p.event_id))
        .filter(|p| event_filter::matches(&ctx.filter.room.state, p))
        .map(|p| p.to_client(Some(ctx.device()), false))
        .collect())
}

async fn joined_room(
    ctx: &Ctx<'_>,
    room_id: &OwnedRoomId,
    row: &MembershipRow,
    full: bool,
) -> Result<Option<JoinedRoom>, MatrixError> {
    let (events_changed, extras_changed) =
        ctx.node.stream().notifier().room_changed(room_id, ctx.from);
    if !full && !events_changed && !extras_changed && !ctx.typing_changed {
        return Ok(None);
    }
    let after = if full { 0 } else { ctx.from };
    let (timeline, events) = if full || events_changed {
        timeline(ctx, room_id, after, ctx.upto).await?
    } else {
        (Timeline::new(), Vec::new())
    };
    let state = state_section(ctx, room_id, ctx.upto, &events, full, timeline.limited).await?;
    let extras = if full || extras_changed || ctx.typing_changed {
        Some(
            ctx.node
                .userdata()
                .sync_room(
                    &ctx.caller.user_id,
                    room_id,
                    ctx.from,
                    ctx.upto,
                    ctx.since_typing,
                )
                .await?,
        )
    } else {
        None
    };
    let no_extras = extras
        .as_ref()
        .is_none_or(|e| e.account_data.is_empty() && e.ephemeral.is_empty());
    if !full && timeline.events.is_empty() && state.is_empty() && no_extras {
        return Ok(None);
    }
    let mut room = JoinedRoom::new();
    room.timeline = timeline;
    room.state = RoomStateSection::Before(state_events(state));
    if let Some(extras) = extras {
        room.account_data.events = extras.account_data;
        room.ephemeral.events = extras.ephemeral;
    }
    room.unread_notifications = unread(ctx, room_id, row).await?;
    let members_changed = events
        .iter()
        .any(|p| *p.kind() == TimelineEventType::RoomMember);
    if full || members_changed {
        let (joined, invited, heroes) = ctx
            .node
            .rooms()
            .summary(room_id, &ctx.caller.user_id)
            .await?;
        room.summary.joined_member_count = Some(UInt::try_from(joined).unwrap_or(UInt::MAX));
        room.summary.invited_member_count = Some(UInt::try_from(invited).unwrap_or(UInt::MAX));
        room.summary.heroes = heroes;
    }
    Ok(Some(room))
}

fn state_events(events: Vec<Raw<AnySyncStateEvent>>) -> StateEvents {
    let mut state = StateEvents::new();
    state.events = events;
    state
}

/// Messages from others after the caller's read receipt (or after joining, without one):
/// counted in memory for the room's latest events; the caller's read position and any count
/// reaching before them are asked of the database once and remembered.
async fn unread(
    ctx: &Ctx<'_>,
    room_id: &OwnedRoomId,
    row: &MembershipRow,
) -> Result<UnreadNotificationsCount, MatrixError> {
    let node = ctx.node;
    let user = &ctx.caller.user_id;
    let caches = node.rooms().caches();
    let notifier = node.stream().notifier();
    let read = match caches.read_mark(user, room_id) {
        Some(mark) if !notifier.room_changed(room_id, mark.at).1 => mark.pos,
        _ => {
            let pos = match node.userdata().read_receipt(user, room_id).await? {
                Some(event) => node
                    .rooms()
                    .store()
                    .event(event.as_str())
                    .await?
                    .map_or(0, |p| p.stream),
                None => 0,
            };
            caches.remember_read_mark(user, room_id, ReadMark { pos, at: ctx.upto });
            pos
        }
    };
    let floor = read.max(row.stream);
    let (mut count, complete_from) = caches.others_after(room_id, user, floor, ctx.upto);
    if floor < complete_from {
        count += match caches.counted(user, room_id, floor, complete_from) {
            Some(n) => n,
            None => {
                let n = node
                    .rooms()
                    .store()
                    .count_from_others(room_id.as_str(), user.as_str(), floor, complete_from)
                    .await?;
                caches.remember_counted(user, room_id, floor, complete_from, n);
                n
            }
        };
    }
    let mut unread = UnreadNotificationsCount::new();
    unread.notification_count = Some(UInt::try_from(count).unwrap_or(UInt::MAX));
    unread.highlight_count = Some(UInt::from(0u32));
    Ok(unread)
}

/// An invitation: the stripped state the invitee may see, with the invite itself.
async fn invited_room(ctx: &Ctx<'_>, room_id: &OwnedRoomId) -> Result<InvitedRoom, MatrixError> {
    let state = ctx
        .node
        .rooms()
        .store()
        .state_upto(room_id.as_str(), ctx.upto)
        .await?;
    let events = state
        .iter()
        .filter(|p| {
            let kind = p.kind().to_string();
            INVITE_STATE_TYPES.contains(&kind.as_str())
                || (kind == "m.room.member" && p.state_key() == Some(ctx.caller.user_id.as_str()))
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
    .map_err(|source| MatrixError::Json {
        what: "stripped state",
        source,
    })
}

/// A room the caller left (or was kicked or banned from) since the last sync: its timeline up to
/// the caller's leave event.
async fn left_room(
    ctx: &Ctx<'_>,
    room_id: &OwnedRoomId,
    row: &MembershipRow,
) -> Result<LeftRoom, MatrixError> {
    let (timeline, events) = timeline(ctx, room_id, ctx.from, row.stream).await?;
    let state = state_section(
        ctx,
        room_id,
        row.stream,
        &events,
        ctx.from == 0,
        timeline.limited,
    )
    .await?;
    let mut room = LeftRoom::new();
    room.timeline = timeline;
    room.state = RoomStateSection::Before(state_events(state));
    Ok(room)
}
