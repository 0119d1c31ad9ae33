//! The Matrix room engine (DESIGN.md section 5): rooms of version 11, their events (hashed,
//! signed, auth-checked with ruma's state-res functions), current state and memberships.
//! Independent of HTTP: the handlers in `matrix/` call it, and so does the bridge to the bus.
//!
//! [`Rooms`] keeps each room it serves in memory ([`state::RoomState`]) behind the room's own
//! lock. Sending an event takes the lock, builds and checks the event ([`build`]), submits it to
//! the stream writer, applies it to the in-memory state and releases the lock; the caller then
//! waits for the commit, so an acknowledged event is durable. Events of one room are submitted
//! in order under its lock, so stream order is the room's topological order.

pub mod build;
pub mod create;
pub mod error;
pub mod pdu;
mod power;
pub mod signing;
pub mod state;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ruma::canonical_json::{CanonicalJsonValue, RedactedBecause, redact};
use ruma::events::room::member::MembershipState;
use ruma::events::{StateEventType, TimelineEventType};
use ruma::{
    OwnedEventId, OwnedRoomId, OwnedServerName, OwnedUserId, RoomId, RoomVersionId, UserId,
};
use serde_json::value::RawValue;
use tokio::sync::Mutex as AsyncMutex;

pub use build::NewEvent;
pub use error::RoomError;
pub use pdu::Pdu;
pub use signing::ServerKey;
pub use state::RoomState;

use crate::bus::MatrixPermit;
use crate::store::rooms::{AppendEvent, RoomStore};
use crate::stream::StreamWriter;
use crate::sync::lock;

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
}

