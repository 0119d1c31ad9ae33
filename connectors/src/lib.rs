//! rethink-connectors: application services, the way Matrix operators plug in bridges.
//!
//! - [`registration`]: Synapse's YAML registration files (and our `rethink_namespaces`),
//!   validated field by field.
//! - [`namespaces`]: the users, aliases, rooms and reTHINK addresses a service claims.
//! - [`directory`]: the services of a directory, looked up by token, id and namespace.
//! - [`client`]: the node's requests to a service (transactions, user and alias queries, ping)
//!   with ruma's appservice-api types.
//! - [`pusher`]: the task that delivers a service's persisted transactions in order, with
//!   backoff; the queue itself (storage, what concerns the service) is the node's
//!   ([`pusher::TxnQueue`]).
//!
//! This crate does no storage and knows nothing of the node; the node depends on it.
//! WebAssembly connectors are not built yet.

pub mod client;
pub mod directory;
mod locks;
pub mod namespaces;
pub mod pusher;
pub mod registration;

pub use client::{AsClient, ClientError};
pub use directory::{AppService, Directory, DirectoryError};
pub use namespaces::{Kind, Namespaces};
pub use pusher::{Backoff, PushObserver, QueuedTxn, TxnQueue};
pub use registration::{Registration, RegistrationError};
