//! The protocol stubs the node runs (`[stubs.run.<instance>]`), with the host of crate
//! `rethink-stubs`. Each running stub is a participant of the bus like a runtime:
//!
//! - its session (`Bus::open_stub`) owns the addresses the operator gave it; messages for them
//!   land in its outbox (persisted, bounded: 503 when full);
//! - a pump task (`pump.rs`) is its in-process connection: it takes frames from the outbox and
//!   puts them in the stub's mailbox, acknowledging each once the mailbox took it (a message
//!   lost after that is answered by the router, naming the stub: 502 or 504, or 503 if still in
//!   the mailbox when the breaker opens or the stub stops during a restart backoff); while the
//!   mailbox is full the frames wait in the outbox; with the breaker open they are answered 503;
//! - the host calls the stub's `on-message` only while its outgoing queue (the router's, 256
//!   messages) has room for the answers (`NodePort`'s `BusPort::ready`, `port.rs`): the stub
//!   is not fed faster than its answers are routed; messages wait in the mailbox, then in the
//!   outbox;
//! - a router task (`router.rs`) passes what the stub sends through `Bus::authorize` and
//!   `Bus::route` with origin `Origin::Stub` (`context.transport` is `"stub"`): anti-spoofing,
//!   rate and policy apply as to any runtime (a connector's session has no rate limit: it is
//!   the operator's code answering runtimes held to theirs), and refusals come back to the stub
//!   as responses, through `on-message`;
//! - an instance that runs a catalogue stub by name (`stub = "<name>"`) has a follower task
//!   (`follow.rs`): a replacement in `stubs.dir` is started beside it, the pump swaps to it and
//!   the old instance drains its mailbox, then stops.
//!
//! Also here: the node's one stub host, built on first use, and the catalogue's check with it
//! (`lazy.rs`); the gauge of running versions (`versions.rs`); the SQLite key-value store
//! (`kv.rs`); the bus as the host sees it (`port.rs`); the Matrix side of connectors
//! (`matrix.rs`) and their durable event feed (`feed.rs`).

mod feed;
mod follow;
mod kv;
mod lazy;
mod matrix;
mod port;
mod pump;
mod router;
mod versions;

pub use kv::{PgKv, SqliteKv};
pub use lazy::{HostCheck, LazyHost};
pub use matrix::NodeMatrix;
pub use versions::{RunningVersions, Version};

use std::sync::Arc;
use std::time::Duration;

use rethink_connectors::namespaces::RethinkNamespace;
use rethink_stubs::catalogue::{Catalogue, sha256_hex};
use rethink_stubs::{HostConfig, KvStore, StubError, StubSpec};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::bus::{Bus, Claim, Origin, RouteError, Session};
use crate::config::{StubRunConfig, StubSource, StubsConfig, registration_id};
use follow::{Follower, Instance, Launcher, catalogue_version};
pub(crate) use port::{LostRx, NodePort, QueueRx, lost_queue, outgoing};
pub(crate) use pump::{AckRule, Pump, PumpTarget, frame_seq};
pub(crate) use router::{answer_error, route_stub};

/// Messages a stub may have sent and not yet routed.
const OUTGOING: usize = 256;

/// Why the configured stubs could not start.
#[derive(Debug, thiserror::Error)]
pub enum StubsError {
    #[error("stub {name}: reading {path}: {source}")]
    Read {
        name: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("stub {name}: {source}")]
    Stub {
        name: String,
        #[source]
        source: StubError,
    },
    #[error("stub {name}: the catalogue has no stub {stub:?}")]
    NotInCatalogue { name: String, stub: String },
    #[error("stub {name}: its addresses: {source}")]
    Addresses {
        name: String,
        #[source]
        source: RouteError,
    },
}

/// Who holds a running stub's live instance.
enum Owner {
    /// A component file: the instance never changes.
    Fixed(Instance),
    /// A catalogue stub: its follower holds it, and gives it back when stopped.
    Following {
        stop: CancellationToken,
        task: JoinHandle<Instance>,
    },
}

