//! Trust in other reTHINK domains, for routing across domains (the "trapezoid"): node A reaches
//! node B through B's own protocol stub, which A downloads, verifies and runs.
//!
//! This crate owns, without any I/O of its own (the embedder gives it a [`Fetch`]) and without
//! depending on the node:
//!
//! - [`Peers`]: where a domain's node is (the static map `cross_domain.peers`, else
//!   `https://<domain>`), and the URLs of its catalogue descriptor and server keys;
//! - [`KeyCache`]: each domain's ed25519 server keys as it publishes them in the Matrix
//!   server-key format at `/_matrix/key/v2/server` (self-signature checked), fetched on first
//!   use and refreshed on an unknown key id (at most once per [`KeyCache::MIN_REFRESH`]), and
//!   the check of a Matrix JSON signature by a domain;
//! - [`StubCache`]: a domain's `default` stub: its descriptor's signature, the component's
//!   sha256, kept in memory and on disk with the descriptor's version (a changed version or hash
//!   is fetched again, an unchanged one never);
//! - [`proof`]: node authentication: challenges a receiving node hands out ([`Challenges`]), the
//!   signed proof a connecting node presents as its session token, and its verification.
//!
//! Every failure is a [`CrossDomainError`], which says whether it is the other domain's fault
//! (502), a timeout (504) or ours.

mod error;
mod fetch;
mod keys;
mod peers;
pub mod proof;
mod stubs;

pub use error::CrossDomainError;
pub use fetch::{Fetch, FetchFailure, FetchFuture};
pub use keys::KeyCache;
pub use peers::{PeerUrls, Peers};
pub use proof::{Challenge, Challenges, NodeProof};
pub use stubs::{StubCache, VerifiedStub};

#[cfg(test)]
mod testing;
