//! The Matrix room engine: rooms of version 11, their events (hashed,
//! signed, auth-checked with ruma's state-res functions), current state and memberships.
//! Independent of HTTP: the handlers in `matrix/` call it, and so does the bridge to the bus.
//!
//! [`Rooms`] keeps each room it serves in memory ([`state::RoomState`]) behind the room's own
//! lock. Sending an event takes the lock, builds and checks the event ([`build`]), submits it to
//! the stream writer, applies it to the in-memory state and releases the lock; the caller then
//! waits for the commit, so an acknowledged event is durable. Events of one room are submitted
//! in order under its lock, so stream order is the room's topological order.

pub mod build;
pub mod cache;
pub mod create;
pub mod error;
pub use crate::store::pdu;
mod idempotent;
#[cfg(test)]
mod permit_tests;
mod power;
mod redaction;
mod remote;
pub mod signing;
pub mod state;
pub mod txns;

use std::collections::HashMap;
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ruma::events::room::member::MembershipState;
use ruma::events::{StateEventType, TimelineEventType};
use ruma::{
    OwnedEventId, OwnedRoomId, OwnedServerName, OwnedUserId, RoomId, RoomVersionId, UserId,
};
use serde_json::value::RawValue;
use tokio::sync::Mutex as AsyncMutex;

pub use build::NewEvent;
pub use cache::RoomCaches;
pub use error::RoomError;
pub use idempotent::{Txn, TxnScope};
use idempotent::{is_chain_conflict, is_txn_conflict};
pub use pdu::Pdu;
pub use signing::ServerKey;
pub use state::RoomState;
use txns::Lookup;
pub use txns::TxnWindow;

use crate::locks::lock;
use crate::policy::MatrixPermit;
use crate::store::rooms::{AppendEvent, RoomStore};
use crate::stream::{CommitHook, StreamWriter, Touch};

/// How many times a send is built again after another node's event took its place in the room
/// (see [`remote`]) before the conflict is the caller's.
const CHAIN_ATTEMPTS: usize = 16;

/// How often expired client transactions are pruned (while rooms get transactions).
const PRUNE_EVERY_MS: i64 = 1000;

/// How many heroes a room summary names at most (the Client-Server API's "up to 5").
const HEROES: usize = 5;

/// A room and its lock.
type SharedRoom = Arc<AsyncMutex<RoomState>>;

/// A sent event: its ID and stream position.
#[derive(Debug, Clone)]
pub struct Sent {
    pub event_id: OwnedEventId,
    pub stream: i64,
    pub pdu: Arc<Pdu>,
}

/// The room engine. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Rooms {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: RoomStore,
    stream: StreamWriter,
    key: ServerKey,
    server_name: OwnedServerName,
    rooms: Mutex<HashMap<OwnedRoomId, SharedRoom>>,
    caches: RoomCaches,
    /// How long a client transaction is remembered (`matrix.txn_retention_secs`), in ms.
    txn_retention_ms: i64,
    /// When expired transactions were last pruned (unix ms).
    last_prune_ms: AtomicI64,
}

impl Rooms {
    pub fn new(
        store: RoomStore,
        stream: StreamWriter,
        key: ServerKey,
        server_name: OwnedServerName,
        caches: RoomCaches,
        txn_retention: Duration,
    ) -> Self {
        Rooms {
            inner: Arc::new(Inner {
                store,
                stream,
                key,
                server_name,
                rooms: Mutex::new(HashMap::new()),
                caches,
                txn_retention_ms: i64::try_from(txn_retention.as_millis()).unwrap_or(i64::MAX),
                last_prune_ms: AtomicI64::new(0),
            }),
        }
    }

    /// The in-memory memberships and recent events.
    pub fn caches(&self) -> &RoomCaches {
        &self.inner.caches
    }

    pub fn store(&self) -> &RoomStore {
        &self.inner.store
    }

    pub fn server_name(&self) -> &OwnedServerName {
        &self.inner.server_name
    }

