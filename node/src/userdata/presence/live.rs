//! [`LiveMap`]: what this run knows of each user's presence, in memory: the stored state, the
//! last activity, whether the user is announced as currently active, and their `/sync` requests
//! in progress. Pure bookkeeping with explicit times (unix ms): it decides what to store on a
//! `/sync`, a `PUT` or a timeout, and [`super::Presence`] stores it.
//!
//! Activity is a `/sync` with `set_presence=online` (at its start) or a presence `PUT`. An
//! `online` user inactive for the idle timeout stays `online` but is no longer currently active.
//! A user who is not `offline`, has no counting `/sync` in progress (`set_presence` `online` or
//! `unavailable`) and has neither ended one nor been active for the offline timeout goes
//! `offline`.
//!
//! A write that could not be stored (the database failed) leaves the user known, their state as
//! decided, marked not stored ([`LiveMap::store_failed`]): the next sweep ([`LiveMap::due`]) or
//! the user's next `/sync` decides the write again, from what is known then, so the table comes
//! to hold it and the user keeps timing out (a forgotten user who never came back would stay
//! `online` for everyone).

use std::collections::HashMap;
use std::time::Duration;

use ruma::presence::PresenceState;
use ruma::{OwnedUserId, UserId};

/// One user's presence as this run knows it.
#[derive(Debug, Clone, PartialEq)]
struct Live {
    /// The stored state; `None`: never set.
    state: Option<PresenceState>,
    /// When the user was last active.
    last_active_ms: i64,
    /// What `currently_active` says: `online` and active since the last idle timeout.
    active: bool,
    /// The user's `/sync` requests in progress that count for presence.
    syncing: u32,
    /// When the user's last counting `/sync` ended (or, for a user restored at start, the start).
    last_sync_ms: i64,
    /// The last write of the user's presence failed: what is stored may not be `state`.
    unstored: bool,
}

/// A presence to store (the status message is the caller's business).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Write {
    pub(super) state: PresenceState,
    pub(super) last_active_ms: i64,
}

/// What readers of a user's presence see besides the stored row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct View {
    pub(super) last_active_ms: i64,
    pub(super) currently_active: bool,
}

/// Every user's presence this run has seen.
#[derive(Debug, Default)]
pub(super) struct LiveMap {
    users: HashMap<OwnedUserId, Live>,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn is_online(state: &PresenceState) -> bool {
    *state == PresenceState::Online
}

impl LiveMap {
    /// Whether `user` is known.
    pub(super) fn knows(&self, user: &UserId) -> bool {
        self.users.contains_key(user)
    }

    /// Learns `user`'s stored presence (read from the store), unless known meanwhile. The user
    /// counts as last synced at `since_ms`.
    pub(super) fn learn(
        &mut self,
        user: &UserId,
        state: Option<PresenceState>,
        last_active_ms: i64,
        active: bool,
        since_ms: i64,
    ) {
        self.users.entry(user.to_owned()).or_insert_with(|| Live {
            active: active && state.as_ref().is_some_and(is_online),
            state,
            last_active_ms,
            syncing: 0,
            last_sync_ms: since_ms,
            unstored: false,
        });
    }

    /// A write of `user`'s presence could not be stored: it is decided again, from what is
    /// known of the user then, by the next sweep or `/sync` (see the module docs).
    pub(super) fn store_failed(&mut self, user: &UserId) {
        if let Some(live) = self.users.get_mut(user) {
            live.unstored = true;
        }
    }

    /// A `/sync` asking for `requested` starts at `now` (the user must be known). Returns
    /// whether it counts as syncing (then it must end with [`Self::sync_ended`]), and whether
    /// something is to be stored ([`Self::sync_write`]).
    pub(super) fn sync_started(
        &mut self,
        user: &UserId,
        requested: &PresenceState,
        now: i64,
    ) -> (bool, bool) {
        let Some(live) = self.users.get_mut(user) else {
            return (false, false);
        };
        let counts = *requested != PresenceState::Offline;
        if counts {
            live.syncing += 1;
        }
        if is_online(requested) {
            live.last_active_ms = live.last_active_ms.max(now);
        }
        (counts, Self::wants(live, requested))
    }

    /// Whether a sync asking for `requested` changes what is stored: another state, an
    /// `online` user becoming active again, or a state whose write failed.
    fn wants(live: &Live, requested: &PresenceState) -> bool {
        live.unstored
            || live.state.as_ref() != Some(requested)
            || (is_online(requested) && !live.active)
    }

