//! rethink-node: the reTHINK messaging node.
//!
//! Hyperty runtimes connect over WebSocket, open a session, get addresses and exchange reTHINK
//! messages through the bus, which keeps every frame owed to a runtime in a persisted outbox until
//! the runtime acknowledges it. The same node is a Matrix homeserver (Client-Server API), and a
//! data object `comm://<domain>/<id>` is a room. `ARCHITECTURE.md` at the repository root
//! describes the parts and the message paths. The modules:
//!
//! - [`node`]: [`Node`], the handle every part receives, and [`RunningNode`], start and
//!   graceful shutdown.
//! - [`config`]: settings from defaults, a TOML file and `RETHINK_*` variables, validated.
//! - [`clock`]: the node's time, a handle that tests control (a manual clock).
//! - [`server`]: the HTTP router and listener; [`tls`]: the TLS listener for `wss://`.
//! - [`ws`]: the WebSocket edge: the session protocol and the one error-to-code mapping.
//! - [`bus`]: sessions, outboxes, the address book, the enforcement point, routing and the
//!   node's own services (address allocation, subscriptions).
//! - [`auth`]: runtime credentials (static tokens, JWT / OIDC ID tokens).
//! - [`policy`]: the operator's Cedar policies loaded and hot-reloaded, and the facts of a
//!   decision (the decision itself is `rethink-policy`).
//! - [`store`]: storage traits, the SQLite backend and the session group-commit writer.
//! - [`stream`]: the Matrix stream writer (positions, group commits, change marks, `/sync`
//!   wake-ups).
//! - [`rooms`]: the Matrix room engine (version 11 events, signing, auth rules, state, caches).
//! - [`userdata`]: per-user Matrix data (filters, profiles, account data, devices, keys,
//!   to-device, receipts, presence, typing).
//! - [`matrix`]: the Client-Server API: the request extractor, the handlers, the one
//!   error-to-`errcode` mapping, accounts.
//! - [`bridge`]: data objects on the bus as Matrix rooms, both ways.
//! - [`stubhost`]: the protocol stubs the node runs (`[stubs.run.*]`), participants of the bus.
//! - [`crossdomain`]: routing to other domains through their own protocol stubs, and node
//!   authentication.
//! - [`appservice`]: Matrix application services: registrations, transaction queues, queries.
//! - [`cluster`]: several nodes serving one domain (PostgreSQL and NATS).
//! - [`metrics`]: the node's counters and their Prometheus text.
//! - [`cli`]: the command line of the `rethink-node` binary (serve, policy tools).
//! - `locks` (private): lock helpers that ignore poisoning; `maps` (private): map updates by a
//!   borrowed key.
//!
//! # Layers
//!
//! Lowest first: a module imports only modules named before it in this list, so there are no
//! import cycles between the top-level modules (`tests/layering.rs` checks both). Higher layers
//! hand their handles to lower ones at construction, and types that several layers share live in
//! the lowest that needs them.
//!
//! 1. `locks`, `maps`, `metrics`, `clock`, `strict_json`: lock helpers, map helpers, counters, the
//!    node's time, the check that JSON text is Unicode (they import nothing here).
//! 2. `auth` (credentials), then `config` (settings; it validates `auth`'s issuer settings).
//! 3. `store` (persistence: sessions and outboxes, accounts, room events, [`store::StreamOp`]),
//!    `stream` (the Matrix stream writer), `policy` (the policy point, and the Matrix permit
//!    [`policy::MatrixPermit`]).
//! 4. `bus` (WebSocket message routing, the enforcement point for bus messages and Matrix actions),
//!    `rooms` (the Matrix room engine), `userdata` (per-user Matrix data).
//! 5. `bridge` (data objects on the bus as rooms), `appservice` (application services).
//! 6. `matrix` (the Matrix Client-Server API), `ws` (the WebSocket edge), `tls`, `stubhost`
//!    (protocol stubs run on the bus, answered with the codes of the WebSocket edge),
//!    `crossdomain` (other domains' stubs run on the bus, the same way), `cluster` (several
//!    nodes for one domain: the bus's handle on the other nodes; refusals on arrival answered
//!    with the codes of the WebSocket edge).
//! 7. `server` (the listener), then `node` (builds and starts the parts) and `cli`.
//!
//! One exception: the node handle [`node::Node`] is the state of the request handlers of `server`,
//! `ws`, `matrix` and `crossdomain` (its challenge endpoint), which `node` builds, and `stubhost`
//! is given it once the node is built (its Matrix side calls the Matrix router, its connectors'
//! feeds read the node's stream). No other module may name it (`tests/layering.rs`).

pub mod appservice;
pub mod auth;
pub mod bridge;
pub mod bus;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod crossdomain;
mod locks;
mod maps;
pub mod matrix;
pub mod metrics;
pub mod node;
pub mod policy;
pub mod rooms;
pub mod server;
pub mod store;
pub mod stream;
mod strict_json;
pub mod stubhost;
pub mod tls;
pub mod userdata;
pub mod ws;

pub use config::{Config, RawConfig};
pub use node::{Node, NodeError, RunningNode};
