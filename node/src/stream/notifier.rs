//! [`Notifier`]: what changed where, and who to wake.
//!
//! Change marks: for each user, the last stream position that concerned them (any change) and
//! the last that changed their global data (account data, to-device, keys); for each room, the
//! last position that added an event and the last that changed its per-room user data. The
//! writer sets them before a position becomes visible, so a reader that finds a mark at or
//! below its `since` knows nothing of that kind changed since, without asking the database.
//! Marks only cover what happened after the *floor*: the head when the node started, raised by
//! [`Notifier::lost`] past positions whose touches this node never learnt (another node's,
//! pruned from `stream_log` before this node read them). For an older `since`, everything
//! counts as changed.
//!
//! Wake-ups: one `watch` channel per user that waits in `/sync`, holding the last position that
//! concerned them; typing changes (not in the stream) poke the channel without a position.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use ruma::{DeviceId, OwnedDeviceId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use tokio::sync::watch;

use super::Touch;
use super::remote::CaughtUp;
use crate::locks::lock;
use crate::maps::update;

#[derive(Debug, Default, Clone, Copy)]
struct UserMarks {
    any: i64,
    global: i64,
}

#[derive(Debug, Default, Clone, Copy)]
struct RoomMarks {
    events: i64,
    extras: i64,
}

#[derive(Debug, Default)]
struct Marks {
    users: HashMap<OwnedUserId, UserMarks>,
    rooms: HashMap<OwnedRoomId, RoomMarks>,
    /// Per user and device: the `since` of the last sync that read the user's global data.
    /// (Nested maps: a lookup by borrowed ids, without allocating a key, on every sync.)
    global_read: HashMap<OwnedUserId, HashMap<OwnedDeviceId, i64>>,
}

/// Change marks and wake-ups.
#[derive(Debug)]
pub struct Notifier {
    /// Marks cover later positions only: the head when the node started, or the end of the
    /// last range of positions whose touches were lost.
    floor: AtomicI64,
    marks: Mutex<Marks>,
    waiting: Mutex<HashMap<OwnedUserId, watch::Sender<i64>>>,
}

impl Notifier {
    pub(crate) fn new(head: i64) -> Self {
        Notifier {
            floor: AtomicI64::new(head),
            marks: Mutex::new(Marks::default()),
            waiting: Mutex::new(HashMap::new()),
        }
    }

    /// The position after which the marks are complete.
    pub fn floor(&self) -> i64 {
        self.floor.load(Ordering::Acquire)
    }

    /// Records that what the positions up to `upto` touched is not all known: a `since` before
    /// `upto` counts everything as changed. Called before `upto` becomes visible.
    fn lost(&self, upto: i64) {
        self.floor.fetch_max(upto, Ordering::AcqRel);
    }

    /// Records what a committed op at `pos` touched.
    pub(crate) fn touch(&self, touch: &Touch, pos: i64) {
        let mut marks = lock(&self.marks);
        let global = touch.room_events.is_none() && touch.room_extras.is_none();
        for user in touch.users.iter() {
            update(&mut marks.users, user, |m| {
                m.any = m.any.max(pos);
                if global {
                    m.global = m.global.max(pos);
                }
            });
        }
        if let Some(room) = &touch.room_events {
            update(&mut marks.rooms, room, |m| m.events = m.events.max(pos));
        }
        if let Some(room) = &touch.room_extras {
            update(&mut marks.rooms, room, |m| m.extras = m.extras.max(pos));
        }
    }

    /// Records what other nodes' positions touched (before they become visible); positions whose
    /// touches were lost raise the floor.
    pub(super) fn touch_remote(&self, caught: &CaughtUp) {
        for t in &caught.touches {
            self.touch(&t.touch, t.pos);
        }
        if let Some(upto) = caught.lost {
            self.lost(upto);
        }
    }

    /// Wakes whom other nodes' positions concern (after they became visible): everyone, when
    /// some positions' touches were lost.
    pub(super) fn wake_remote(&self, caught: &CaughtUp) {
        for t in &caught.touches {
            self.wake(&t.touch.users, t.pos);
        }
        if let Some(upto) = caught.lost {
            self.wake_everyone(upto);
        }
    }

    /// Whether anything concerning `user` may have changed after `since`.
    pub fn user_changed(&self, user: &UserId, since: i64) -> bool {
        since < self.floor()
            || lock(&self.marks)
                .users
                .get(user)
                .is_some_and(|m| m.any > since)
    }

    /// Whether a sync of `device` from `since` must read `user`'s global data: it changed after
    /// `since`, or after the last such read (which may have delivered to-device messages that
    /// this sync, by passing them, acknowledges).
    pub fn global_due(&self, user: &UserId, device: &DeviceId, since: i64) -> bool {
        if since < self.floor() {
            return true;
        }
        let marks = lock(&self.marks);
        let changed = marks.users.get(user).map_or(0, |m| m.global);
        let last_read = marks
            .global_read
            .get(user)
            .and_then(|devices| devices.get(device))
            .copied()
            .unwrap_or(i64::MIN);
        changed > since || changed > last_read
    }

