//! The bridge between reTHINK data objects on the bus and Matrix rooms.
//!
//! A data object `comm://<domain>/<id>` is a room (public, with the alias
//! `#_hyperty_comm.<id>:<server>` so that Matrix users can find and join it, and an
//! `org.rethink.object` state event describing the object: see [`object_room`]). The object's
//! `create` (as the bus recognises it: `crate::bus::bridge`) creates the room, with the
//! reporter's virtual user `@_hyperty_<reporter id>:<server>` (the reserved namespace) as its
//! creator, named after the object's `value.name`, with the initial value in the state event.
//! Objects whose `create` the node never saw (created before a restart, or by a runtime that
//! sends its creation elsewhere) get their room lazily, at the first subscription or update,
//! created by that hyperty's virtual user. An object's room is the one its bridge row names
//! (`bridged_objects`), else the room of its alias: a room made for the object whose bridge
//! row a failed write left out is taken then, never made again. Bus to rooms: a hyperty
//! subscribing to `<object>/changes` gets its virtual user joined to the room; an `update`
//! published to `<object>/changes` becomes a room event sent by the publisher's virtual user:
//! `m.room.message` when `body.value` carries `msgtype` and `body`, otherwise
//! `org.rethink.update` with the message body as content. Rooms to bus: an event a Matrix client
//! sends to such a room is published on the bus to `<object>/changes` as an `update` from the
//! object, with `body.value` the event content and `body.source` the Matrix sender; it passes
//! the bus's enforcement point like any message.
//!
//! Bus events arrive through a bounded channel ([`crate::bus::bridge::BridgeEvent`]) and are
//! handled in order by one task (so an object's `create` is handled before the subscriptions
//! that follow it). A creation or subscription that failed for a reason that passes (the
//! database unreachable: [`BridgeError::is_transient`]) is tried again, the events after it
//! waiting, until it is carried over or the node stops; another failure is logged, and the next
//! event goes on. An update the room does not take (the room refuses it, or it cannot be
//! stored) is answered to its sender: a `response` from `<object>/changes` with the update's
//! `id`, a code ([`BridgeError::code`]: 503 while the database is unreachable) and why. (What
//! the bus can tell before routing, it refuses at once: `crate::bus::bridge::Unbridgeable`.)

