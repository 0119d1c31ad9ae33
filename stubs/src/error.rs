//! The host's errors: [`StubError`] (loading, checking and starting a stub), [`Failure`] (what a
//! host import answers the guest, a reTHINK code), [`StoreUnavailable`] (a key-value call that
//! ends the instance), [`Refused`] (a message the stub's mailbox did not take) and
//! [`LostReason`] (why an accepted message was lost to a crash).

use std::fmt;

/// Why a component could not be loaded, checked or started.
#[derive(Debug, thiserror::Error)]
pub enum StubError {
    /// The bytes are not a valid component, or compiling it failed.
    #[error("the component does not compile: {0}")]
    Compile(String),
    /// The component imports no `rethink:stub` interface: it was not built against the WIT.
    #[error("not a reTHINK stub: the component imports no rethink:stub interface")]
    NotAStub,
    /// The component was built against a version of the WIT this host does not serve.
    #[error(
        "the component imports rethink:stub@{found} (`{import}`), this host serves rethink:stub@{supported}"
    )]
    UnsupportedVersion {
        found: String,
        import: String,
        supported: &'static str,
    },
    /// The imports or exports do not match the world `protocol-stub` or `connector`.
    #[error("the component does not match the world {world}: {reason}")]
    WorldMismatch { world: &'static str, reason: String },
    /// Instantiating the component failed (out of instance slots, `init` trapped...).
    #[error("stub {stub}: could not instantiate: {reason}")]
    Instantiate { stub: String, reason: String },
    /// The engine could not be built from the configuration.
    #[error("invalid host configuration: {0}")]
    Config(String),
    /// Reading or writing the precompiled-component cache failed.
    #[error("precompiled-component cache {path}: {source}")]
    Cache {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A refusal answered to the guest, with a reTHINK (HTTP-style) code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} {description}")]
pub struct Failure {
    pub code: u16,
    pub description: String,
}

impl Failure {
    /// A failure with `code` and `description`.
    pub fn new(code: u16, description: impl Into<String>) -> Self {
        Self {
            code,
            description: description.into(),
        }
    }
}

/// A key-value call the store could not answer (its database unreachable): the host traps the
/// instance that made it rather than answer as if the key were absent, and the message being
/// handled is answered 503 ([`LostReason::Unavailable`]); the supervisor's next instance reads
/// again.
#[derive(Debug, thiserror::Error)]
#[error("stub {stub}: its key-value store could not answer ({failure})")]
pub(crate) struct StoreUnavailable {
    pub(crate) stub: String,
    #[source]
    pub(crate) failure: Failure,
}

/// Why [`crate::StubHandle::deliver`] did not take a message; every one is 503 at the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The mailbox is full: the stub is slower than its senders.
    #[error("the stub's mailbox is full")]
    MailboxFull,
    /// The breaker is open after repeated failures.
    #[error("the stub is unavailable after repeated failures")]
    BreakerOpen,
    /// The stub was stopped.
    #[error("the stub is stopped")]
    Stopped,
}

/// Why a message accepted by a stub's mailbox was lost. The node answers its sender with
/// [`LostReason::code`], naming the stub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostReason {
    /// The call trapped (a guest bug, `unreachable`, or a host import ending the instance).
    Trap,
    /// The call ran past its deadline.
    Deadline,
    /// The instance exhausted its memory limit.
    Memory,
    /// The breaker opened before the message was handled, or the stub stopped.
    Unavailable,
    /// The stub listens on none of the message's recipients (it never asked for them).
    NotListening,
}

impl LostReason {
    /// The reTHINK code answered to the sender: 504 for a deadline, 503 when the stub is
    /// unavailable, 404 when it does not listen, 502 otherwise (the stub failed).
    pub fn code(self) -> u16 {
        match self {
            LostReason::Deadline => 504,
            LostReason::Unavailable => 503,
            LostReason::NotListening => 404,
            LostReason::Trap | LostReason::Memory => 502,
        }
    }

    /// A short label, also used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            LostReason::Trap => "trap",
            LostReason::Deadline => "deadline",
            LostReason::Memory => "memory",
            LostReason::Unavailable => "unavailable",
            LostReason::NotListening => "not-listening",
        }
    }
}

impl fmt::Display for LostReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            LostReason::Trap => "the stub trapped",
            LostReason::Deadline => "the stub ran past its call deadline",
            LostReason::Memory => "the stub exhausted its memory limit",
            LostReason::Unavailable => "the stub is unavailable",
            LostReason::NotListening => "the stub does not listen on this address",
        };
        f.write_str(text)
    }
}
