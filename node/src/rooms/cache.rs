//! [`RoomCaches`]: what `/sync` reads most, kept in memory and updated by the stream writer at
//! each commit, before the position becomes visible: every user's
//! memberships (loaded whole at start) and each room's most recent committed events.
//!
//! A room's recent events are complete after the position `complete_from`: at start that is the
//! head (no event of any room is later), and it moves up as old events are dropped. A read for
//! a range that starts earlier goes to the database.
//!
//! For unread counts, each room also keeps the positions of its latest non-state events (up to
//! 65,536, in all and by sender, 16 bytes an event): the number of events from others in a range
//! is then two binary searches a list. Counts that reach before what a room keeps are asked of
//! the database once and remembered (that part of history never changes); so is each user's read
//! receipt position, until the room's per-room data changes.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};

use super::pdu::Pdu;
use crate::locks::lock;
use crate::maps::update;
use crate::store::rooms::MembershipRow;

/// Recent events kept per room.
const RECENT_PER_ROOM: usize = 64;

#[derive(Debug)]
struct Recent {
    complete_from: i64,
    events: VecDeque<Arc<Pdu>>,
}

/// Non-state event positions kept per room before the oldest [`DROP_MESSAGES`] are dropped.
const MAX_MESSAGES: usize = 65_536;
const DROP_MESSAGES: usize = 8_192;

/// Positions of a room's non-state events, all of them after `complete_from`.
#[derive(Debug)]
struct Messages {
    complete_from: i64,
    all: VecDeque<i64>,
    by_sender: HashMap<OwnedUserId, VecDeque<i64>>,
}

impl Messages {
    fn push(&mut self, sender: &UserId, pos: i64) {
        self.all.push_back(pos);
        update(&mut self.by_sender, sender, |list| list.push_back(pos));
        if self.all.len() > MAX_MESSAGES {
            let dropped = self.all.drain(..DROP_MESSAGES).next_back();
            if let Some(last) = dropped {
                self.complete_from = last;
            }
            let from = self.complete_from;
            self.by_sender.retain(|_, list| {
                while list.front().is_some_and(|&p| p <= from) {
                    list.pop_front();
                }
                !list.is_empty()
            });
        }
    }
}

/// How many positions of a sorted list lie in `(after, upto]`.
fn count_in(list: &VecDeque<i64>, after: i64, upto: i64) -> u64 {
    let lo = list.partition_point(|&p| p <= after);
    let hi = list.partition_point(|&p| p <= upto);
    (hi.saturating_sub(lo)) as u64
}

/// A user's read position in a room, and the position it was read at.
#[derive(Debug, Clone, Copy)]
pub struct ReadMark {
    pub pos: i64,
    pub at: i64,
}

