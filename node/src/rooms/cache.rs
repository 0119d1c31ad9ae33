//! [`RoomCaches`]: what `/sync` reads most, kept in memory and updated by the stream writer at
//! each commit, before the position becomes visible (DESIGN.md section 8): every user's
//! memberships (loaded whole at start) and each room's most recent committed events.
//!
//! A room's recent events are complete after the position `complete_from`: at start that is the
//! head (no event of any room is later), and it moves up as old events are dropped. A read for
//! a range that starts earlier goes to the database.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};

use super::pdu::Pdu;
use crate::store::rooms::MembershipRow;
use crate::sync::lock;

/// Recent events kept per room.
const RECENT_PER_ROOM: usize = 128;

#[derive(Debug)]
struct Recent {
    complete_from: i64,
    events: VecDeque<Arc<Pdu>>,
}

#[derive(Debug)]
struct Inner {
    start: i64,
    memberships: Mutex<HashMap<OwnedUserId, HashMap<OwnedRoomId, MembershipRow>>>,
    recent: Mutex<HashMap<OwnedRoomId, Recent>>,
}

/// The caches. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RoomCaches {
    inner: Arc<Inner>,
}

/// A committed event, for the caches.
#[derive(Debug)]
pub(super) struct CommittedEvent {
    pub(super) pdu: Arc<Pdu>,
    /// For a member event: the target and the new membership.
    pub(super) membership: Option<(OwnedUserId, String)>,
}

impl RoomCaches {
    /// Caches starting at stream position `start`, with every stored membership.
    pub fn new(start: i64, memberships: Vec<(OwnedUserId, MembershipRow)>) -> Self {
        let mut by_user: HashMap<OwnedUserId, HashMap<OwnedRoomId, MembershipRow>> = HashMap::new();
        for (user, row) in memberships {
            if let Ok(room) = OwnedRoomId::try_from(row.room_id.as_str()) {
                by_user.entry(user).or_default().insert(room, row);
            }
        }
        RoomCaches {
            inner: Arc::new(Inner {
                start,
                memberships: Mutex::new(by_user),
                recent: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Records a committed event at `pos` (called by the stream writer).
    pub(super) fn committed(&self, event: CommittedEvent, pos: i64) {
        let mut pdu = Pdu::clone(&event.pdu);
        pdu.stream = pos;
        let room = pdu.fields.room_id.clone();
        if let Some((user, membership)) = event.membership {
            lock(&self.inner.memberships)
                .entry(user)
                .or_default()
                .insert(
                    room.clone(),
                    MembershipRow {
                        room_id: room.to_string(),
                        membership,
                        stream: pos,
                        forgotten: false,
                    },
                );
        }
        let mut recent = lock(&self.inner.recent);
        let entry = recent.entry(room).or_insert_with(|| Recent {
            complete_from: self.inner.start,
            events: VecDeque::with_capacity(RECENT_PER_ROOM),
        });
        if entry.events.len() == RECENT_PER_ROOM
            && let Some(old) = entry.events.pop_front()
        {
            entry.complete_from = old.stream;
        }
        entry.events.push_back(Arc::new(pdu));
    }

    /// Replaces a cached event by its redacted form.
    pub(super) fn redacted(&self, room: &RoomId, redacted: Pdu) {
        let mut recent = lock(&self.inner.recent);
        if let Some(entry) = recent.get_mut(room)
            && let Some(slot) = entry
                .events
                .iter_mut()
                .find(|p| p.event_id == redacted.event_id)
        {
            let stream = slot.stream;
            let mut pdu = redacted;
            pdu.stream = stream;
            *slot = Arc::new(pdu);
        }
    }

    /// The memberships of `user`.
    pub fn user_rooms(&self, user: &UserId) -> Vec<MembershipRow> {
        lock(&self.inner.memberships)
            .get(user)
            .map(|rooms| rooms.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The membership of `user` in `room`.
    pub fn membership(&self, user: &UserId, room: &RoomId) -> Option<MembershipRow> {
        lock(&self.inner.memberships)
            .get(user)
            .and_then(|rooms| rooms.get(room))
            .cloned()
    }

    /// Marks a room forgotten by `user`.
    pub fn forget(&self, user: &UserId, room: &RoomId) {
        if let Some(row) = lock(&self.inner.memberships)
            .get_mut(user)
            .and_then(|rooms| rooms.get_mut(room))
        {
            row.forgotten = true;
        }
    }

    /// The room's events in `(after, upto]`, oldest first, if the cache holds all of them.
    pub fn events(&self, room: &RoomId, after: i64, upto: i64) -> Option<Vec<Arc<Pdu>>> {
        let recent = lock(&self.inner.recent);
        let Some(entry) = recent.get(room) else {
            // No event of this room since the start.
            return (after >= self.inner.start).then(Vec::new);
        };
        if after < entry.complete_from {
            return None;
        }
        Some(
            entry
                .events
                .iter()
                .filter(|p| p.stream > after && p.stream <= upto)
                .cloned()
                .collect(),
        )
    }
}
