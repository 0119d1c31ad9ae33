//! Message types: the reTHINK verbs, plus any custom string, which is routed unchanged.

use std::fmt;

/// The `type` of a message. Matching is exact and case-sensitive, as in the reTHINK runtimes;
/// anything else is [`MessageType::Custom`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MessageType {
    Create,
    Read,
    Update,
    Delete,
    Subscribe,
    Unsubscribe,
    Response,
    Forward,
    Execute,
    /// Any other type (`PING`, or the session protocol's `open`, `re-open`, `close`, `ack`).
    Custom(Box<str>),
}

impl MessageType {
    /// Classifies a type string.
    pub fn from_type_str(s: &str) -> Self {
        match s {
            "create" => Self::Create,
            "read" => Self::Read,
            "update" => Self::Update,
            "delete" => Self::Delete,
            "subscribe" => Self::Subscribe,
            "unsubscribe" => Self::Unsubscribe,
            "response" => Self::Response,
            "forward" => Self::Forward,
            "execute" => Self::Execute,
            other => Self::Custom(other.into()),
        }
    }

    /// The type string as it appears on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Create => "create",
            Self::Read => "read",
            Self::Update => "update",
            Self::Delete => "delete",
            Self::Subscribe => "subscribe",
            Self::Unsubscribe => "unsubscribe",
            Self::Response => "response",
            Self::Forward => "forward",
            Self::Execute => "execute",
            Self::Custom(s) => s,
        }
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