struct Running {
    name: String,
    owner: Owner,
    session: Arc<Session>,
    connection: u64,
    pump: JoinHandle<()>,
    router: JoinHandle<()>,
    cancel: CancellationToken,
}

/// The running stubs.
pub struct RunningStubs {
    bus: Bus,
    versions: RunningVersions,
    stubs: Vec<Running>,
}

impl std::fmt::Debug for RunningStubs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningStubs")
            .field("stubs", &self.stubs.len())
            .finish_non_exhaustive()
    }
}

/// The host's settings for `config`: room for two instances per configured stub (an old
/// version draining beside its replacement).
/// `gateways`: instances kept for other domains' stubs (`crate::crossdomain`), which run on
/// the same host.
pub fn host_config(config: &StubsConfig, gateways: u32) -> HostConfig {
    HostConfig {
        cache_dir: Some(config.cache_dir.clone()),
        max_instances: (config.run.len() as u32)
            .saturating_mul(2)
            .saturating_add(gateways)
            .max(1),
        ..HostConfig::default()
    }
}

/// What the running stubs use of the node.
#[derive(Debug)]
pub struct StubsDeps {
    /// The node's stub host (built here if a stub runs and nothing built it before).
    pub host: Arc<LazyHost>,
    /// Where `stub = "<name>"` instances find their stub, and its replacements.
    pub catalogue: Arc<Catalogue>,
    pub kv: Arc<dyn KvStore>,
    pub versions: RunningVersions,
    /// The Matrix side of connectors (`matrix.rs`).
    pub matrix: Arc<NodeMatrix>,
}

/// Starts every configured stub. With none configured, no engine is built.
pub async fn start(
    bus: &Bus,
    config: &StubsConfig,
    deps: StubsDeps,
) -> Result<RunningStubs, StubsError> {
    let mut running = RunningStubs {
        bus: bus.clone(),
        versions: deps.versions.clone(),
        stubs: Vec::new(),
    };
    if config.run.is_empty() {
        return Ok(running);
    }
    for run in &config.run {
        match start_one(bus, run, &deps).await {
            Ok(stub) => running.stubs.push(stub),
            Err(e) => {
                running.stop().await;
                return Err(e);
            }
        }
    }
    tracing::info!(stubs = running.stubs.len(), "protocol stubs running");
    Ok(running)
}

fn spec_of(run: &StubRunConfig) -> StubSpec {
    let mut spec = StubSpec::new(&run.name);
    spec.config = run.config.clone();
    spec.addresses = run.addresses.clone();
    spec.patterns = run.patterns.clone();
    spec.allow = run.allow.clone();
    spec.memory_bytes = run.memory_bytes;
    spec.call_timeout = run.call_timeout;
    spec.mailbox = run.mailbox;
    spec
}

