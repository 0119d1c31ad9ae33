//! [`SessionError`]: every reason the WebSocket edge refuses a frame or a message, with its
//! source. Only `ws::codec` turns one into a response code and a description.

use rethink_proto::ParseError;

use super::control::ControlError;
use crate::auth::AuthError;
use crate::bus::{Denied, RouteError};

/// Why the session protocol refused something.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The frame or message did not parse.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// A session control message (`mn:/session`) that cannot be read.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// The credential presented was refused.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The enforcement point refused the whole message.
    #[error(transparent)]
    Denied(#[from] Denied),
    /// The bus refused the request (a node service, or opening a session).
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error("binary frames are not supported; send JSON text frames")]
    Binary,
    #[error("frame of {size} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge { size: usize, max: usize },
    #[error("open a session first: send open to mn:/session")]
    NoSession,
    #[error("the first message must be a single open or re-open to mn:/session")]
    NotAHandshake,
    #[error("this connection already has a session")]
    AlreadyOpen,
    #[error("no session for this runtimeToken (it may have expired): open a new session")]
    UnknownRuntimeToken,
    #[error("the runtimeToken belongs to another runtime URL")]
    OtherRuntime,
    #[error(
        "the session was opened with another identity: re-open it with the credential it was opened with"
    )]
    OtherIdentity,
    #[error("the credential of this session has expired: open a new session with a fresh token")]
    CredentialExpired,
    /// The node failed to build its own answer: a bug, logged, never described to the peer.
    #[error("cannot build the answer")]
    Internal(#[source] ParseError),
}
