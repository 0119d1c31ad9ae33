//! [`RoomState`]: what the node holds in memory for a room it serves: its version rules, its
//! current state by `(type, state_key)`, the members by membership, the forward extremity
//! (the last event) and the transactions in flight. Guarded by the room's lock; changed only by
//! [`RoomState::apply`] after an event passed the auth rules.
//!
//! What a `/sync` room summary needs is kept with the members, so that reading it costs nothing
//! in the room's size: the joined and invited counts ([`RoomState::member_counts`]), and the
//! joined and invited members sorted by user ID ([`RoomState::audience`]), from which
//! [`RoomState::heroes`] takes the first few other than the viewer.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ruma::events::room::member::MembershipState;
use ruma::events::{StateEventType, TimelineEventType};
use ruma::room_version_rules::RoomVersionRules;
use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomVersionId, UInt, UserId};
use serde::Deserialize;

use super::pdu::Pdu;
use super::txns::TxnWindow;

/// A client transaction of a sender.
pub type TxnKey = (OwnedUserId, super::Txn);

/// The in-memory state of one room.
#[derive(Debug)]
pub struct RoomState {
    pub room_id: OwnedRoomId,
    pub version: RoomVersionId,
    pub rules: RoomVersionRules,
    state: HashMap<(StateEventType, String), Arc<Pdu>>,
    by_id: HashMap<OwnedEventId, Arc<Pdu>>,
    members: HashMap<OwnedUserId, MembershipState>,
    /// The members joined or invited (see [`RoomState::audience`]), sorted by user ID, kept with
    /// `members`.
    audience: Arc<[OwnedUserId]>,
    /// How many of `members` are joined and invited, kept with `members`.
    counts: MemberCounts,
    last: Option<Arc<Pdu>>,
    /// The cache of the room's client transactions.
    pub(super) txns: TxnWindow,
    /// (sender, type) of non-state events that passed the auth rules against the current
    /// state: the same event passes again until the state changes.
    authorized: HashSet<(OwnedUserId, TimelineEventType)>,
}

/// The number of joined and of invited members of a room.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MemberCounts {
    pub joined: usize,
    pub invited: usize,
}

impl MemberCounts {
    /// The count `membership` is in, if any.
    fn of(&mut self, membership: &MembershipState) -> Option<&mut usize> {
        match membership {
            MembershipState::Join => Some(&mut self.joined),
            MembershipState::Invite => Some(&mut self.invited),
            _ => None,
        }
    }
}

/// Whether a member with `membership` hears about new events (is in the audience).
fn hears(membership: &MembershipState) -> bool {
    matches!(membership, MembershipState::Join | MembershipState::Invite)
}

#[derive(Deserialize)]
struct MembershipOnly {
    membership: MembershipState,
}

/// The `membership` of an `m.room.member` content.
pub fn membership_of(pdu: &Pdu) -> Option<MembershipState> {
    serde_json::from_str::<MembershipOnly>(pdu.content().get())
        .ok()
        .map(|m| m.membership)
}

impl RoomState {
    /// An empty room, before its create event, with its transaction cache.
    pub fn new(
        room_id: OwnedRoomId,
        version: RoomVersionId,
        rules: RoomVersionRules,
        txns: TxnWindow,
    ) -> Self {
        RoomState {
            room_id,
            version,
            rules,
            state: HashMap::new(),
            by_id: HashMap::new(),
            members: HashMap::new(),
            audience: Arc::from([]),
            counts: MemberCounts::default(),
            last: None,
            txns,
            authorized: HashSet::new(),
        }
    }

    /// A room loaded from the store: its current state events and last event.
    pub fn restore(
        room_id: OwnedRoomId,
        version: RoomVersionId,
        rules: RoomVersionRules,
        state: Vec<Pdu>,
        last: Option<Pdu>,
        txns: TxnWindow,
    ) -> Self {
        let mut room = RoomState::new(room_id, version, rules, txns);
        for pdu in state {
            room.record_state(Arc::new(pdu));
        }
        // Once, rather than at each member event.
        let mut audience: Vec<OwnedUserId> = room
            .members
            .iter()
            .filter(|(_, m)| hears(m))
            .map(|(u, _)| u.clone())
            .collect();
        audience.sort_unstable();
        room.audience = audience.into();
        room.last = last.map(Arc::new);
        room
    }

    /// Records an accepted event.
    pub fn apply(&mut self, pdu: Arc<Pdu>) {
        if pdu.state_key().is_some() {
            self.apply_state(Arc::clone(&pdu));
        }
        self.last = Some(pdu);
    }

    fn apply_state(&mut self, pdu: Arc<Pdu>) {
        if let Some((user, heard)) = self.record_state(pdu) {
            self.update_audience(user, heard);
        }
    }