    /// The server's signing key.
    pub fn server_key(&self) -> &ServerKey {
        &self.inner.key
    }

    /// The room, loaded from the store on first use.
    async fn room(&self, room_id: &RoomId) -> Result<SharedRoom, RoomError> {
        if let Some(room) = lock(&self.inner.rooms).get(room_id) {
            return Ok(Arc::clone(room));
        }
        let loaded = self
            .inner
            .store
            .load_room(room_id.as_str())
            .await?
            .ok_or_else(|| RoomError::UnknownRoom(room_id.to_owned()))?;
        let version = RoomVersionId::try_from(loaded.version.as_str()).map_err(|source| {
            RoomError::Identifier {
                what: "stored room version",
                source,
            }
        })?;
        let rules = version
            .rules()
            .ok_or_else(|| RoomError::UnsupportedRoomVersion(version.to_string()))?;
        let txns = self.load_txns(room_id).await?;
        let state = RoomState::restore(
            room_id.to_owned(),
            version,
            rules,
            loaded.state,
            loaded.last,
            txns,
        );
        let mut rooms = lock(&self.inner.rooms);
        // Another request may have loaded it meanwhile: keep the first.
        Ok(Arc::clone(
            rooms
                .entry(room_id.to_owned())
                .or_insert_with(|| Arc::new(AsyncMutex::new(state))),
        ))
    }

    /// Forgets the in-memory image of a room (after a failed commit), so that it is reloaded
    /// from the store.
    fn evict(&self, room_id: &RoomId) {
        lock(&self.inner.rooms).remove(room_id);
    }

    /// Sends an event to an existing room, as the enforcement point permitted: `permit` must be
    /// for `sender` in `room_id`, for `matrix:send` (`matrix:state` for a state event; a member
    /// event also `matrix:join` or `matrix:invite`). With `txn` the send is idempotent: a repeated
    /// transaction returns the first event and stores nothing.
    pub async fn send(
        &self,
        permit: &MatrixPermit,
        room_id: &RoomId,
        sender: &UserId,
        event: NewEvent,
        txn: Option<Txn>,
    ) -> Result<Sent, RoomError> {
        let actions: &[&str] = match (&event.state_key, &event.kind) {
            (None, _) => &["matrix:send"],
            (Some(_), TimelineEventType::RoomMember) => {
                &["matrix:state", "matrix:join", "matrix:invite"]
            }
            (Some(_), _) => &["matrix:state"],
        };
        check_permit(permit, actions, sender, Some(room_id))?;
        self.deliver(room_id, sender, event, txn).await
    }

