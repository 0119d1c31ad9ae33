//! A connector's Matrix side, as the host sees it: [`MatrixPort`], the narrow trait the
//! embedder (the node) implements for the `appservice` imports and the acknowledgement of
//! events, and [`MatrixEvents`], the bounded queue of [`MatrixEvent`]s for a connector's
//! `on-event` export.
//!
//! Delivery is at least once: an event is acknowledged ([`MatrixPort::handled`], awaited
//! before the instance's next call) once its `on-event` returned; an event whose call ends the
//! instance (trap, deadline, memory) is given to the next instance, at most
//! [`MAX_EVENT_TRIES`] times, then skipped ([`EventOutcome::Skipped`]). An instance ended by its
//! key-value store failing (`LostReason::Unavailable`) does not count: the event is given again
//! as long as the store fails, never skipped for it.
//!
//! The host never handles a token: it names the connector, and the embedder acts as the user
//! of that connector's namespace (refusing with 403 outside it).

use std::fmt::Debug;

use tokio::sync::mpsc;

use crate::error::{Failure, Refused};
use crate::port::BoxFuture;

/// How many instances an event may end before it is skipped (a poisonous event).
pub const MAX_EVENT_TRIES: u32 = 3;

/// A Matrix event for `on-event`: its position in the embedder's stream (what the
/// acknowledgement names) and its Client-Server JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatrixEvent {
    pub position: u64,
    pub json: String,
}

/// How an event's delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventOutcome {
    /// Its `on-event` call returned.
    Handled,
    /// It ended [`MAX_EVENT_TRIES`] instances in a row and was given up (logged, counted).
    Skipped,
}

/// What the `appservice` imports do, in the embedder's Matrix layer. `connector` is the
/// running stub's name; every call acts as a user of that connector's namespace, and answers
/// a reTHINK code on refusal (403 outside the namespace, 400 malformed input, 404 unknown
/// room, 503 a bound is reached).
pub trait MatrixPort: Send + Sync + Debug {
    /// Registers `@<localpart>:<domain>`; returns its user id. An existing user of the
    /// namespace is not an error.
    fn register_user<'a>(
        &'a self,
        connector: &'a str,
        localpart: &'a str,
    ) -> BoxFuture<'a, Result<String, Failure>>;

    /// Makes `user_id` join `room` (a room id or alias); returns the room id.
    fn join_room<'a>(
        &'a self,
        connector: &'a str,
        user_id: &'a str,
        room: &'a str,
    ) -> BoxFuture<'a, Result<String, Failure>>;

    /// Sends a room event as `user_id`; returns the event id.
    fn send_event<'a>(
        &'a self,
        connector: &'a str,
        user_id: &'a str,
        room_id: &'a str,
        event_type: &'a str,
        content: &'a str,
    ) -> BoxFuture<'a, Result<String, Failure>>;

    /// Creates a room with `user_id` as creator (and alias `#<alias>:<domain>` if given);
    /// returns the room id.
    fn create_room<'a>(
        &'a self,
        connector: &'a str,
        user_id: &'a str,
        alias_localpart: Option<&'a str>,
        name: Option<&'a str>,
    ) -> BoxFuture<'a, Result<String, Failure>>;

    /// The delivery of the event at `position` to `connector` ended (`outcome`): the
    /// embedder records that the feed may go on after it. The host awaits it before the
    /// instance's next call, so a restart goes on after the last event acknowledged. That is
    /// at least once, not exactly once: events handed to a replacement version after newer
    /// ones (`node/src/stubhost/follow.rs`) move the recorded position back when they are
    /// acknowledged, and a restart then gives the events after it again.
    fn handled<'a>(
        &'a self,
        connector: &'a str,
        position: u64,
        outcome: EventOutcome,
    ) -> BoxFuture<'a, ()>;
}

/// The Matrix events waiting for a connector's `on-event`. Bounded
/// (the stub's `mailbox` size): [`MatrixEvents::send`] waits while the queue is full, so a
/// feeder that follows a stream stays behind instead of dropping anything.
#[derive(Debug, Clone)]
pub struct MatrixEvents {
    pub(crate) tx: mpsc::Sender<MatrixEvent>,
}

impl MatrixEvents {
    /// Queues `event` for `on-event`, waiting while the queue is full. `Stopped` once the
    /// stub has stopped (the event was not taken).
    pub async fn send(&self, event: MatrixEvent) -> Result<(), Refused> {
        self.tx.send(event).await.map_err(|_| Refused::Stopped)
    }

    /// Whether both are the queue of the same instance.
    pub fn same_queue(&self, other: &MatrixEvents) -> bool {
        self.tx.same_channel(&other.tx)
    }

    /// Queues `event` if there is room now (`MailboxFull` otherwise: the caller keeps it).
    pub fn try_send(&self, event: MatrixEvent) -> Result<(), Refused> {
        self.tx.try_send(event).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Refused::MailboxFull,
            mpsc::error::TrySendError::Closed(_) => Refused::Stopped,
        })
    }
}