    /// Records a state event and, for a membership, the member and the counts. Returns the
    /// member whose place in the audience changed, and whether they are in it now (the caller
    /// updates the audience).
    fn record_state(&mut self, pdu: Arc<Pdu>) -> Option<(OwnedUserId, bool)> {
        let state_key = pdu.state_key()?;
        self.authorized.clear();
        let mut audience_change = None;
        if *pdu.kind() == TimelineEventType::RoomMember
            && let (Ok(user), Some(membership)) = (UserId::parse(state_key), membership_of(&pdu))
        {
            let heard = hears(&membership);
            if let Some(count) = self.counts.of(&membership) {
                *count += 1;
            }
            let old = self.members.insert(user.clone(), membership);
            if let Some(count) = old.as_ref().and_then(|m| self.counts.of(m)) {
                *count -= 1;
            }
            if old.as_ref().is_some_and(hears) != heard {
                audience_change = Some((user, heard));
            }
        }
        let key = (
            StateEventType::from(pdu.kind().to_string()),
            state_key.to_owned(),
        );
        self.by_id.insert(pdu.event_id.clone(), Arc::clone(&pdu));
        if let Some(old) = self.state.insert(key, pdu) {
            self.by_id.remove(&old.event_id);
        }
        audience_change
    }

    /// Adds `user` to the sorted audience (`heard`) or removes them: a new list, as readers may
    /// hold the current one.
    fn update_audience(&mut self, user: OwnedUserId, heard: bool) {
        let mut audience = self.audience.to_vec();
        match (audience.binary_search(&user), heard) {
            (Err(at), true) => audience.insert(at, user),
            (Ok(at), false) => {
                audience.remove(at);
            }
            _ => return,
        }
        self.audience = audience.into();
    }

    /// The current state event of `(kind, state_key)`.
    pub fn get(&self, kind: &StateEventType, state_key: &str) -> Option<&Arc<Pdu>> {
        self.state.get(&(kind.clone(), state_key.to_owned()))
    }

    /// A current state event by its ID.
    pub fn by_id(&self, event_id: &ruma::EventId) -> Option<&Arc<Pdu>> {
        self.by_id.get(event_id)
    }

    /// Every current state event.
    pub fn state_events(&self) -> impl Iterator<Item = &Arc<Pdu>> {
        self.state.values()
    }

    /// The membership of `user`, if any.
    pub fn membership(&self, user: &UserId) -> Option<&MembershipState> {
        self.members.get(user)
    }

    /// Users with the given membership.
    pub fn members_with(&self, membership: &MembershipState) -> Vec<OwnedUserId> {
        self.members
            .iter()
            .filter(|(_, m)| *m == membership)
            .map(|(u, _)| u.clone())
            .collect()
    }

    /// Users joined or invited, sorted by user ID: who hears about a new event.
    pub fn audience(&self) -> Arc<[OwnedUserId]> {
        Arc::clone(&self.audience)
    }

    /// The number of joined and of invited members.
    pub fn member_counts(&self) -> MemberCounts {
        self.counts
    }

    /// The first `max` users joined or invited other than `viewer`, by user ID (the heroes of
    /// `viewer`'s room summary): reads `max + 1` of them at most.
    pub fn heroes(&self, viewer: &UserId, max: usize) -> Vec<OwnedUserId> {
        self.audience
            .iter()
            .filter(|u| *u != viewer)
            .take(max)
            .cloned()
            .collect()
    }

    /// The forward extremity and the depth of the next event.
    pub fn extremity(&self) -> (Vec<OwnedEventId>, UInt) {
        match &self.last {
            Some(last) => (
                vec![last.event_id.clone()],
                last.fields.depth.saturating_add(UInt::from(1u32)),
            ),
            None => (Vec::new(), UInt::from(1u32)),
        }
    }

    /// Replaces a current state event by its redacted form (an accepted redaction).
    pub(super) fn replace_redacted(&mut self, redacted: Arc<Pdu>) {
        if self.by_id.contains_key(&redacted.event_id) {
            self.apply_state(redacted);
        }
    }

    /// Whether a non-state event of `kind` from `sender` already passed the auth rules against
    /// the current state.
    pub(super) fn is_authorized(&self, sender: &UserId, kind: &TimelineEventType) -> bool {
        self.authorized.contains(&(sender.to_owned(), kind.clone()))
    }

    /// Remembers that a non-state event of `kind` from `sender` passed the auth rules.
    pub(super) fn remember_authorized(&mut self, sender: &UserId, kind: &TimelineEventType) {
        self.authorized.insert((sender.to_owned(), kind.clone()));
    }
}

#[cfg(test)]
mod tests {
    use ruma::{owned_room_id, user_id};

    use super::*;

    fn room() -> RoomState {
        RoomState::new(
            owned_room_id!("!r:x"),
            RoomVersionId::V11,
            RoomVersionId::V11.rules().unwrap(),
            TxnWindow::new(60_000, i64::MIN),
        )
    }