    /// What a `/sync` asking for `requested` stores, if it still changes anything; marks it
    /// stored.
    pub(super) fn sync_write(&mut self, user: &UserId, requested: &PresenceState) -> Option<Write> {
        let live = self.users.get_mut(user)?;
        if !Self::wants(live, requested) {
            return None;
        }
        live.state = Some(requested.clone());
        live.active = is_online(requested);
        live.unstored = false;
        Some(Write {
            state: requested.clone(),
            last_active_ms: live.last_active_ms,
        })
    }

    /// A counting `/sync` of `user` ended at `now`.
    pub(super) fn sync_ended(&mut self, user: &UserId, now: i64) {
        if let Some(live) = self.users.get_mut(user) {
            live.syncing = live.syncing.saturating_sub(1);
            live.last_sync_ms = live.last_sync_ms.max(now);
        }
    }

    /// `user` sets `state` at `now` (an explicit `PUT`, which counts as activity).
    pub(super) fn set(&mut self, user: &UserId, state: &PresenceState, now: i64) -> Write {
        let live = self.users.entry(user.to_owned()).or_insert(Live {
            state: None,
            last_active_ms: now,
            active: false,
            syncing: 0,
            last_sync_ms: 0,
            unstored: false,
        });
        live.state = Some(state.clone());
        live.last_active_ms = live.last_active_ms.max(now);
        live.active = is_online(state);
        live.unstored = false;
        Write {
            state: state.clone(),
            last_active_ms: live.last_active_ms,
        }
    }

    /// The writes due at `now`, already marked stored: the timeouts (an idle `online` user,
    /// stored again as `online`, no longer currently active, or a user going `offline`) and the
    /// presence of the users whose last write failed ([`Self::store_failed`]).
    pub(super) fn due(
        &mut self,
        idle: Duration,
        offline: Duration,
        now: i64,
    ) -> Vec<(OwnedUserId, Write)> {
        let (idle, offline) = (ms(idle), ms(offline));
        let mut out = Vec::new();
        for (user, live) in &mut self.users {
            let Some(state) = &live.state else {
                continue;
            };
            let last_seen = live.last_sync_ms.max(live.last_active_ms);
            let goes_offline = *state != PresenceState::Offline
                && live.syncing == 0
                && now.saturating_sub(last_seen) >= offline;
            let goes_idle =
                is_online(state) && live.active && now.saturating_sub(live.last_active_ms) >= idle;
            if goes_offline {
                live.state = Some(PresenceState::Offline);
            } else if !goes_idle && !live.unstored {
                continue;
            }
            if goes_offline || goes_idle {
                live.active = false;
            }
            live.unstored = false;
            out.push((
                user.clone(),
                Write {
                    state: live.state.clone().unwrap_or(PresenceState::Offline),
                    last_active_ms: live.last_active_ms,
                },
            ));
        }
        out
    }

    /// What readers see of `user` besides the stored row, if known.
    /// The users with a counting `/sync` in progress here, with when they were last active
    /// (what the other nodes of a cluster hear of, `Presence::announce`).
    pub(super) fn syncing_users(&self) -> Vec<(OwnedUserId, i64)> {
        self.users
            .iter()
            .filter(|(_, live)| live.syncing > 0)
            .map(|(user, live)| (user.clone(), live.last_active_ms))
            .collect()
    }

    /// Another node has `user` syncing at `at_ms`, last active at `last_active_ms`: the user
    /// does not time out here while it does (a user unknown here is not learnt).
    pub(super) fn synced_elsewhere(&mut self, user: &UserId, last_active_ms: i64, at_ms: i64) {
        if let Some(live) = self.users.get_mut(user) {
            live.last_sync_ms = live.last_sync_ms.max(at_ms);
            live.last_active_ms = live.last_active_ms.max(last_active_ms);
        }
    }

    /// Another node stored `user`'s presence: this node decides from it from now on (a user
    /// unknown here is not learnt).
    pub(super) fn stored_elsewhere(&mut self, user: &UserId, write: &Write, active: bool) {
        if let Some(live) = self.users.get_mut(user) {
            live.state = Some(write.state.clone());
            live.last_active_ms = live.last_active_ms.max(write.last_active_ms);
            live.active = active && is_online(&write.state);
            // What is stored is that write, which this node now knows.
            live.unstored = false;
        }
    }

    /// Whether `user` is announced as currently active (with a write being stored).
    pub(super) fn is_active(&self, user: &UserId) -> bool {
        self.users.get(user).is_some_and(|l| l.active)
    }