async fn start_one(
    bus: &Bus,
    run: &StubRunConfig,
    deps: &StubsDeps,
) -> Result<Running, StubsError> {
    let name = run.name.clone();
    let stub_error = |source| StubsError::Stub {
        name: name.clone(),
        source,
    };
    // Subscribed before the first version is read: no replacement is missed in between.
    let mut snapshots = deps.catalogue.subscribe();
    let (bytes, version) = match &run.source {
        StubSource::Component(path) => {
            let bytes = tokio::fs::read(path)
                .await
                .map_err(|source| StubsError::Read {
                    name: name.clone(),
                    path: path.display().to_string(),
                    source,
                })?;
            let version = Version {
                stub: name.clone(),
                source: path.display().to_string(),
                sha256: sha256_hex(&bytes),
                version: String::new(),
            };
            (bytes, version)
        }
        StubSource::Builtin(connector) => {
            let bytes = rethink_stubs::builtin_connector(connector).ok_or_else(|| {
                StubsError::NotInCatalogue {
                    name: name.clone(),
                    stub: connector.clone(),
                }
            })?;
            let version = Version {
                stub: name.clone(),
                source: format!("builtin:{connector}"),
                sha256: sha256_hex(bytes),
                version: String::new(),
            };
            (bytes.to_vec(), version)
        }
        StubSource::Catalogue(stub) => {
            let snapshot = Arc::clone(&snapshots.borrow_and_update());
            let found = snapshot
                .get(stub)
                .ok_or_else(|| StubsError::NotInCatalogue {
                    name: name.clone(),
                    stub: stub.clone(),
                })?;
            (found.bytes().to_vec(), catalogue_version(&name, found))
        }
    };
    let host = deps.host.get().map_err(stub_error)?;
    let (sends, sends_rx) = outgoing(OUTGOING);
    let (lost, lost_rx) = port::lost_queue();
    let launcher = Launcher {
        host,
        spec: spec_of(run),
        kv: Arc::clone(&deps.kv),
        sends,
        lost,
        versions: deps.versions.clone(),
        matrix: deps.matrix.serves(&name).then(|| Arc::clone(&deps.matrix)),
    };
    let (instance, target) = launcher.launch(bytes, version).await.map_err(stub_error)?;
    tracing::info!(stub = %name, version = %instance.version, "stub instance started");
    let session = match bus.open_stub(&name, &run.addresses).await {
        Ok(session) => session,
        Err(source) => {
            launcher.drain(instance).await;
            return Err(StubsError::Addresses { name, source });
        }
    };
    if run.connector {
        session.exempt_from_rate_limit();
    }
    // Its patterns are claims on the bus, as a service's `rethink_namespaces` (exclusive).
    bus.set_stub_claims(
        &name,
        run.patterns
            .iter()
            .map(|p| Claim {
                service: Arc::from(registration_id(&name)),
                namespace: RethinkNamespace::from_pattern(p.clone(), true),
                session: Arc::clone(&session),
            })
            .collect(),
    );
    let connection = bus.next_connection_id();
    let cancel = bus.attach(&session, connection, None).await;
    let (swaps, swaps_rx) = mpsc::channel(1);
    let pump = tokio::spawn(
        Pump {
            bus: bus.clone(),
            session: Arc::clone(&session),
            connection,
            cancel: cancel.clone(),
            target,
            swaps: swaps_rx,
            ack: AckRule::Delivered,
        }
        .run(),
    );
    let router = tokio::spawn(router::route_stub(
        bus.clone(),
        Arc::clone(&session),
        Origin::Stub(Arc::clone(&session)),
        name.clone(),
        sends_rx,
        lost_rx,
    ));
    let owner = match &run.source {
        StubSource::Component(_) | StubSource::Builtin(_) => Owner::Fixed(instance),
        StubSource::Catalogue(stub) => {
            let stop = CancellationToken::new();
            let follower = Follower {
                launcher,
                stub: stub.clone(),
                snapshots,
                swaps,
                stop: stop.clone(),
            };
            Owner::Following {
                stop,
                task: tokio::spawn(follow::follow(follower, instance)),
            }
        }
    };
    Ok(Running {
        name,
        owner,
        session,
        connection,
        pump,
        router,
        cancel,
    })
}

impl RunningStubs {
    /// Stops every stub: no more replacements are started (one under way finishes), the
    /// pumps stop taking frames (what is left stays in the outboxes, persisted), the mailboxes
    /// are drained, then what the stubs sent is routed.
    pub async fn stop(self) {
        for s in self.stubs {
            let instance = match s.owner {
                Owner::Fixed(instance) => Some(instance),
                Owner::Following { stop, task } => {
                    stop.cancel();
                    task.await
                        .inspect_err(|e| tracing::error!(stub = %s.name, error = %e, "a stub's follower failed"))
                        .ok()
                }
            };
            s.cancel.cancel();
            let _ = s.pump.await;
            if let Some(instance) = instance {
                instance.handle.stop().await;
                self.versions.stopped(&instance.version);
            }
            // The host dropped its port with the actor: the router ends once it has routed
            // what is queued.
            if tokio::time::timeout(Duration::from_secs(5), s.router)
                .await
                .is_err()
            {
                tracing::warn!(stub = %s.name, "a stub's router did not finish within 5 s");
            }
            self.bus.detach(&s.session, s.connection);
        }
    }
}
