//! rethink-node: the reTHINK messaging node.
//!
//! Hyperty runtimes connect over WebSocket (`ws`), open a session, get addresses and exchange
//! reTHINK messages through the `bus`, which keeps every frame owed to a runtime in a persisted
//! outbox (`store`) until the runtime acknowledges it. `node` starts and stops the parts;
//! `config` reads and validates settings; `clock` is the node's time (a handle that tests
//! control); `auth` checks credentials; `metrics` exports counters; `matrix` serves the Matrix
//! Client-Server API.
//! See DESIGN.md (in the project's shared folder) for the architecture.

pub mod auth;
pub mod bridge;
pub mod bus;
pub mod cli;
pub mod clock;
pub mod config;
mod maps;
pub mod matrix;
pub mod metrics;
pub mod node;
pub mod policy;
pub mod rooms;
pub mod server;
pub mod store;
pub mod stream;
mod sync;
pub mod tls;
pub mod userdata;
pub mod ws;

pub use config::{Config, RawConfig};
pub use node::{Node, NodeError, RunningNode};
