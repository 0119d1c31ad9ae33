//! rethink-node: the reTHINK messaging node.
//!
//! Hyperty runtimes connect over WebSocket (`ws`), open a session, get addresses and exchange
//! reTHINK messages through the `bus`, which keeps every frame owed to a runtime in a persisted
//! outbox (`store`) until the runtime acknowledges it. `node` starts and stops the parts;
//! `config` reads and validates settings; `auth` checks credentials; `metrics` exports counters;
//! `matrix` serves the Matrix Client-Server API.
//! See DESIGN.md (in the project's shared folder) for the architecture.
//!
//! # Layers
//!
//! Lowest first: a module imports only modules named before it in this list, so there are no
//! import cycles between the top-level modules (`tests/layering.rs` checks both). Higher layers
//! hand their handles to lower ones at construction, and types that several layers share live in
//! the lowest that needs them.
//!
//! 1. `sync`, `maps`, `metrics`: lock helpers, map helpers, counters (they import nothing here).
//! 2. `auth` (credentials), then `config` (settings; it validates `auth`'s issuer settings).
//! 3. `store` (persistence: sessions and outboxes, accounts, room events, [`store::StreamOp`]),
//!    `stream` (the Matrix stream writer), `policy` (the policy point, and the Matrix permit
//!    [`policy::MatrixPermit`]).
//! 4. `bus` (WebSocket message routing, the enforcement point for bus messages and Matrix actions),
//!    `rooms` (the Matrix room engine), `userdata` (per-user Matrix data).
//! 5. `bridge` (data objects on the bus as rooms).
//! 6. `matrix` (the Matrix Client-Server API), `ws` (the WebSocket edge), `tls`.
//! 7. `server` (the listener), then `node` (builds and starts the parts) and `cli`.
//!
//! One exception: the node handle [`node::Node`] is the state of the request handlers of `server`,
//! `ws` and `matrix`, which `node` builds.

pub mod auth;
pub mod bridge;
pub mod bus;
pub mod cli;
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
