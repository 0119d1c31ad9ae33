//! [`Typing`]: who is typing in which room, in memory only, each until the timeout they gave
//! (at most [`MAX_TIMEOUT`]). Every change (someone starts, stops, or times out) bumps one
//! global serial and records it as the room's last change, so that `/sync` can tell which
//! rooms changed since the serial it last saw; the room's joined members are woken.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ruma::events::AnySyncEphemeralRoomEvent;
use ruma::events::typing::TypingEventContent;
use ruma::serde::Raw;
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use std::time::Instant;

use super::content_event;
use crate::clock::Clock;
use crate::store::StoreError;
use crate::stream::StreamWriter;
use crate::sync::lock;

/// The longest a typing notification lasts without being renewed.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(120);

/// Typing notifications. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Typing {
    state: Arc<Mutex<State>>,
    stream: StreamWriter,
    clock: Clock,
}

#[derive(Debug, Default)]
struct State {
    serial: u64,
    rooms: HashMap<OwnedRoomId, RoomTyping>,
}

#[derive(Debug, Default)]
struct RoomTyping {
    /// The serial of the room's last change.
    changed: u64,
    /// Who is typing, until when.
    users: HashMap<OwnedUserId, Instant>,
}

impl State {
    fn bump(&mut self, room: &RoomId) {
        self.serial += 1;
        let serial = self.serial;
        self.rooms.entry(room.to_owned()).or_default().changed = serial;
    }
}

impl Typing {
    /// Typing state starting with a serial of the current time in microseconds: serials keep
    /// growing across restarts (one change per microsecond would be needed to catch up), so a
    /// `/sync` token from before a restart sees every room's typing as changed, never as old.
    pub(super) fn new(stream: StreamWriter, clock: Clock) -> Self {
        let start = u64::try_from(clock.unix_ms())
            .unwrap_or(0)
            .saturating_mul(1000);
        Self {
            state: Arc::new(Mutex::new(State {
                serial: start,
                rooms: HashMap::new(),
            })),
            stream,
            clock,
        }
    }

    /// The current serial.
    pub fn serial(&self) -> u64 {
        lock(&self.state).serial
    }

    /// `user` starts typing in `room` for `timeout` (`Some`), or stops (`None`). When that is a
    /// change, `members` (the room's joined members) are woken; a start also schedules its end.
    pub fn set(
        &self,
        room: &RoomId,
        user: &UserId,
        timeout: Option<Duration>,
        members: Vec<OwnedUserId>,
    ) {
        let changed = {
            let mut state = lock(&self.state);
            let users = &mut state.rooms.entry(room.to_owned()).or_default().users;
            let changed = match timeout {
                Some(timeout) => {
                    let until = self.clock.now() + timeout.min(MAX_TIMEOUT);
                    let was_typing = users.insert(user.to_owned(), until).is_some();
                    self.schedule_end(room, user, until, members.clone());
                    !was_typing
                }
                None => users.remove(user).is_some(),
            };
            if changed {
                state.bump(room);
            }
            changed
        };
        if changed {
            self.stream.notifier().wake_all_for(&members);
        }
    }

    /// Ends `user`'s typing at `until` unless it was renewed or stopped by then.
    fn schedule_end(
        &self,
        room: &RoomId,
        user: &UserId,
        until: Instant,
        members: Vec<OwnedUserId>,
    ) {
        let this = self.clone();
        let (room, user) = (room.to_owned(), user.to_owned());
        tokio::spawn(async move {
            this.clock.sleep_until(until).await;
            let ended = {
                let mut state = lock(&this.state);
                let users = state.rooms.get_mut(&room).map(|r| &mut r.users);
                let expired = users.is_some_and(|users| match users.get(&user) {
                    Some(end) if *end <= this.clock.now() => users.remove(&user).is_some(),
                    _ => false,
                });
                if expired {
                    state.bump(&room);
                }
                expired
            };
            if ended {
                this.stream.notifier().wake_all_for(&members);
            }
        });
    }