    pub(super) fn view(&self, user: &UserId) -> Option<View> {
        self.users.get(user).map(|live| View {
            last_active_ms: live.last_active_ms,
            currently_active: live.active && live.state.as_ref().is_some_and(is_online),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(300);
    const OFFLINE: Duration = Duration::from_secs(30);
    const S: i64 = 1000;

    fn alice() -> OwnedUserId {
        OwnedUserId::try_from("@alice:example.com").unwrap()
    }

    /// A sync of alice asking for `requested` at `now` that stores what it wants; its counting
    /// and whether it stored something.
    fn sync(map: &mut LiveMap, requested: PresenceState, now: i64) -> (bool, Option<Write>) {
        let (counts, wants) = map.sync_started(&alice(), &requested, now);
        let write = map.sync_write(&alice(), &requested);
        assert_eq!(wants, write.is_some());
        (counts, write)
    }

    fn known_alice(now: i64) -> LiveMap {
        let mut map = LiveMap::default();
        map.learn(&alice(), None, 0, false, now);
        map
    }

    #[test]
    fn syncing_online_stores_once_and_then_only_refreshes_activity() {
        let mut map = known_alice(0);
        let (counts, write) = sync(&mut map, PresenceState::Online, 10 * S);
        assert!(counts);
        assert_eq!(
            write,
            Some(Write {
                state: PresenceState::Online,
                last_active_ms: 10 * S
            })
        );
        map.sync_ended(&alice(), 11 * S);
        assert_eq!(sync(&mut map, PresenceState::Online, 12 * S), (true, None));
        let view = map.view(&alice()).unwrap();
        assert_eq!((view.last_active_ms, view.currently_active), (12 * S, true));
    }

    #[test]
    fn an_idle_user_stays_online_but_not_currently_active_until_active_again() {
        let mut map = known_alice(0);
        sync(&mut map, PresenceState::Online, 0);
        assert!(map.due(IDLE, OFFLINE, 299 * S).is_empty(), "not idle yet");
        let due = map.due(IDLE, OFFLINE, 300 * S);
        assert_eq!(
            due,
            [(
                alice(),
                Write {
                    state: PresenceState::Online,
                    last_active_ms: 0
                }
            )]
        );
        assert!(!map.view(&alice()).unwrap().currently_active);
        assert!(map.due(IDLE, OFFLINE, 400 * S).is_empty(), "announced once");
        // The next sync (same state) is stored: the user is active again.
        let (_, write) = sync(&mut map, PresenceState::Online, 401 * S);
        assert_eq!(write.map(|w| w.last_active_ms), Some(401 * S));
        assert!(map.view(&alice()).unwrap().currently_active);
    }

    #[test]
    fn a_user_syncing_on_another_node_does_not_go_offline_here() {
        let mut map = known_alice(0);
        sync(&mut map, PresenceState::Online, 0);
        map.sync_ended(&alice(), 0);
        assert!(map.syncing_users().is_empty());
        // Another node announces alice syncing there every few seconds.
        for at in [20 * S, 40 * S, 60 * S] {
            map.synced_elsewhere(&alice(), at, at);
            assert!(map.due(IDLE, OFFLINE, at + 29 * S).is_empty(), "at {at}");
        }
        let due = map.due(IDLE, OFFLINE, 90 * S);
        assert_eq!(due.len(), 1, "offline once the announcements stop");
        assert_eq!(due[0].1.state, PresenceState::Offline);
        // What another node stores is what this one decides from.
        let write = Write {
            state: PresenceState::Online,
            last_active_ms: 95 * S,
        };
        map.stored_elsewhere(&alice(), &write, true);
        let (_, write) = sync(&mut map, PresenceState::Online, 96 * S);
        assert_eq!(write, None, "online already");
        // A user this node does not know is not learnt.
        let bob = OwnedUserId::try_from("@bob:example.com").unwrap();
        map.synced_elsewhere(&bob, 0, 0);
        assert!(!map.knows(&bob));
    }

    #[test]
    fn offline_comes_after_the_timeout_from_the_end_of_the_last_sync() {
        let mut map = known_alice(0);
        sync(&mut map, PresenceState::Online, 0);
        // A long-poll in progress keeps the user from going offline.
        assert!(map.due(IDLE, OFFLINE, 60 * S).is_empty());
        map.sync_ended(&alice(), 60 * S);
        assert!(map.due(IDLE, OFFLINE, 89 * S).is_empty());
        let due = map.due(IDLE, OFFLINE, 90 * S);
        assert_eq!(
            due,
            [(
                alice(),
                Write {
                    state: PresenceState::Offline,
                    last_active_ms: 0
                }
            )]
        );
        assert!(map.due(IDLE, OFFLINE, 900 * S).is_empty(), "once");
        // Syncing again brings the user back online.
        let (_, write) = sync(&mut map, PresenceState::Online, 901 * S);
        assert_eq!(write.map(|w| w.state), Some(PresenceState::Online));
    }

    #[test]
    fn unavailable_syncs_count_but_offline_syncs_do_not() {
        let mut map = known_alice(0);
        let (counts, write) = sync(&mut map, PresenceState::Unavailable, 0);
        assert!(counts);
        assert_eq!(write.map(|w| w.state), Some(PresenceState::Unavailable));
        assert!(map.due(IDLE, OFFLINE, 1000 * S).is_empty(), "in a sync");
        map.sync_ended(&alice(), 1000 * S);
        assert_eq!(map.due(IDLE, OFFLINE, 1030 * S).len(), 1);

        let mut map = known_alice(0);
        sync(&mut map, PresenceState::Online, 0);
        map.sync_ended(&alice(), 0);
        let (counts, write) = sync(&mut map, PresenceState::Offline, 10 * S);
        assert!(!counts);
        assert_eq!(write.map(|w| w.state), Some(PresenceState::Offline));
        map.sync_ended(&alice(), 10 * S); // not counted: nothing to end, harmless
        assert!(
            map.due(IDLE, OFFLINE, 1000 * S).is_empty(),
            "already offline"
        );
    }

    #[test]
    fn an_explicit_set_is_activity_and_times_out_like_a_sync() {
        let mut map = LiveMap::default();
        let write = map.set(&alice(), &PresenceState::Online, 5 * S);
        assert_eq!(write.last_active_ms, 5 * S);
        assert!(map.view(&alice()).unwrap().currently_active);
        assert!(map.due(IDLE, OFFLINE, 34 * S).is_empty());
        assert_eq!(
            map.due(IDLE, OFFLINE, 35 * S)[0].1.state,
            PresenceState::Offline
        );
        // An unavailable user is never currently active.
        map.set(&alice(), &PresenceState::Unavailable, 40 * S);
        assert!(!map.view(&alice()).unwrap().currently_active);
    }

    #[test]
    fn a_write_that_failed_is_decided_again_by_the_next_sweep_or_sync() {
        let mut map = known_alice(0);
        sync(&mut map, PresenceState::Online, 0);
        map.sync_ended(&alice(), 0);
        let offline = Write {
            state: PresenceState::Offline,
            last_active_ms: 0,
        };
        assert_eq!(map.due(IDLE, OFFLINE, 30 * S), [(alice(), offline.clone())]);
        // Its store failed: the user stays known and the next sweep writes it again, once.
        map.store_failed(&alice());
        assert!(map.knows(&alice()));
        assert_eq!(map.due(IDLE, OFFLINE, 35 * S), [(alice(), offline)]);
        assert!(map.due(IDLE, OFFLINE, 40 * S).is_empty(), "stored by then");
        // An idle write that failed keeps the user online, not currently active.
        let mut map = known_alice(0);
        sync(&mut map, PresenceState::Online, 0);
        assert_eq!(map.due(IDLE, OFFLINE, 300 * S).len(), 1);
        map.store_failed(&alice());
        let due = map.due(IDLE, OFFLINE, 305 * S);
        assert_eq!(due[0].1.state, PresenceState::Online);
        assert!(!map.view(&alice()).unwrap().currently_active);
        // A sync asking for the state whose write failed writes it again itself.
        map.store_failed(&alice());
        map.set(&alice(), &PresenceState::Unavailable, 310 * S);
        map.store_failed(&alice());
        let (_, write) = sync(&mut map, PresenceState::Unavailable, 311 * S);
        assert_eq!(write.map(|w| w.state), Some(PresenceState::Unavailable));
        assert_eq!(sync(&mut map, PresenceState::Unavailable, 312 * S).1, None);
    }

    #[test]
    fn users_restored_at_start_get_one_offline_timeout_to_come_back() {
        let mut map = LiveMap::default();
        map.learn(&alice(), Some(PresenceState::Online), 0, true, 100 * S);
        assert!(map.due(IDLE, OFFLINE, 129 * S).is_empty());
        assert_eq!(
            map.due(IDLE, OFFLINE, 130 * S)[0].1.state,
            PresenceState::Offline
        );
        // Learning again does not override what is known.
        map.learn(&alice(), Some(PresenceState::Online), 0, true, 500 * S);
        assert_eq!(map.view(&alice()).map(|v| v.currently_active), Some(false));
    }
}
