//! A connector's Matrix side, as the host sees it: [`MatrixPort`], the narrow trait the
//! embedder (the node) implements for the `appservice` imports, and [`MatrixEvents`], the
//! bounded queue of Matrix events for a connector's `on-event` export.
//!
//! The host never handles a token: it names the connector, and the embedder acts as the user
//! of that connector's namespace (refusing with 403 outside it).

use std::fmt::Debug;

use tokio::sync::mpsc;

use crate::error::{Failure, Refused};
use crate::port::BoxFuture;

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
}

/// The Matrix events waiting for a connector's `on-event`, as Client-Server JSON text. Bounded
/// (the stub's `mailbox` size): [`MatrixEvents::send`] waits while the queue is full, so a
/// feeder that follows a stream stays behind instead of dropping anything.
#[derive(Debug, Clone)]
pub struct MatrixEvents {
    pub(crate) tx: mpsc::Sender<String>,
}

impl MatrixEvents {
    /// Queues `event` for `on-event`, waiting while the queue is full. `Stopped` once the
    /// stub has stopped (the event was not taken).
    pub async fn send(&self, event: String) -> Result<(), Refused> {
        self.tx.send(event).await.map_err(|_| Refused::Stopped)
    }

    /// Whether both are the queue of the same instance.
    pub fn same_queue(&self, other: &MatrixEvents) -> bool {
        self.tx.same_channel(&other.tx)
    }

    /// Queues `event` if there is room now (`MailboxFull` otherwise: the caller keeps it).
    pub fn try_send(&self, event: String) -> Result<(), Refused> {
        self.tx.try_send(event).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Refused::MailboxFull,
            mpsc::error::TrySendError::Closed(_) => Refused::Stopped,
        })
    }
}