#[derive(Debug)]
struct Inner {
    start: i64,
    memberships: Mutex<HashMap<OwnedUserId, HashMap<OwnedRoomId, MembershipRow>>>,
    recent: Mutex<HashMap<OwnedRoomId, Recent>>,
    messages: Mutex<HashMap<OwnedRoomId, Messages>>,
    /// (user, room, floor, bound) → events from others in `(floor, bound]` (from the database).
    counted: Mutex<HashMap<(OwnedUserId, OwnedRoomId, i64, i64), u64>>,
    read_marks: Mutex<HashMap<OwnedUserId, HashMap<OwnedRoomId, ReadMark>>>,
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
                messages: Mutex::new(HashMap::new()),
                counted: Mutex::new(HashMap::new()),
                read_marks: Mutex::new(HashMap::new()),
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
        if pdu.state_key().is_none() {
            lock(&self.inner.messages)
                .entry(room.clone())
                .or_insert_with(|| Messages {
                    complete_from: self.inner.start,
                    all: VecDeque::new(),
                    by_sender: HashMap::new(),
                })
                .push(pdu.sender(), pos);
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

    /// Whether a membership of `user` changed after position `after`, or a room `user` is joined
    /// to has a state event after it (or may have: its recent events do not reach back that
    /// far). Allocates nothing; locks the memberships, then the recent events (`committed` never
    /// holds both).
    pub fn state_changed_since(&self, user: &UserId, after: i64) -> bool {
        let memberships = lock(&self.inner.memberships);
        let Some(rooms) = memberships.get(user) else {
            return false;
        };
        if rooms.values().any(|row| row.stream > after) {
            return true;
        }
        let recent = lock(&self.inner.recent);
        rooms
            .iter()
            .filter(|(_, row)| row.membership == "join")
            .any(|(room, _)| match recent.get(room) {
                None => after < self.inner.start,
                Some(entry) => {
                    after < entry.complete_from
                        || entry
                            .events
                            .iter()
                            .rev()
                            .take_while(|p| p.stream > after)
                            .any(|p| p.state_key().is_some())
                }
            })
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

    /// Non-state events from others than `user` in `(after, upto]` that the cache holds, and
    /// the position after which it holds all of them (events up to it must be counted
    /// elsewhere).
    pub fn others_after(&self, room: &RoomId, user: &UserId, after: i64, upto: i64) -> (u64, i64) {
        let messages = lock(&self.inner.messages);
        let Some(m) = messages.get(room) else {
            return (0, self.inner.start);
        };
        let after = after.max(m.complete_from);
        let own = m
            .by_sender
            .get(user)
            .map_or(0, |list| count_in(list, after, upto));
        (
            count_in(&m.all, after, upto).saturating_sub(own),
            m.complete_from,
        )
    }

    /// The remembered count of events from others in `(floor, bound]`.
    pub fn counted(&self, user: &UserId, room: &RoomId, floor: i64, bound: i64) -> Option<u64> {
        lock(&self.inner.counted)
            .get(&(user.to_owned(), room.to_owned(), floor, bound))
            .copied()
    }

    /// Remembers a count of events from others in `(floor, bound]` (history there is final).
    pub fn remember_counted(&self, user: &UserId, room: &RoomId, floor: i64, bound: i64, n: u64) {
        let mut counted = lock(&self.inner.counted);
        // Older bounds of this user and room are of no further use.
        counted.retain(|(u, r, _, b), _| !(u == user && r == room && *b < bound));
        counted.insert((user.to_owned(), room.to_owned(), floor, bound), n);
    }

    /// The remembered read position of `user` in `room`.
    pub fn read_mark(&self, user: &UserId, room: &RoomId) -> Option<ReadMark> {
        lock(&self.inner.read_marks)
            .get(user)
            .and_then(|rooms| rooms.get(room))
            .copied()
    }

    pub fn remember_read_mark(&self, user: &UserId, room: &RoomId, mark: ReadMark) {
        update(&mut lock(&self.inner.read_marks), user, |rooms| {
            rooms.insert(room.to_owned(), mark);
        });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_positions_drop_the_oldest_beyond_the_cap() {
        let alice = ruma::user_id!("@alice:x");
        let bob = ruma::user_id!("@bob:x");
        let mut m = Messages {
            complete_from: 0,
            all: VecDeque::new(),
            by_sender: HashMap::new(),
        };
        for pos in 1..=(MAX_MESSAGES as i64 + 1) {
            m.push(if pos % 2 == 0 { alice } else { bob }, pos);
        }
        assert_eq!(m.complete_from, DROP_MESSAGES as i64);
        assert_eq!(m.all.len(), MAX_MESSAGES + 1 - DROP_MESSAGES);
        assert!(
            m.by_sender
                .values()
                .all(|l| l.front().is_some_and(|&p| p > m.complete_from))
        );
    }

    #[test]
    fn counts_in_a_range_of_sorted_positions() {
        let list: VecDeque<i64> = [3, 5, 8, 13].into();
        assert_eq!(count_in(&list, 0, 100), 4);
        assert_eq!(count_in(&list, 3, 8), 2);
        assert_eq!(count_in(&list, 13, 20), 0);
        assert_eq!(count_in(&list, 4, 4), 0);
    }
}
