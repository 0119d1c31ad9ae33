//! [`RoomState`]: what the node holds in memory for a room it serves: its version rules, its
//! current state by `(type, state_key)`, the members by membership, the forward extremity
//! (the last event) and the transactions in flight. Guarded by the room's lock; changed only by
//! [`RoomState::apply`] after an event passed the auth rules.

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
    /// The members joined or invited (see [`RoomState::audience`]), kept with `members`.
    audience: Arc<[OwnedUserId]>,
    last: Option<Arc<Pdu>>,
    /// The cache of the room's client transactions.
    pub(super) txns: TxnWindow,
    /// (sender, type) of non-state events that passed the auth rules against the current
    /// state: the same event passes again until the state changes.
    authorized: HashSet<(OwnedUserId, TimelineEventType)>,
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
            room.apply_state(Arc::new(pdu));
        }
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
        let Some(state_key) = pdu.state_key() else {
            return;
        };
        self.authorized.clear();
        if *pdu.kind() == TimelineEventType::RoomMember
            && let (Ok(user), Some(membership)) = (UserId::parse(state_key), membership_of(&pdu))
        {
            self.members.insert(user, membership);
            self.audience = self
                .members
                .iter()
                .filter(|(_, m)| matches!(m, MembershipState::Join | MembershipState::Invite))
                .map(|(u, _)| u.clone())
                .collect();
        }
        let key = (
            StateEventType::from(pdu.kind().to_string()),
            state_key.to_owned(),
        );
        self.by_id.insert(pdu.event_id.clone(), Arc::clone(&pdu));
        if let Some(old) = self.state.insert(key, pdu) {
            self.by_id.remove(&old.event_id);
        }
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

    /// Users joined or invited: who hears about a new event.
    pub fn audience(&self) -> Arc<[OwnedUserId]> {
        Arc::clone(&self.audience)
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