    /// `user`'s `m.room.member` event with `membership`, the `n`th event of the room.
    fn member(n: u32, user: &str, membership: &str) -> Arc<Pdu> {
        let json = serde_json::json!({
            "room_id": "!r:x",
            "sender": user,
            "origin_server_ts": 0,
            "type": "m.room.member",
            "state_key": user,
            "content": {"membership": membership},
            "depth": n,
        });
        Arc::new(
            Pdu::from_stored(
                format!("$e{n}").try_into().unwrap(),
                i64::from(n),
                &json.to_string(),
                None,
                None,
            )
            .unwrap(),
        )
    }

    /// The summary as it was worked out from the whole member list.
    fn from_members(room: &RoomState, viewer: &UserId) -> (MemberCounts, Vec<OwnedUserId>) {
        let joined = room.members_with(&MembershipState::Join);
        let invited = room.members_with(&MembershipState::Invite);
        let mut heroes: Vec<OwnedUserId> = joined
            .iter()
            .chain(&invited)
            .filter(|u| *u != viewer)
            .cloned()
            .collect();
        heroes.sort();
        heroes.truncate(5);
        let counts = MemberCounts {
            joined: joined.len(),
            invited: invited.len(),
        };
        (counts, heroes)
    }

    /// A member, their new membership, the joined and invited counts after it, and the
    /// heroes then (localparts).
    type Step = (
        &'static str,
        &'static str,
        (usize, usize),
        &'static [&'static str],
    );

    fn names(users: &[OwnedUserId]) -> Vec<&str> {
        users.iter().map(|u| u.localpart()).collect()
    }

    #[test]
    fn member_counts_and_heroes_follow_each_membership_change() {
        let viewer = user_id!("@d:x");
        let mut room = room();
        let steps: &[Step] = &[
            ("@d:x", "join", (1, 0), &[]),
            ("@h:x", "join", (2, 0), &["h"]),
            ("@b:x", "invite", (2, 1), &["b", "h"]),
            ("@g:x", "join", (3, 1), &["b", "g", "h"]),
            ("@a:x", "join", (4, 1), &["a", "b", "g", "h"]),
            ("@f:x", "invite", (4, 2), &["a", "b", "f", "g", "h"]),
            ("@c:x", "join", (5, 2), &["a", "b", "c", "f", "g"]),
            // A change of profile: the same membership again.
            ("@c:x", "join", (5, 2), &["a", "b", "c", "f", "g"]),
            // The invite accepted.
            ("@b:x", "join", (6, 1), &["a", "b", "c", "f", "g"]),
            ("@a:x", "leave", (5, 1), &["b", "c", "f", "g", "h"]),
            ("@f:x", "leave", (5, 0), &["b", "c", "g", "h"]),
            ("@g:x", "ban", (4, 0), &["b", "c", "h"]),
            // Leaving again changes nothing; a knock is not counted.
            ("@a:x", "leave", (4, 0), &["b", "c", "h"]),
            ("@e:x", "knock", (4, 0), &["b", "c", "h"]),
            ("@a:x", "join", (5, 0), &["a", "b", "c", "h"]),
            ("@e:x", "invite", (5, 1), &["a", "b", "c", "e", "h"]),
            ("@f:x", "join", (6, 1), &["a", "b", "c", "e", "f"]),
            // The viewer leaves: never among their own heroes.
            ("@d:x", "leave", (5, 1), &["a", "b", "c", "e", "f"]),
        ];
        for (n, &(user, membership, (joined, invited), heroes)) in (1..).zip(steps) {
            room.apply(member(n, user, membership));
            let what = format!("after {user} {membership}");
            let counts = room.member_counts();
            assert_eq!((counts.joined, counts.invited), (joined, invited), "{what}");
            assert_eq!(names(&room.heroes(viewer, 5)), heroes, "{what}");
            assert_eq!(
                (counts, room.heroes(viewer, 5)),
                from_members(&room, viewer),
                "{what}"
            );
            let mut audience = room.audience().to_vec();
            audience.sort();
            assert_eq!(*room.audience(), audience, "{what}: sorted");
        }

        // A room loaded with the same state has the same summary.
        let state = room.state_events().map(|p| Pdu::clone(p)).collect();
        let restored = RoomState::restore(
            owned_room_id!("!r:x"),
            RoomVersionId::V11,
            RoomVersionId::V11.rules().unwrap(),
            state,
            None,
            TxnWindow::new(60_000, i64::MIN),
        );
        assert_eq!(restored.member_counts(), room.member_counts());
        assert_eq!(restored.audience(), room.audience());
        assert_eq!(
            names(&restored.heroes(user_id!("@a:x"), 5)),
            ["b", "c", "e", "f", "h"]
        );
    }
}