    /// Records that a sync of `device` from `since` read `user`'s global data.
    pub fn global_read(&self, user: &UserId, device: &DeviceId, since: i64) {
        update(&mut lock(&self.marks).global_read, user, |devices| {
            update(devices, device, |read| *read = since);
        });
    }

    /// Whether `room` may have new events, or changed per-room data, after `since`.
    pub fn room_changed(&self, room: &RoomId, since: i64) -> (bool, bool) {
        if since < self.floor() {
            return (true, true);
        }
        let marks = lock(&self.marks);
        let m = marks.rooms.get(room).copied().unwrap_or_default();
        (m.events > since, m.extras > since)
    }

    /// A receiver of the positions that concern `user`.
    pub fn subscribe(&self, user: &UserId) -> watch::Receiver<i64> {
        let mut waiting = lock(&self.waiting);
        match waiting.get(user) {
            Some(sender) => sender.subscribe(),
            None => {
                let sender = watch::Sender::new(0);
                let receiver = sender.subscribe();
                waiting.insert(user.to_owned(), sender);
                receiver
            }
        }
    }

    /// Wakes the waiting requests of `users` for position `pos`.
    pub fn wake(&self, users: &[OwnedUserId], pos: i64) {
        if users.is_empty() {
            return;
        }
        let waiting = lock(&self.waiting);
        for user in users {
            if let Some(sender) = waiting.get(user) {
                raise(sender, pos);
            }
        }
    }

    /// Wakes every waiting request for position `pos` (after [`Notifier::lost`]: anyone may be
    /// concerned).
    fn wake_everyone(&self, pos: i64) {
        for sender in lock(&self.waiting).values() {
            raise(sender, pos);
        }
    }

    /// Wakes the waiting requests of `users` without a stream change (typing notifications).
    pub fn wake_all_for(&self, users: &[OwnedUserId]) {
        let waiting = lock(&self.waiting);
        for user in users {
            if let Some(sender) = waiting.get(user) {
                sender.send_modify(|_| {});
            }
        }
    }
}

/// Wakes one user's requests for `pos`, unless they were woken for it (or later) already.
fn raise(sender: &watch::Sender<i64>, pos: i64) {
    sender.send_if_modified(|last| {
        if *last < pos {
            *last = pos;
            true
        } else {
            false
        }
    });
}

#[cfg(test)]
mod tests {
    use ruma::{room_id, user_id};

    use super::*;

    #[test]
    fn marks_tell_what_changed_after_a_position() {
        let n = Notifier::new(10);
        let alice = user_id!("@alice:x");
        let room = room_id!("!r:x");
        assert!(
            n.user_changed(alice, 5),
            "before the start everything counts as changed"
        );
        assert!(!n.user_changed(alice, 10));
        n.touch(
            &Touch {
                users: vec![alice.to_owned()].into(),
                room_events: Some(room.to_owned()),
                room_extras: None,
            },
            11,
        );
        assert!(n.user_changed(alice, 10));
        assert!(!n.user_changed(alice, 11));
        let phone = ruma::device_id!("PHONE");
        n.global_read(alice, phone, 10);
        assert!(
            !n.global_due(alice, phone, 10),
            "a room event is not global data"
        );
        assert_eq!(n.room_changed(room, 10), (true, false));
        n.touch(&Touch::users(vec![alice.to_owned()]), 12);
        assert!(n.global_due(alice, phone, 11));
        n.global_read(alice, phone, 11);
        assert!(
            n.global_due(alice, phone, 12),
            "the read from 11 delivered 12: 12 acknowledges it"
        );
        n.global_read(alice, phone, 12);
        assert!(!n.global_due(alice, phone, 12));
        assert_eq!(n.room_changed(room, 11), (false, false));

        n.lost(20);
        assert_eq!(n.floor(), 20);
        assert!(n.user_changed(alice, 19), "what 13..=20 touched is unknown");
        assert!(n.global_due(alice, phone, 19));
        assert_eq!(n.room_changed(room, 12), (true, true));
        assert!(!n.user_changed(alice, 20));
        n.lost(15);
        assert_eq!(n.floor(), 20, "the floor never goes down");
    }

    #[test]
    fn everyone_waiting_is_woken_for_a_position_they_have_not_seen() {
        let n = Notifier::new(10);
        let mut alice = n.subscribe(user_id!("@alice:x"));
        let mut bob = n.subscribe(user_id!("@bob:x"));
        n.wake(&[user_id!("@bob:x").to_owned()], 12);
        assert!(bob.has_changed().unwrap());
        assert_eq!(*bob.borrow_and_update(), 12);
        n.wake_everyone(12);
        assert!(alice.has_changed().unwrap());
        assert_eq!(*alice.borrow_and_update(), 12);
        assert!(!bob.has_changed().unwrap(), "bob was woken for 12 already");
    }
}
