//! The enforcement point: no message is routed without a [`Permit`], and only
//! [`Bus::authorize`] makes one (the linkerd2-proxy `Permitted<T>` pattern, DESIGN.md section 6).
//!
//! Today the decision applies the built-in checks that are never left to policy: anti-spoofing
//! (a session sends only from its runtime URL or its allocated addresses, and paths below them)
//! and the per-session message rate. The Cargo crate `rethink-policy` will add the operator's
//! Cedar decision here, so every origin (WebSocket now; Matrix, stubs, connectors, other domains
//! later) passes the same check.

use std::sync::Arc;

use rethink_proto::Envelope;

use super::Bus;
use super::session::Session;

/// Where a message entered the node.
#[derive(Debug, Clone)]
pub enum Origin {
    /// A hyperty runtime's WebSocket session.
    Session(Arc<Session>),
}

impl Origin {
    /// The session the message came from, if it came from one.
    pub fn session(&self) -> Option<&Arc<Session>> {
        match self {
            Origin::Session(s) => Some(s),
        }
    }
}

/// Why a message is refused before routing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("sender {from} is not an address of this runtime")]
    Spoofed { from: String },
    #[error("message rate limit exceeded")]
    RateLimited,
}

/// Proof that a message passed the enforcement point. Only [`Bus::authorize`] creates one, and
/// [`Bus::route`] requires one.
#[derive(Debug)]
pub struct Permit<'a> {
    pub(super) envelope: &'a Envelope,
    pub(super) origin: &'a Origin,
}

impl Bus {
    /// Decides whether `envelope`, arriving from `origin`, may be routed.
    pub fn authorize<'a>(
        &self,
        envelope: &'a Envelope,
        origin: &'a Origin,
    ) -> Result<Permit<'a>, Denied> {
        match origin {
            Origin::Session(session) => {
                let owner = self.inner.book.owner_of(envelope.from());
                if !owner.is_some_and(|o| Arc::ptr_eq(&o, session)) {
                    return Err(Denied::Spoofed {
                        from: envelope.from().to_owned(),
                    });
                }
                if !session.take_rate() {
                    return Err(Denied::RateLimited);
                }
            }
        }
        Ok(Permit { envelope, origin })
    }
}