    /// Who is typing in `room` now.
    pub fn typing_users(&self, room: &RoomId) -> Vec<OwnedUserId> {
        self.snapshot(room).1
    }

    /// The room's last change and who is typing now, sorted.
    fn snapshot(&self, room: &RoomId) -> (u64, Vec<OwnedUserId>) {
        let state = lock(&self.state);
        let Some(typing) = state.rooms.get(room) else {
            return (0, Vec::new());
        };
        let now = self.clock.now();
        let mut users: Vec<_> = typing
            .users
            .iter()
            .filter(|(_, until)| **until > now)
            .map(|(u, _)| u.clone())
            .collect();
        users.sort();
        (typing.changed, users)
    }

    /// The `m.typing` event for `room`: on an initial sync (`since` `None`) when someone is
    /// typing, else when the room changed after serial `since`.
    pub(super) fn event(
        &self,
        room: &RoomId,
        since: Option<u64>,
    ) -> Result<Option<Raw<AnySyncEphemeralRoomEvent>>, StoreError> {
        let (changed, users) = self.snapshot(room);
        let report = match since {
            None => !users.is_empty(),
            Some(since) => changed > since,
        };
        if !report {
            return Ok(None);
        }
        content_event("m.typing", &TypingEventContent::new(users)).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use ruma::{room_id, user_id};

    use super::super::test_support::fixture;
    use super::*;

    #[tokio::test]
    async fn changes_bump_the_serial_and_timeouts_end_typing() {
        let f = fixture().await;
        let t = f.data.typing();
        let room = room_id!("!r:example.com");
        let alice = user_id!("@alice:example.com");
        let s0 = t.serial();
        assert!(t.event(room, None).unwrap().is_none());

        // Alice is the room's only member: she is woken by every change.
        let members = vec![alice.to_owned()];
        let mut woken = f.stream.notifier().subscribe(alice);
        t.set(room, alice, Some(Duration::from_secs(20)), members.clone());
        let s1 = t.serial();
        assert!(s1 > s0);
        assert!(woken.has_changed().unwrap(), "a start wakes the members");
        woken.mark_unchanged();
        assert_eq!(t.typing_users(room), [alice]);
        assert!(t.event(room, None).unwrap().is_some());
        assert!(t.event(room, Some(s0)).unwrap().is_some());
        assert!(t.event(room, Some(s1)).unwrap().is_none());
        // Renewing (for 20 s from 10 s on) is no change.
        f.clock.advance(Duration::from_secs(10)).await;
        t.set(room, alice, Some(Duration::from_secs(20)), members.clone());
        assert_eq!(t.serial(), s1);
        assert!(!woken.has_changed().unwrap());

        // The first timeout passes: renewed, still typing. At the renewed one, typing ends.
        f.clock.advance(Duration::from_secs(19)).await;
        assert_eq!(t.typing_users(room), [alice]);
        f.clock.advance(Duration::from_secs(1)).await;
        assert!(t.typing_users(room).is_empty());
        // The end is a change, and wakes the members.
        tokio::time::timeout(Duration::from_secs(5), woken.changed())
            .await
            .expect("the timeout wakes the members")
            .unwrap();
        let s2 = t.serial();
        assert!(s2 > s1, "the timeout is a change");
        let event = t.event(room, Some(s1)).unwrap().unwrap();
        let content: TypingEventContent = event.get_field("content").unwrap().unwrap();
        assert!(content.user_ids.is_empty());

        t.set(room, alice, Some(Duration::from_secs(60)), vec![]);
        t.set(room, alice, None, vec![]);
        assert!(t.typing_users(room).is_empty());
        assert!(t.serial() > s2 + 1);
        t.set(room, alice, None, vec![]);
        assert_eq!(t.serial(), s2 + 2, "stopping twice is one change");
    }
}