mod names;
pub mod object_room;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rethink_proto::{Code, Envelope, ResponseBuilder};
use ruma::events::TimelineEventType;
use ruma::events::room::member::MembershipState;
use ruma::{OwnedRoomId, RoomId, UserId};
use serde_json::value::{RawValue, to_raw_value};
use serde_json::{Map, Value, json};
use tokio::sync::{Mutex as AsyncMutex, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use names::{NameError, RESERVED_PREFIX, object_alias, virtual_user};
use object_room::{Creation, room_spec};

use crate::bus::bridge::BridgeEvent;
use crate::bus::{Bus, Denied, MatrixRequest, Origin};
use crate::locks::lock;
use crate::rooms::{NewEvent, Pdu, RoomError, Rooms};

/// Bus events waiting for the bridge before senders wait.
const CHANNEL_CAPACITY: usize = 4096;

/// How long the bridge waits before it tries an object's creation or subscription again, when
/// it failed for a reason that passes ([`BridgeError::is_transient`]).
const RETRY: Duration = Duration::from_secs(1);

/// Why a bridged message could not be carried over.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("room: {0}")]
    Room(#[from] RoomError),
    #[error("denied: {0}")]
    Denied(#[from] Denied),
    #[error(transparent)]
    Name(#[from] NameError),
    /// A bus body or a room event content that cannot be read or written as JSON.
    #[error("{what}: {source}")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// The bus message built from a room event is not a valid envelope (a bug).
    #[error("bus message: {0}")]
    Envelope(#[source] rethink_proto::ParseError),
}

impl BridgeError {
    /// The reTHINK code of the answer to an update that failed with this error: what the room
    /// refused (too large, not a valid event, forbidden), the database unreachable (503, as on
    /// the Matrix edge: the same update may be taken once it is back) or an internal failure
    /// (500, details logged only). A refusal by the bus is coded as on every edge
    /// ([`Denied::code`]).
    pub fn code(&self) -> Code {
        match self {
            BridgeError::Room(RoomError::Store(e)) if e.is_unavailable() => Code::UNAVAILABLE,
            BridgeError::Room(room) if room.is_internal() => Code::INTERNAL,
            BridgeError::Room(RoomError::TooLarge) => Code::TOO_LARGE,
            BridgeError::Room(RoomError::Forbidden(_)) => Code::FORBIDDEN,
            BridgeError::Denied(denied) => denied.code(),
            // Other nodes kept winning the room's writes: worth a retry, as on the Matrix edge.
            BridgeError::Room(RoomError::Busy(_)) => Code::UNAVAILABLE,
            BridgeError::Room(RoomError::UnknownRoom(_) | RoomError::NotFound(_)) => {
                Code::NOT_FOUND
            }
            BridgeError::Room(_) | BridgeError::Json { .. } | BridgeError::Name(_) => {
                Code::BAD_REQUEST
            }
            BridgeError::Envelope(_) => Code::INTERNAL,
        }
    }

    /// Whether the same message may be carried over later: the database is unreachable, or
    /// other nodes kept winning the room's writes.
    pub fn is_transient(&self) -> bool {
        match self {
            BridgeError::Room(e) => e.is_transient(),
            _ => false,
        }
    }
}

/// The bridge. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Bridge {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    rooms: Rooms,
    bus: Bus,
    /// Object → room, and room → object (`None`: known not to be bridged).
    by_object: Mutex<HashMap<String, OwnedRoomId>>,
    by_room: Mutex<HashMap<OwnedRoomId, Option<String>>>,
    /// Serializes room creation for objects.
    creating: AsyncMutex<()>,
    next_id: std::sync::atomic::AtomicU64,
}

impl Bridge {
    /// The channel from the bus to the bridge: the sender goes to [`Bus::new`], the receiver to
    /// [`Bridge::start`].
    pub fn channel() -> (mpsc::Sender<BridgeEvent>, mpsc::Receiver<BridgeEvent>) {
        mpsc::channel(CHANNEL_CAPACITY)
    }

    /// Starts the bridge task on the events the bus sends through `rx` (see [`Bridge::channel`]).
    pub fn start(
        rooms: Rooms,
        bus: Bus,
        rx: mpsc::Receiver<BridgeEvent>,
        shutdown: CancellationToken,
    ) -> (Self, JoinHandle<()>) {
        let bridge = Bridge {
            inner: Arc::new(Inner {
                rooms,
                bus,
                by_object: Mutex::new(HashMap::new()),
                by_room: Mutex::new(HashMap::new()),
                creating: AsyncMutex::new(()),
                next_id: std::sync::atomic::AtomicU64::new(1),
            }),
        };
        let task = tokio::spawn(bridge.clone().run(rx, shutdown));
        (bridge, task)
    }

    async fn run(self, mut rx: mpsc::Receiver<BridgeEvent>, shutdown: CancellationToken) {
        loop {
            let event = tokio::select! {
                e = rx.recv() => e,
                () = shutdown.cancelled() => {
                    // Carry over what the bus already handed in (once each), then stop.
                    while let Ok(event) = rx.try_recv() {
                        self.carry(&event, &shutdown).await;
                    }
                    None
                }
            };
            let Some(event) = event else {
                return;
            };
            self.carry(&event, &shutdown).await;
        }
    }

    /// Handles one bus event. A failed update is answered to its sender. The sender of a
    /// creation or a subscription had its answer before the bridge saw it (the `create` routed,
    /// the subscription's 200): one that failed for a reason that passes is tried again every
    /// [`RETRY`] until it is carried over or the node stops (the events after it wait, so that
    /// an object's room is still made from its `create`, and its order kept); one refused for
    /// good is logged.
    async fn carry(&self, event: &BridgeEvent, shutdown: &CancellationToken) {
        let mut attempt: u32 = 1;
        loop {
            let Err(e) = self.handle(event).await else {
                return;
            };
            if let BridgeEvent::Update {
                from, object, id, ..
            } = event
            {
                tracing::warn!(error = %e, ?event, "bridging an update to Matrix failed; answered to its sender");
                self.refuse_update(from, object, id, &e).await;
                return;
            }
            if !e.is_transient() {
                tracing::warn!(error = %e, ?event, "bridging a bus message to Matrix failed");
                return;
            }
            tracing::warn!(error = %e, ?event, attempt, "bridging a bus message to Matrix failed (tried again)");
            tokio::select! {
                () = shutdown.cancelled() => {
                    tracing::warn!(?event, "a bus message not bridged to Matrix: the node stops");
                    return;
                }
                () = tokio::time::sleep(RETRY) => {}
            }
            attempt += 1;
        }
    }

    /// Answers `from`'s update (`id`) of `object`, which the room did not take.
    async fn refuse_update(&self, from: &str, object: &str, id: &str, error: &BridgeError) {
        let code = error.code();
        let description = match error {
            _ if code == Code::INTERNAL => {
                "the update could not be stored in the object's room".to_owned()
            }
            BridgeError::Room(RoomError::Store(_)) => {
                "the database is unreachable: the update was not stored in the object's room; retry"
                    .to_owned()
            }
            _ => format!("the object's room refused the update: {error}"),
        };
        let changes = format!("{object}/changes");
        let reply = match ResponseBuilder::new(id, &changes, from, code)
            .description(&description)
            .build()
        {
            Ok(reply) => reply,
            Err(e) => {
                tracing::error!(error = %e, %from, "cannot build the answer to a refused update");
                return;
            }
        };
        let origin = match virtual_user(from, self.inner.rooms.server_name()) {
            Ok(user) => Origin::Matrix(user),
            Err(e) => {
                tracing::debug!(error = %e, %from, "a refused update's sender has no Matrix name");
                return;
            }
        };
        let permit = match self.inner.bus.authorize(&reply, &origin) {
            Ok(permit) => permit,
            Err(denied) => {
                tracing::debug!(%denied, %from, "the answer to a refused update was denied");
                return;
            }
        };
        for failure in self.inner.bus.route(permit).await.failures {
            tracing::debug!(recipient = %failure.recipient, error = %failure.error, "the answer to a refused update was not delivered");
        }
    }

    async fn handle(&self, event: &BridgeEvent) -> Result<(), BridgeError> {
        match event {
            BridgeEvent::Created {
                reporter,
                object,
                body,
            } => {
                let user = virtual_user(reporter, self.inner.rooms.server_name())?;
                let creation = Creation::new(reporter, body.as_deref());
                let room = self
                    .room_for(object, &user, reporter, Some(&creation))
                    .await?;
                // The room may predate this create (made lazily): the reporter joins it then.
                self.ensure_joined(&room, &user, reporter).await
            }
            BridgeEvent::Subscribed { hyperty, object } => {
                let user = virtual_user(hyperty, self.inner.rooms.server_name())?;
                let room = self.room_for(object, &user, hyperty, None).await?;
                self.ensure_joined(&room, &user, hyperty).await
            }
            BridgeEvent::Update {
                from, object, body, ..
            } => {
                let user = virtual_user(from, self.inner.rooms.server_name())?;
                let room = self.room_for(object, &user, from, None).await?;
                self.ensure_joined(&room, &user, from).await?;
                let event = room_event(body.as_deref())?;
                self.inner.rooms.deliver(&room, &user, event, None).await?;
                Ok(())
            }
        }
    }

    /// The room of `object`, created by `creator` (the virtual user of `hyperty`) if needed, from
    /// the object's `creation` when it is known.
    async fn room_for(
        &self,
        object: &str,
        creator: &UserId,
        hyperty: &str,
        creation: Option<&Creation>,
    ) -> Result<OwnedRoomId, BridgeError> {
        if let Some(room) = lock(&self.inner.by_object).get(object) {
            return Ok(room.clone());
        }
        let _creating = self.inner.creating.lock().await;
        let store = self.inner.rooms.store();
        let room = match store.bridged_room(object).await.map_err(RoomError::from)? {
            Some(room) => room,
            None => {
                let alias = object_alias(object, self.inner.rooms.server_name())?;
                let spec = room_spec(object, alias.clone(), hyperty, creation)?;
                let room = match self.inner.rooms.create(creator, spec).await {
                    Ok(room) => room,
                    // The object's own alias is taken: only the bridge makes aliases in the
                    // reserved namespace, so its room was made for this object, and its bridge
                    // row is missing (the database failed between the two writes, or another
                    // node of a cluster is just writing it). That room is the object's.
                    Err(RoomError::RoomInUse) => {
                        match store.alias(alias.as_str()).await.map_err(RoomError::from)? {
                            Some((room, _)) => {
                                tracing::info!(%object, %room, "the room of the object's alias is bridged to it (its bridge row was missing)");
                                room
                            }
                            None => return Err(RoomError::RoomInUse.into()),
                        }
                    }
                    Err(e) => return Err(e.into()),
                };
                store
                    .put_bridge(object, room.as_str())
                    .await
                    .map_err(RoomError::from)?;
                tracing::debug!(%object, %room, %creator, by_create = creation.is_some(), "data object bridged to a room");
                room
            }
        };
        lock(&self.inner.by_object).insert(object.to_owned(), room.clone());
        lock(&self.inner.by_room).insert(room.clone(), Some(object.to_owned()));
        Ok(room)
    }

    async fn ensure_joined(
        &self,
        room: &RoomId,
        user: &UserId,
        hyperty: &str,
    ) -> Result<(), BridgeError> {
        if self.inner.rooms.membership(room, user).await? == Some(MembershipState::Join) {
            return Ok(());
        }
        let content = raw(&json!({ "membership": "join", "displayname": hyperty }))?;
        self.inner
            .rooms
            .deliver(
                room,
                user,
                NewEvent {
                    kind: TimelineEventType::RoomMember,
                    content,
                    state_key: Some(user.to_string()),
                    redacts: None,
                },
                None,
            )
            .await?;
        Ok(())
    }

    /// The data object bridged to `room`, if any.
    pub async fn object_of(&self, room: &RoomId) -> Result<Option<String>, RoomError> {
        if let Some(known) = lock(&self.inner.by_room).get(room) {
            return Ok(known.clone());
        }
        let object = self
            .inner
            .rooms
            .store()
            .bridged_object(room.as_str())
            .await?;
        lock(&self.inner.by_room).insert(room.to_owned(), object.clone());
        Ok(object)
    }

    /// Publishes a room event a Matrix client sent to a bridged room on the bus, to the
    /// object's subscribers. Events of the node's virtual users came from the bus and are not
    /// sent back.
    pub async fn publish(&self, object: &str, pdu: &Pdu) -> Result<(), BridgeError> {
        if names::is_virtual(pdu.sender()) {
            return Ok(());
        }
        let id = self
            .inner
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let message = json!({
            "id": format!("matrix-{id}"),
            "type": "update",
            "from": object,
            "to": format!("{object}/changes"),
            "body": {
                "value": serde_json::from_str::<Value>(pdu.content().get()).unwrap_or(Value::Null),
                "source": pdu.sender(),
                "eventId": pdu.event_id,
                "eventType": pdu.kind().to_string(),
            }
        });
        let envelope = Envelope::parse(&message.to_string()).map_err(BridgeError::Envelope)?;
        let origin = Origin::Matrix(pdu.sender().to_owned());
        let bus = &self.inner.bus;
        let permit = bus.authorize(&envelope, &origin)?;
        let report = bus.route(permit).await;
        for failure in report.failures {
            tracing::debug!(recipient = %failure.recipient, error = %failure.error, "bridged Matrix event not delivered");
        }
        Ok(())
    }

    /// Decides a Matrix action on a room, with the room's object address when it is bridged.
    pub async fn authorize(
        &self,
        action: &'static str,
        user: &UserId,
        identity: Option<&str>,
        room: Option<&RoomId>,
        invitee: Option<&UserId>,
        size: usize,
    ) -> Result<crate::bus::MatrixPermit, BridgeError> {
        let object = match room {
            Some(room) => self.object_of(room).await?,
            None => None,
        };
        let room_address = match (&object, room) {
            (Some(object), _) => object.as_str(),
            (None, Some(room)) => room.as_str(),
            (None, None) => "",
        };
        Ok(self.inner.bus.authorize_matrix(&MatrixRequest {
            action,
            user,
            identity,
            room_id: room,
            room: room_address,
            bridged: object.is_some(),
            invitee,
            size,
        })?)
    }
}

fn raw(value: &Value) -> Result<Box<RawValue>, BridgeError> {
    to_raw_value(value).map_err(|source| BridgeError::Json {
        what: "room event content",
        source,
    })
}

/// The room event of an update's body.
fn room_event(body: Option<&str>) -> Result<NewEvent, BridgeError> {
    let body: Value = match body {
        Some(json) => serde_json::from_str(json).map_err(|source| BridgeError::Json {
            what: "update body",
            source,
        })?,
        None => Value::Object(Map::new()),
    };
    let value = body.get("value");
    let is_message = value.is_some_and(|v| {
        v.get("msgtype").is_some_and(Value::is_string)
            && v.get("body").is_some_and(Value::is_string)
    });
    let (kind, content) = match (is_message, value) {
        (true, Some(value)) => (TimelineEventType::RoomMessage, value.clone()),
        _ => (TimelineEventType::from("org.rethink.update"), body),
    };
    Ok(NewEvent {
        kind,
        content: raw(&content)?,
        state_key: None,
        redacts: None,
    })
}

/// Users of the node's reserved namespace.
pub fn is_virtual(user: &UserId) -> bool {
    names::is_virtual(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_carrying_a_text_message_become_room_messages() {
        let e = room_event(Some(r#"{"value":{"msgtype":"m.text","body":"hi"}}"#)).unwrap();
        assert_eq!(e.kind, TimelineEventType::RoomMessage);
        let content: Value = serde_json::from_str(e.content.get()).unwrap();
        assert_eq!(content, json!({"msgtype": "m.text", "body": "hi"}));
    }

    #[test]
    fn other_updates_become_rethink_updates_with_the_whole_body() {
        let e = room_event(Some(r#"{"value":{"x":1},"attribute":"a"}"#)).unwrap();
        assert_eq!(e.kind.to_string(), "org.rethink.update");
        let content: Value = serde_json::from_str(e.content.get()).unwrap();
        assert_eq!(content, json!({"value": {"x": 1}, "attribute": "a"}));
        let e = room_event(None).unwrap();
        assert_eq!(e.content.get(), "{}");
    }

    #[test]
    fn refusals_are_coded_as_on_the_websocket_edge_and_a_busy_room_is_retryable() {
        let code = |e: BridgeError| e.code();
        assert_eq!(code(Denied::RateLimited.into()), Code::TOO_MANY_REQUESTS);
        assert_eq!(
            code(Denied::TooManyRecipients { count: 2, max: 1 }.into()),
            Code::TOO_LARGE
        );
        assert_eq!(
            code(Denied::Spoofed { from: "f".into() }.into()),
            Code::FORBIDDEN
        );
        let room: ruma::OwnedRoomId = "!r:example.org".try_into().unwrap();
        assert_eq!(
            code(BridgeError::Room(RoomError::Busy(room))),
            Code::UNAVAILABLE
        );
    }

    #[test]
    fn an_unreachable_database_is_503_and_transient_and_a_failed_query_500() {
        use crate::store::StoreError;
        let unreachable = || {
            BridgeError::Room(RoomError::Store(StoreError::Database(
                sqlx::Error::PoolTimedOut,
            )))
        };
        assert_eq!(unreachable().code(), Code::UNAVAILABLE);
        assert!(unreachable().is_transient());
        let stopped = BridgeError::Room(RoomError::Store(StoreError::WriterStopped));
        assert_eq!(stopped.code(), Code::UNAVAILABLE);
        let failed = BridgeError::Room(RoomError::Store(StoreError::Database(
            sqlx::Error::RowNotFound,
        )));
        assert_eq!(failed.code(), Code::INTERNAL);
        assert!(!failed.is_transient());
        let room: ruma::OwnedRoomId = "!r:example.org".try_into().unwrap();
        assert!(BridgeError::Room(RoomError::Busy(room)).is_transient());
        assert!(!BridgeError::Room(RoomError::RoomInUse).is_transient());
        assert!(!BridgeError::Room(RoomError::TooLarge).is_transient());
    }
}
