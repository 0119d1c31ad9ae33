//! [`Typing`]: who is typing in which room, in memory only, each until the timeout they gave
//! (at most [`MAX_TIMEOUT`]). Every change (someone starts, stops, or times out) bumps one
//! global serial and records it as the room's last change, so that `/sync` can tell which
//! rooms changed since the serial it last saw; the room's joined members are woken.
//!
//! In a cluster each node holds its own typing state; a change made through one node is
//! announced to the others (`cluster::typing`, NATS), which apply it to theirs, each ending it
//! at its own timer.
//!
//! Timeouts are one deadline queue and one task ([`Typing::run_timers`], owned by the node),
//! not a task per request: a start queues its deadline (a renewal only when it comes sooner), and
//! the task ends typing whose deadline passed, or queues it again at its renewed deadline.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ruma::events::AnySyncEphemeralRoomEvent;
use ruma::events::typing::TypingEventContent;
use ruma::serde::Raw;
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use std::time::Instant;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::content_event;
use crate::clock::Clock;
use crate::locks::lock;
use crate::store::StoreError;
use crate::stream::StreamWriter;

/// The longest a typing notification lasts without being renewed.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(120);

/// Typing notifications. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Typing {
    state: Arc<Mutex<State>>,
    stream: StreamWriter,
    /// Wakes the timer task when a deadline sooner than all others was queued.
    sooner: Arc<Notify>,
    clock: Clock,
    /// Poked on every change (application services' queues watch it).
    changes: Arc<tokio::sync::watch::Sender<()>>,
    /// In a cluster: where this node's own changes go, for the other nodes
    /// ([`Typing::announce`]).
    outbound: Arc<std::sync::OnceLock<tokio::sync::mpsc::Sender<TypingNotice>>>,
}

/// A typing change made through this node, as the other nodes of a cluster apply it
/// (`cluster::typing` carries it over NATS).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TypingNotice {
    pub room: OwnedRoomId,
    pub user: OwnedUserId,
    /// `None`: the user stopped typing.
    pub timeout_ms: Option<u64>,
    /// The room's joined members, to wake.
    pub members: Vec<OwnedUserId>,
}

#[derive(Debug, Default)]
struct State {
    serial: u64,
    rooms: HashMap<OwnedRoomId, RoomTyping>,
    /// When to look at whose typing, soonest first. An entry may be stale (the user stopped or
    /// renewed): the timer checks `users` when it is due.
    deadlines: BinaryHeap<Reverse<(Instant, OwnedRoomId, OwnedUserId)>>,
}

