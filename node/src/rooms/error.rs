//! [`RoomError`]: every way a room operation fails. `matrix/error.rs` maps it to the wire.

use crate::store::StoreError;

/// A failed room operation. The `Display` text is what the client reads.
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
    #[error("{0}")]
    Internal(String),
}