impl Rooms {
    pub fn new(
        store: RoomStore,
        stream: StreamWriter,
        key: ServerKey,
        server_name: OwnedServerName,
    ) -> Self {
        Rooms {
            inner: Arc::new(Inner {
                store,
                stream,
                key,
                server_name,
                rooms: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub fn store(&self) -> &RoomStore {
        &self.inner.store
    }

    pub fn stream(&self) -> &StreamWriter {
        &self.inner.stream
    }

    pub fn server_name(&self) -> &OwnedServerName {
        &self.inner.server_name
    }

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
        let version = RoomVersionId::try_from(loaded.version.as_str())
            .map_err(|e| RoomError::Internal(format!("stored room version: {e}")))?;
        let rules = version
            .rules()
            .ok_or_else(|| RoomError::UnsupportedRoomVersion(version.to_string()))?;
        let state = RoomState::restore(
            room_id.to_owned(),
            version,
            rules,
            loaded.state,
            loaded.last,
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

    /// Sends an event to an existing room, as the enforcement point permitted. With `txn`
    /// (device, transaction ID) the send is idempotent: a repeated transaction returns the first
    /// event and stores nothing.
    pub async fn send(
        &self,
        _permit: &MatrixPermit,
        room_id: &RoomId,
        sender: &UserId,
        event: NewEvent,
        txn: Option<(String, String)>,
    ) -> Result<Sent, RoomError> {
        self.deliver(room_id, sender, event, txn).await
    }

    /// Sends an event without a Matrix permit: for the bridge, delivering a bus message that
    /// the bus's enforcement point already permitted.
    pub(crate) async fn deliver(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        event: NewEvent,
        txn: Option<(String, String)>,
    ) -> Result<Sent, RoomError> {
        let room = self.room(room_id).await?;
        let mut guard = room.lock().await;
        if let Some((device, txn_id)) = &txn
            && let Some(sent) = self.earlier_txn(&guard, sender, device, txn_id).await?
        {
            return Ok(sent);
        }
        let submitted = self.append(&mut guard, sender, event, txn).await?;
        drop(guard);
        self.committed(room_id, submitted).await
    }

    /// The event an earlier send of this transaction created, if any.
    async fn earlier_txn(
        &self,
        room: &RoomState,
        sender: &UserId,
        device: &str,
        txn_id: &str,
    ) -> Result<Option<Sent>, RoomError> {
        let key = (sender.to_owned(), device.to_owned(), txn_id.to_owned());
        let event_id = match room.txns.get(&key) {
            Some(id) => Some(id.clone()),
            None => {
                self.inner
                    .store
                    .txn_event(sender.as_str(), device, txn_id)
                    .await?
            }
        };
        let Some(event_id) = event_id else {
            return Ok(None);
        };
        // Wait until the first send is committed, then answer with it.
        self.inner.stream.flush().await?;
        let pdu = self
            .inner
            .store
            .event(event_id.as_str())
            .await?
            .ok_or_else(|| RoomError::Internal(format!("transaction event {event_id} lost")))?;
        Ok(Some(Sent {
            event_id,
            stream: pdu.stream,
            pdu: Arc::new(pdu),
        }))
    }

    /// Builds, checks and submits an event under the room's lock, and applies it to the room.
    async fn append(
        &self,
        room: &mut RoomState,
        sender: &UserId,
        event: NewEvent,
        txn: Option<(String, String)>,
    ) -> Result<Submitted, RoomError> {
        let redaction = match (&event.kind, &event.redacts) {
            (TimelineEventType::RoomRedaction, Some(target)) => {
                Some(self.check_redaction(room, sender, target).await?)
            }
            _ => None,
        };
        let mut audience = room.audience();
        let built = build::build(room, &self.inner.key, sender, event, txn.clone())?;
        let pdu = built.pdu;
        let membership = (*pdu.kind() == TimelineEventType::RoomMember)
            .then(|| state::membership_of(&pdu))
            .flatten();
        if membership.is_some()
            && let Some(target) = pdu.state_key().and_then(|k| UserId::parse(k).ok())
            && !audience.contains(&target)
        {
            audience.push(target);
        }
        let op = AppendEvent {
            event_id: pdu.event_id.to_string(),
            room_id: room.room_id.to_string(),
            kind: pdu.kind().to_string(),
            state_key: pdu.state_key().map(str::to_owned),
            sender: sender.to_string(),
            json: built.json,
            txn: txn.clone(),
            membership: membership.map(|m| m.to_string()),
            create_version: (*pdu.kind() == TimelineEventType::RoomCreate)
                .then(|| room.version.to_string()),
            redaction: redaction.map(|(target, json)| (target.to_string(), json)),
        };
        let committed = self.inner.stream.submit(Box::new(op), Vec::new()).await?;
        room.apply(Arc::clone(&pdu));
        for user in room.audience() {
            if !audience.contains(&user) {
                audience.push(user);
            }
        }
        if let Some((device, txn_id)) = txn {
            room.txns
                .insert((sender.to_owned(), device, txn_id), pdu.event_id.clone());
        }
        Ok(Submitted {
            pdu,
            committed,
            audience,
        })
    }

    /// Waits for a submitted event's commit and wakes its audience.
    async fn committed(&self, room_id: &RoomId, submitted: Submitted) -> Result<Sent, RoomError> {
        match submitted.committed.wait().await {
            Ok(stream) => {
                self.inner
                    .stream
                    .notifier()
                    .wake(&submitted.audience, stream);
                Ok(Sent {
                    event_id: submitted.pdu.event_id.clone(),
                    stream,
                    pdu: submitted.pdu,
                })
            }
            Err(e) => {
                self.evict(room_id);
                Err(e.into())
            }
        }
    }

    /// Checks that `sender` may redact `target` (its own event, or with the redact power level),
    /// and returns the target's redacted JSON.
    async fn check_redaction(
        &self,
        room: &RoomState,
        sender: &UserId,
        target: &ruma::EventId,
    ) -> Result<(OwnedEventId, String), RoomError> {
        let stored: Option<(String, String, String)> =
            sqlx::query_as("SELECT room_id, sender, json FROM events WHERE event_id = ?")
                .bind(target.as_str())
                .fetch_optional(self.inner.store.pool())
                .await?;
        let Some((target_room, target_sender, json)) = stored else {
            return Err(RoomError::NotFound(format!("unknown event {target}")));
        };
        if target_room != room.room_id.as_str() {
            return Err(RoomError::NotFound(format!("unknown event {target}")));
        }
        if target_sender != sender.as_str() {
            let levels = power::Levels::of(room);
            if levels.user(sender) < levels.redact {
                return Err(RoomError::Forbidden(
                    "you may only redact your own events".to_owned(),
                ));
            }
        }
        let object: CanonicalJsonValue = serde_json::from_str(&json)
            .map_err(|e| RoomError::Internal(format!("stored event {target}: {e}")))?;
        let CanonicalJsonValue::Object(object) = object else {
            return Err(RoomError::Internal(format!("stored event {target}")));
        };
        let redacted = redact(object, &room.rules.redaction, None::<RedactedBecause>)
            .map_err(|e| RoomError::Internal(format!("redacting {target}: {e}")))?;
        let json = serde_json::to_string(&redacted)
            .map_err(|e| RoomError::Internal(format!("redacting {target}: {e}")))?;
        Ok((target.to_owned(), json))
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

    /// The current state of a room, if `user` may see it (joined; or up to the leave for a
    /// former member, approximated by the current state).
    pub async fn current_state(
        &self,
        room_id: &RoomId,
        user: &UserId,
    ) -> Result<Vec<Arc<Pdu>>, RoomError> {
        let room = self.room(room_id).await?;
        let guard = room.lock().await;
        require_member(&guard, user)?;
        Ok(guard.state_events().cloned().collect())
    }

    /// One current state event, if `user` may see it.
    pub async fn state_event(
        &self,
        room_id: &RoomId,
        user: &UserId,
        kind: &StateEventType,
        state_key: &str,
    ) -> Result<Arc<Pdu>, RoomError> {
        let room = self.room(room_id).await?;
        let guard = room.lock().await;
        require_member(&guard, user)?;
        guard
            .get(kind, state_key)
            .cloned()
            .ok_or_else(|| RoomError::NotFound(format!("no {kind} state with key {state_key:?}")))
    }

    /// Checks that `user` is, or was, in the room, for reading its history.
    pub async fn require_reader(&self, room_id: &RoomId, user: &UserId) -> Result<(), RoomError> {
        let room = self.room(room_id).await?;
        let guard = room.lock().await;
        require_member(&guard, user)
    }

    /// Sets `target`'s membership in a room, sent by `sender`, as the enforcement point
    /// permitted.
    pub async fn set_membership(
        &self,
        permit: &MatrixPermit,
        room_id: &RoomId,
        sender: &UserId,
        target: &UserId,
        content: Box<RawValue>,
    ) -> Result<Sent, RoomError> {
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
    audience: Vec<OwnedUserId>,
}

/// Reading a room's state or history needs a membership that is, or was, `join` (or an
/// invitation, for the stripped state clients show).
fn require_member(room: &RoomState, user: &UserId) -> Result<(), RoomError> {
    match room.membership(user) {
        Some(MembershipState::Join | MembershipState::Leave | MembershipState::Ban) => Ok(()),
        _ => Err(RoomError::Forbidden(format!(
            "{user} is not in room {}",
            room.room_id
        ))),
    }
}