#[derive(Debug, Default)]
struct RoomTyping {
    /// The serial of the room's last change.
    changed: u64,
    /// Who is typing, until when.
    users: HashMap<OwnedUserId, Instant>,
    /// The room's joined members as the last change named them: woken when typing times out.
    members: Vec<OwnedUserId>,
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
                deadlines: BinaryHeap::new(),
            })),
            stream,
            sooner: Arc::new(Notify::new()),
            clock,
            changes: Arc::new(tokio::sync::watch::Sender::new(())),
            outbound: Arc::new(std::sync::OnceLock::new()),
        }
    }

    /// From now on, every change made through [`Typing::set`] is also handed to the returned
    /// receiver (once per node: the cluster's link to the other nodes), up to
    /// 1,024 (`ANNOUNCE_QUEUE`) waiting; more are dropped.
    pub fn announce(&self) -> Option<tokio::sync::mpsc::Receiver<TypingNotice>> {
        let (tx, rx) = tokio::sync::mpsc::channel(super::ANNOUNCE_QUEUE);
        self.outbound.set(tx).ok().map(|()| rx)
    }

    /// Applies a change another node announced (not announced again).
    pub fn apply_remote(&self, notice: TypingNotice) {
        let timeout = notice.timeout_ms.map(Duration::from_millis);
        self.apply(&notice.room, &notice.user, timeout, notice.members);
    }

    /// The current serial.
    pub fn serial(&self) -> u64 {
        lock(&self.state).serial
    }

    /// `user` starts typing in `room` for `timeout` (`Some`), or stops (`None`). When that is a
    /// change, `members` (the room's joined members) are woken; a start also queues its end.
    pub fn set(
        &self,
        room: &RoomId,
        user: &UserId,
        timeout: Option<Duration>,
        members: Vec<OwnedUserId>,
    ) {
        if let Some(outbound) = self.outbound.get() {
            let _ = outbound.try_send(TypingNotice {
                room: room.to_owned(),
                user: user.to_owned(),
                timeout_ms: timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
                members: members.clone(),
            });
        }
        self.apply(room, user, timeout, members);
    }

    /// [`Typing::set`] without the announcement.
    fn apply(
        &self,
        room: &RoomId,
        user: &UserId,
        timeout: Option<Duration>,
        members: Vec<OwnedUserId>,
    ) {
        let changed = {
            let mut state = lock(&self.state);
            let typing = state.rooms.entry(room.to_owned()).or_default();
            let (changed, queue) = match timeout {
                Some(timeout) => {
                    let until = self.clock.now() + timeout.min(MAX_TIMEOUT);
                    let before = typing.users.insert(user.to_owned(), until);
                    // A renewal keeps the queued deadline (due no later than `until`: the timer
                    // queues it again), unless it now ends sooner.
                    let queue = before.is_none_or(|b| until < b).then_some(until);
                    (before.is_none(), queue)
                }
                None => (typing.users.remove(user).is_some(), None),
            };
            typing.members.clone_from(&members);
            if let Some(until) = queue {
                let soonest = state
                    .deadlines
                    .peek()
                    .is_none_or(|Reverse((first, ..))| until < *first);
                state
                    .deadlines
                    .push(Reverse((until, room.to_owned(), user.to_owned())));
                if soonest {
                    self.sooner.notify_one();
                }
            }
            if changed {
                state.bump(room);
            }
            changed
        };
        if changed {
            self.stream.notifier().wake_all_for(&members);
            self.changes.send_replace(());
        }
    }

    /// A receiver woken by every typing change from now on.
    pub fn watch_changes(&self) -> tokio::sync::watch::Receiver<()> {
        self.changes.subscribe()
    }

    /// Ends typing as it times out, until `shutdown`: the node's one typing timer.
    pub async fn run_timers(self, shutdown: CancellationToken) {
        loop {
            let next = lock(&self.state)
                .deadlines
                .peek()
                .map(|Reverse((at, ..))| *at);
            let due = async {
                match next {
                    Some(at) => self.clock.sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.sooner.notified() => continue,
                () = due => {}
            }
            let expired = self.expire(self.clock.now());
            for members in &expired {
                self.stream.notifier().wake_all_for(members);
            }
            if !expired.is_empty() {
                self.changes.send_replace(());
            }
        }
    }

    /// Ends the typing due at `now` (queuing renewed typing again); the members of each room
    /// that changed.
    fn expire(&self, now: Instant) -> Vec<Vec<OwnedUserId>> {
        let mut state = lock(&self.state);
        let mut woken = Vec::new();
        while let Some(Reverse((at, ..))) = state.deadlines.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, room, user))) = state.deadlines.pop() else {
                break;
            };
            let Some(typing) = state.rooms.get_mut(&room) else {
                continue;
            };
            match typing.users.get(&user).copied() {
                Some(until) if until <= now => {
                    typing.users.remove(&user);
                    woken.push(typing.members.clone());
                    state.bump(&room);
                }
                Some(until) => state.deadlines.push(Reverse((until, room, user))),
                None => {}
            }
        }
        woken
    }

    /// The current serial and the rooms whose typing changed after serial `since`, each with
    /// who is typing now (application services' transactions).
    pub fn changed_since(&self, since: u64) -> (u64, Vec<(OwnedRoomId, Vec<OwnedUserId>)>) {
        let state = lock(&self.state);
        let now = self.clock.now();
        let rooms = state
            .rooms
            .iter()
            .filter(|(_, t)| t.changed > since)
            .map(|(room, t)| {
                let mut users: Vec<_> = t
                    .users
                    .iter()
                    .filter(|(_, until)| **until > now)
                    .map(|(u, _)| u.clone())
                    .collect();
                users.sort();
                (room.clone(), users)
            })
            .collect();
        (state.serial, rooms)
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

    /// Waits (at most 5 s) for `rx`'s next wake-up.
    async fn woken(rx: &mut tokio::sync::watch::Receiver<i64>) {
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .expect("woken in time")
            .expect("notifier alive");
    }

    #[tokio::test]
    async fn announcements_nobody_publishes_are_bounded_and_do_not_stop_typing() {
        let f = fixture().await;
        let t = f.data.typing();
        let own = t.announce().expect("the first announce");
        assert!(t.announce().is_none(), "once per node");
        let room = room_id!("!r:example.com");
        let alice = user_id!("@alice:example.com");
        let s0 = t.serial();
        for i in 0..(super::super::ANNOUNCE_QUEUE + 500) {
            let timeout = (i % 2 == 0).then_some(Duration::from_secs(30));
            t.set(room, alice, timeout, vec![alice.to_owned()]);
        }
        // The link never read: the queue holds its bound, the rest were dropped, and every
        // change still applied here.
        assert_eq!(own.len(), super::super::ANNOUNCE_QUEUE);
        assert!(t.serial() > s0 + 1000, "{} {s0}", t.serial());
    }

    #[tokio::test]
    async fn changes_bump_the_serial_and_timeouts_end_typing() {
        let f = fixture().await;
        let t = f.data.typing();
        let shutdown = CancellationToken::new();
        tokio::spawn(t.clone().run_timers(shutdown.clone()));
        let room = room_id!("!r:example.com");
        let alice = user_id!("@alice:example.com");
        let bob = user_id!("@bob:example.com");
        let mut bob_rx = f.stream.notifier().subscribe(bob);
        let members = vec![alice.to_owned(), bob.to_owned()];
        let s0 = t.serial();
        assert!(t.event(room, None).unwrap().is_none());

        t.set(
            room,
            alice,
            Some(Duration::from_millis(200)),
            members.clone(),
        );
        woken(&mut bob_rx).await;
        let s1 = t.serial();
        assert!(s1 > s0);
        assert_eq!(t.typing_users(room), [alice]);
        assert!(t.event(room, None).unwrap().is_some());
        assert!(t.event(room, Some(s0)).unwrap().is_some());
        assert!(t.event(room, Some(s1)).unwrap().is_none());
        // Renewing is no change.
        t.set(
            room,
            alice,
            Some(Duration::from_millis(300)),
            members.clone(),
        );
        assert_eq!(t.serial(), s1);

        // The timeout is a change, and wakes the members.
        f.clock.advance(Duration::from_millis(300)).await;
        woken(&mut bob_rx).await;
        assert!(t.typing_users(room).is_empty());
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
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_thousand_typing_requests_start_no_task_and_all_time_out() {
        let f = fixture().await;
        let t = f.data.typing();
        let shutdown = CancellationToken::new();
        tokio::spawn(t.clone().run_timers(shutdown.clone()));
        let metrics = tokio::runtime::Handle::current().metrics();
        let tasks_before = metrics.num_alive_tasks();
        let room = room_id!("!busy:example.com");
        let watcher = user_id!("@watcher:example.com");
        let mut rx = f.stream.notifier().subscribe(watcher);
        let users: Vec<OwnedUserId> = (0..1000)
            .map(|i| OwnedUserId::try_from(format!("@u{i}:example.com")).unwrap())
            .collect();
        for (i, user) in users.iter().enumerate() {
            // Deadlines in no particular order, between 100 and 400 ms.
            let ms = 100 + (i as u64 * 7919) % 300;
            t.set(
                room,
                user,
                Some(Duration::from_millis(ms)),
                vec![watcher.to_owned()],
            );
        }
        assert_eq!(
            metrics.num_alive_tasks(),
            tasks_before,
            "typing requests spawned tasks"
        );
        assert_eq!(t.typing_users(room).len(), 1000);
        // Every timeout wakes the watcher; all of them end.
        f.clock.advance(Duration::from_millis(400)).await;
        while !t.typing_users(room).is_empty() || !lock(&t.state).deadlines.is_empty() {
            woken(&mut rx).await;
        }
        assert!(metrics.num_alive_tasks() <= tasks_before);
        shutdown.cancel();
    }
}
