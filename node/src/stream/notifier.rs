//! [`Notifier`]: what changed where, and who to wake.
//!
//! Change marks: for each user, the last stream position that concerned them (any change) and
//! the last that changed their global data (account data, to-device, keys); for each room, the
//! last position that added an event and the last that changed its per-room user data. The
//! writer sets them before a position becomes visible, so a reader that finds a mark at or
//! below its `since` knows nothing of that kind changed since, without asking the database.
//! Marks only cover what happened since the node started ([`Notifier::start`]): for an older
//! `since`, everything counts as changed.
//!
//! Wake-ups: one `watch` channel per user that waits in `/sync`, holding the last position that
//! concerned them; typing changes (not in the stream) poke the channel without a position.

use std::collections::HashMap;
use std::sync::Mutex;

use ruma::{DeviceId, OwnedDeviceId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use tokio::sync::watch;

use super::Touch;
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
    /// The head when the node started: marks cover later positions only.
    start: i64,
    marks: Mutex<Marks>,
    waiting: Mutex<HashMap<OwnedUserId, watch::Sender<i64>>>,
}

impl Notifier {
    pub(crate) fn new(head: i64) -> Self {
        Notifier {
            start: head,
            marks: Mutex::new(Marks::default()),
            waiting: Mutex::new(HashMap::new()),
        }
    }

    /// The head when the node started.
    pub fn start(&self) -> i64 {
        self.start
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

    /// Whether anything concerning `user` may have changed after `since`.
    pub fn user_changed(&self, user: &UserId, since: i64) -> bool {
        since < self.start
            || lock(&self.marks)
                .users
                .get(user)
                .is_some_and(|m| m.any > since)
    }

    /// Whether a sync of `device` from `since` must read `user`'s global data: it changed after
    /// `since`, or after the last such read (which may have delivered to-device messages that
    /// this sync, by passing them, acknowledges).
    pub fn global_due(&self, user: &UserId, device: &DeviceId, since: i64) -> bool {
        if since < self.start {
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
        if since < self.start {
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
                sender.send_if_modified(|last| {
                    if *last < pos {
                        *last = pos;
                        true
                    } else {
                        false
                    }
                });
            }
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
    }
}
