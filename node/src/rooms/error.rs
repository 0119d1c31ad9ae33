//! [`RoomError`]: every way a room operation fails. `matrix/error.rs` maps it to the wire.

use ruma::OwnedEventId;

use crate::store::StoreError;

/// A failed room operation. The `Display` text is what the client reads, except for the
/// internal ones ([`RoomError::is_internal`]), which are logged and answered with a bare 500.
#[derive(Debug, thiserror::Error)]
pub enum RoomError {
    #[error("unknown room {0}")]
    UnknownRoom(ruma::OwnedRoomId),
    #[error("{0}")]
    NotFound(String),
    /// The room's auth rules, the caller's membership or the policy refuse it; nothing changed.
    #[error("{0}")]
    Forbidden(String),
    #[error("the event is larger than 65536 bytes")]
    TooLarge,
    #[error("bad JSON: {0}")]
    BadJson(String),
    #[error("invalid parameter: {0}")]
    InvalidParam(String),
    #[error("the room alias is already in use")]
    AliasInUse,
    /// `createRoom` with a `room_alias_name` that is taken.
    #[error("the room alias is already taken")]
    RoomInUse,
    #[error("unsupported room version {0}")]
    UnsupportedRoomVersion(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// An event (built, or read from the store) that cannot be written or read as JSON.
    #[error("{what}: {source}")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// A built PDU that is not a JSON object.
    #[error("a built PDU is not a JSON object")]
    PduNotAnObject,
    /// A stored event that is not a JSON object.
    #[error("stored event {0} is not a JSON object")]
    StoredNotAnObject(OwnedEventId),
    /// Hashing, signing or computing the reference hash of a new event failed.
    #[error("signing an event: {0}")]
    Signing(#[source] ruma::signatures::JsonError),
    /// Redacting a stored event failed.
    #[error("redacting {event}: {source}")]
    Redaction {
        event: OwnedEventId,
        #[source]
        source: ruma::canonical_json::CanonicalJsonFieldError,
    },
    /// An identifier (room version, event ID) read from the store or computed is invalid.
    #[error("invalid {what}: {source}")]
    Identifier {
        what: &'static str,
        #[source]
        source: ruma::IdParseError,
    },
    /// Other nodes kept writing to the room while this node built its event, every attempt
    /// (see `rooms::remote`): the client may retry.
    #[error("the room {0} is busy with writes on other nodes; retry")]
    Busy(ruma::OwnedRoomId),
    /// The event of a remembered transaction is not in the store.
    #[error("the event {0} of a stored transaction is missing")]
    TxnEventLost(OwnedEventId),
}

impl RoomError {
    /// Whether the same action may succeed later without anything changing but time: the
    /// database is unreachable, or other nodes kept winning the room's writes. What retries
    /// (the bridge, a connector's feed, profile re-sends) retries these only.
    pub fn is_transient(&self) -> bool {
        match self {
            RoomError::Store(e) => e.is_unavailable(),
            RoomError::Busy(_) => true,
            _ => false,
        }
    }

    /// A failure of the node (store, bug, corrupt data), not of the request: its details are
    /// logged, never sent.
    pub fn is_internal(&self) -> bool {
        matches!(
            self,
            RoomError::Store(_)
                | RoomError::Json { .. }
                | RoomError::PduNotAnObject
                | RoomError::StoredNotAnObject(_)
                | RoomError::Signing(_)
                | RoomError::Redaction { .. }
                | RoomError::Identifier { .. }
                | RoomError::TxnEventLost(_)
        )
    }
}