    /// Sends an event without a Matrix permit: for the bridge, delivering a bus message that
    /// the bus's enforcement point already permitted.
    pub(crate) async fn deliver(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        event: NewEvent,
        txn: Option<Txn>,
    ) -> Result<Sent, RoomError> {
        let mut attempt = 1;
        loop {
            match self
                .deliver_once(room_id, sender, event.clone(), txn.clone())
                .await
            {
                // Another node's event was committed on the same predecessor: the room was
                // evicted; build again on its reloaded image.
                Err(e) if is_chain_conflict(&e) => {
                    if attempt == CHAIN_ATTEMPTS {
                        tracing::warn!(room = %room_id, attempt, "room moved on other nodes at every attempt");
                        return Err(RoomError::Busy(room_id.to_owned()));
                    }
                    tracing::debug!(room = %room_id, attempt, "room moved on another node; building again");
                    // A random pause growing with the attempts, so that two nodes racing for
                    // one room stop colliding.
                    let cap_ms = 1u64 << attempt.min(6);
                    let mut bytes = [0u8; 8];
                    let noise =
                        getrandom::fill(&mut bytes).map_or(0, |()| u64::from_le_bytes(bytes));
                    let pause = noise % (cap_ms * 1000);
                    tokio::time::sleep(Duration::from_micros(pause)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// One attempt of [`Rooms::deliver`].
    async fn deliver_once(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        event: NewEvent,
        txn: Option<Txn>,
    ) -> Result<Sent, RoomError> {
        let room = self.room(room_id).await?;
        if txn.is_some() {
            self.prune_txns().await?;
        }
        let mut guard = room.lock().await;
        if let Some(txn) = &txn {
            let key = (sender.to_owned(), txn.clone());
            let mut lookup = guard.txns.lookup(&key, now_ms());
            if lookup == Lookup::Ask {
                // Only the store can tell: asked without holding the room's lock.
                drop(guard);
                if let Some(sent) = self.stored_txn(room_id, sender, txn).await? {
                    return Ok(sent);
                }
                guard = room.lock().await;
                // Sent meanwhile (perhaps not committed yet when the store was asked)?
                lookup = guard.txns.lookup(&key, now_ms());
            }
            if let Lookup::Sent(event_id) = lookup
                && let Some(sent) = self.earlier_txn(event_id, sender, txn).await?
            {
                return Ok(sent);
            }
        }
        let submitted = self.append(&mut guard, sender, event, txn.clone()).await?;
        drop(guard);
        match self.committed(room_id, submitted).await {
            // The store refused a second event of a live transaction (a send racing its retry
            // after the cache had dropped it): answer with the first.
            Err(e) if is_txn_conflict(&e) => match &txn {
                Some(txn) => self.stored_txn(room_id, sender, txn).await?.ok_or(e),
                None => Err(e),
            },
            other => other,
        }
    }

    /// Builds, checks and submits an event under the room's lock, and applies it to the room.
    /// The stream writer updates the caches and change marks at the commit.
    async fn append(
        &self,
        room: &mut RoomState,
        sender: &UserId,
        event: NewEvent,
        txn: Option<Txn>,
    ) -> Result<Submitted, RoomError> {
        let redaction = match (&event.kind, &event.redacts) {
            (TimelineEventType::RoomRedaction, Some(target)) => {
                Some(self.check_redaction(room, sender, target).await?)
            }
            _ => None,
        };
        // A non-state event that passed the auth rules against the current state passes again.
        let cacheable = event.state_key.is_none() && event.kind != TimelineEventType::RoomRedaction;
        let known = cacheable && room.is_authorized(sender, &event.kind);
        let built = build::build(
            room,
            &self.inner.key,
            sender,
            event,
            txn.as_ref().map(|t| (t.device.clone(), t.id.clone())),
            !known,
        )?;
        if cacheable && !known {
            room.remember_authorized(sender, built.pdu.kind());
        }
        let received_ms = now_ms();
        let pdu = built.pdu;
        let membership = (*pdu.kind() == TimelineEventType::RoomMember)
            .then(|| state::membership_of(&pdu))
            .flatten();
        let target = membership
            .as_ref()
            .and(pdu.state_key())
            .and_then(|k| UserId::parse(k).ok());
        let audience = match &target {
            Some(target) if !room.audience().contains(target) => {
                let mut with_target = room.audience().to_vec();
                with_target.push(target.clone());
                with_target.into()
            }
            _ => room.audience(),
        };
        // The redacted target, for the room's state and the caches.
        let redacted = match &redaction {
            Some(r) => Some(
                Pdu::from_stored(
                    r.target.clone(),
                    0,
                    &r.json,
                    None,
                    Some(pdu.to_client::<()>(None, true).into_json()),
                )
                .map_err(|source| RoomError::Json {
                    what: "the redacted event",
                    source,
                })?,
            ),
            None => None,
        };
        let op = AppendEvent {
            event_id: pdu.event_id.to_string(),
            room_id: room.room_id.to_string(),
            kind: pdu.kind().to_string(),
            state_key: pdu.state_key().map(str::to_owned),
            prev_event: pdu.fields.prev_events.first().map(|e| e.to_string()),
            sender: sender.to_string(),
            json: built.json,
            txn: txn
                .as_ref()
                .map(|t| (t.device.clone(), t.scope.as_str(), t.id.clone())),
            txn_expired_before: received_ms - self.inner.txn_retention_ms,
            received_ms,
            membership: membership.as_ref().map(|m| m.to_string()),
            create_version: (*pdu.kind() == TimelineEventType::RoomCreate)
                .then(|| room.version.to_string()),
            redaction: redacted.as_ref().and_then(|r| {
                let because = r.redacted_because.as_ref()?.get().to_owned();
                let json = redaction.as_ref()?.json.clone();
                Some((r.event_id.to_string(), json, because))
            }),
        };
        let touch = Touch {
            users: audience,
            room_events: Some(room.room_id.clone()),
            room_extras: None,
        };
        let caches = self.inner.caches.clone();
        let committed_event = cache::CommittedEvent {
            pdu: Arc::clone(&pdu),
            membership: target.zip(membership.map(|m| m.to_string())),
        };
        let room_id = room.room_id.clone();
        let redacted_for_cache = redacted.clone();
        let hook: CommitHook = Box::new(move |pos| {
            if let Some(r) = redacted_for_cache {
                caches.redacted(&room_id, r);
            }
            caches.committed(committed_event, pos);
        });
        let committed = self
            .inner
            .stream
            .submit_touch(Box::new(op), touch, Some(hook))
            .await?;
        room.apply(Arc::clone(&pdu));
        if let Some(r) = redacted {
            room.replace_redacted(Arc::new(r));
        }
        if let Some(txn) = txn {
            room.txns
                .insert(&(sender.to_owned(), txn), pdu.event_id.clone(), received_ms);
        }
        Ok(Submitted { pdu, committed })
    }

    /// Waits for a submitted event's commit.
    async fn committed(&self, room_id: &RoomId, submitted: Submitted) -> Result<Sent, RoomError> {
        match submitted.committed.wait().await {
            Ok(stream) => Ok(Sent {
                event_id: submitted.pdu.event_id.clone(),
                stream,
                pdu: submitted.pdu,
            }),
            Err(e) => {
                self.evict(room_id);
                Err(e.into())
            }
        }
    }

    /// The membership of `user` in a room (`None` if never a member or the room is unknown).
    pub async fn membership(
        &self,
        room_id: &RoomId,
        user: &UserId,
    ) -> Result<Option<MembershipState>, RoomError> {
        match self.room(room_id).await {
            Ok(room) => Ok(room.lock().await.membership(user).cloned()),
            Err(RoomError::UnknownRoom(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The joined members of a room.
    pub async fn joined_members(&self, room_id: &RoomId) -> Result<Vec<OwnedUserId>, RoomError> {
        let room = self.room(room_id).await?;
        let guard = room.lock().await;
        Ok(guard.members_with(&MembershipState::Join))
    }

    /// The room's joined and invited member counts, and up to five other joined or invited
    /// members (heroes) by user ID, for `viewer`'s sync summary. Kept by the room's state: the
    /// cost does not grow with the room.
    pub async fn summary(
        &self,
        room_id: &RoomId,
        viewer: &UserId,
    ) -> Result<(usize, usize, Vec<OwnedUserId>), RoomError> {
        let room = self.room(room_id).await?;
        let guard = room.lock().await;
        let counts = guard.member_counts();
        let heroes = guard.heroes(viewer, HEROES);
        Ok((counts.joined, counts.invited, heroes))
    }

    /// How far `user` may read a room: `None` for a member (everything), the position of their
    /// leave (or ban) for a former member; refused for anyone else.
    pub async fn reader_bound(
        &self,
        room_id: &RoomId,
        user: &UserId,
    ) -> Result<Option<i64>, RoomError> {
        let room = self.room(room_id).await?;
        let membership = room.lock().await.membership(user).cloned();
        match membership {
            Some(MembershipState::Join) => Ok(None),
            Some(MembershipState::Leave | MembershipState::Ban) => self
                .inner
                .caches
                .membership(user, room_id)
                .map(|row| Some(row.stream))
                .ok_or_else(|| not_in_room(user, room_id)),
            _ => Err(not_in_room(user, room_id)),
        }
    }

    /// The state of a room as `user` may see it: the current state for a member, the state at
    /// their leave for a former member.
    pub async fn current_state(
        &self,
        room_id: &RoomId,
        user: &UserId,
    ) -> Result<Vec<Arc<Pdu>>, RoomError> {
        match self.reader_bound(room_id, user).await? {
            None => {
                let room = self.room(room_id).await?;
                let guard = room.lock().await;
                Ok(guard.state_events().cloned().collect())
            }
            Some(bound) => Ok(self
                .inner
                .store
                .state_upto(room_id.as_str(), bound)
                .await?
                .into_iter()
                .map(Arc::new)
                .collect()),
        }
    }

    /// One state event as `user` may see it (see [`Rooms::current_state`]).
    pub async fn state_event(
        &self,
        room_id: &RoomId,
        user: &UserId,
        kind: &StateEventType,
        state_key: &str,
    ) -> Result<Arc<Pdu>, RoomError> {
        let missing = || RoomError::NotFound(format!("no {kind} state with key {state_key:?}"));
        match self.reader_bound(room_id, user).await? {
            None => {
                let room = self.room(room_id).await?;
                let guard = room.lock().await;
                guard.get(kind, state_key).cloned().ok_or_else(missing)
            }
            Some(bound) => self
                .inner
                .store
                .state_entry_upto(room_id.as_str(), &kind.to_string(), state_key, bound)
                .await?
                .map(Arc::new)
                .ok_or_else(missing),
        }
    }

    /// Sets `target`'s membership in a room, sent by `sender`, as the enforcement point
    /// permitted: `matrix:join` only for the sender's own membership, `matrix:invite` only for
    /// another user's, `matrix:state` for either.
    pub async fn set_membership(
        &self,
        permit: &MatrixPermit,
        room_id: &RoomId,
        sender: &UserId,
        target: &UserId,
        content: Box<RawValue>,
    ) -> Result<Sent, RoomError> {
        let actions: &[&str] = if target == sender {
            &["matrix:state", "matrix:join"]
        } else {
            &["matrix:state", "matrix:invite"]
        };
        check_permit(permit, actions, sender, Some(room_id))?;
        self.send(
            permit,
            room_id,
            sender,
            NewEvent {
                kind: TimelineEventType::RoomMember,
                content,
                state_key: Some(target.to_string()),
                redacts: None,
            },
            None,
        )
        .await
    }
}

/// An event submitted but perhaps not committed yet.
struct Submitted {
    pdu: Arc<Pdu>,
    committed: crate::stream::Committed,
}

/// Unix time in milliseconds.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Refuses what `permit` does not cover: one of `actions` by `user` in `room` (`None`: a room
/// to be created). A refusal means a caller asked the enforcement point about something else.
pub(crate) fn check_permit(
    permit: &MatrixPermit,
    actions: &[&str],
    user: &UserId,
    room: Option<&RoomId>,
) -> Result<(), RoomError> {
    if permit.covers(actions, user, room) {
        return Ok(());
    }
    let room_name = |room: Option<&RoomId>| room.map_or("a new room", RoomId::as_str).to_owned();
    tracing::error!(
        permitted = permit.action(),
        permitted_user = %permit.user(),
        permitted_room = %room_name(permit.room()),
        action = %actions.join(" or "),
        %user,
        room = %room_name(room),
        "a Matrix permit used for another action, user or room"
    );
    Err(RoomError::Forbidden(format!(
        "{user} is not permitted to do this in {}",
        room_name(room)
    )))
}

fn not_in_room(user: &UserId, room_id: &RoomId) -> RoomError {
    RoomError::Forbidden(format!("{user} is not in room {room_id}"))
}
