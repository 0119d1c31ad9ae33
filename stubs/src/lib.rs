//! rethink-stubs: the host of reTHINK protocol stubs, WebAssembly components of the WIT
//! package `rethink:stub` (`wit/stub.wit`), run in wasmtime.
//!
//! - [`Host`] (`host.rs`): the engine (pooling allocator, epoch interruption), the linker,
//!   [`Host::check`] (compile or load precompiled from the cache in `cache.rs`, version and
//!   world checks) and [`Host::start`].
//! - `actor.rs`: one running stub ([`StubHandle`]): its instance, mailbox and supervisor;
//!   `direct.rs`: [`DirectStub`], an instance called directly (benchmarks, tools).
//! - `state.rs`: an instance's store data and the `bus`/`host`/`appservice` imports;
//!   `net.rs`: host-mediated WebSocket and HTTP; `envelope.rs`: the envelope across the
//!   boundary; `bindings.rs`: the generated WIT bindings.
//! - [`tls`]: the TLS client configuration of every outgoing connection of the node (stubs'
//!   `net`, key fetches, application services); only application services add the operator's
//!   extra roots.
//! - [`BusPort`], [`KvStore`] (`port.rs`): what the embedder (the node) provides;
//!   `writebehind.rs`: a stub's key-value writes committed in batches behind its calls
//!   ([`StubSpec::kv_write_behind`]), its effects held until they are;
//!   [`MatrixPort`] (`appservice.rs`): a connector's Matrix side, and [`MatrixEvents`], the
//!   bounded queue of Matrix events for its `on-event`.
//! - [`StubMetrics`] (`metrics.rs`), [`HostConfig`] and [`StubSpec`] (`spec.rs`), the errors
//!   (`error.rs`).
//! - `builtin.rs`: the connectors built in ([`builtin_connector`]: the domain registry, the archive).
//! - [`catalogue`]: the stubs this node serves (the built-in `default` and the operator's
//!   `stubs.dir`), checked, reloaded on change, and their reTHINK descriptors.

mod actor;
mod appservice;
mod bindings;
mod builtin;
mod cache;
pub mod catalogue;
mod direct;
mod envelope;
mod error;
mod host;
pub mod metrics;
mod net;
mod port;
mod spec;
mod state;
pub mod tls;
mod writebehind;

pub use actor::{Mailbox, StubHandle};
pub use appservice::{EventOutcome, MAX_EVENT_TRIES, MatrixEvent, MatrixEvents, MatrixPort};
pub use builtin::{ARCHIVE_CONNECTOR, BUILTIN_CONNECTORS, REGISTRY_CONNECTOR, builtin_connector};
pub use direct::DirectStub;
pub use error::{Failure, LostReason, Refused, StubError};
pub use host::{Checked, Host, WIT_VERSION, World};
pub use metrics::{BreakerState, StubMetrics};
pub use port::{BoxFuture, BusPort, FailingKv, KvBatches, KvOp, KvStore, MemoryKv, within_quota};
pub use spec::{HostConfig, NetTap, StubSpec};
