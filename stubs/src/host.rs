//! [`Host`]: the wasmtime engine (pooling allocator, epoch interruption with its ticker
//! thread), the linker with every import of the worlds, [`Host::check`] (compile or load from
//! the cache, read the WIT version, type-check the world) and [`Host::start`].

use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::Instant;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, InstancePre, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::actor::{self, StubHandle};
use crate::appservice::MatrixPort;
use crate::bindings::{connector, protocol_stub};
use crate::cache;
use crate::error::StubError;
use crate::metrics::StubMetrics;
use crate::port::{BusPort, KvStore};
use crate::spec::{HostConfig, StubSpec};
use crate::state::{State, StubCtx};
use crate::writebehind::WriteBehind;

/// The version of `rethink:stub` this host serves (any 0.1.x, by WIT's semver rules).
pub const WIT_VERSION: &str = "0.1.0";
const WIT_PACKAGE: &str = "rethink:stub/";

/// Which world a component implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    ProtocolStub,
    Connector,
}

impl World {
    /// The world's WIT name.
    pub fn as_str(self) -> &'static str {
        match self {
            World::ProtocolStub => "protocol-stub",
            World::Connector => "connector",
        }
    }
}

#[derive(Clone)]
pub(crate) enum Pre {
    Stub(protocol_stub::ProtocolStubPre<State>),
    Connector(connector::ConnectorPre<State>),
}

/// A component that compiled and matches a world: ready to start, cheap to clone.
#[derive(Clone)]
pub struct Checked {
    sha256: [u8; 32],
    world: World,
    version: String,
    pub(crate) pre: Pre,
    /// Whether the precompiled artifact came from the disk cache.
    from_cache: bool,
}

impl std::fmt::Debug for Checked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checked")
            .field("world", &self.world)
            .field("version", &self.version)
            .field("from_cache", &self.from_cache)
            .finish_non_exhaustive()
    }
}

impl Checked {
    /// The sha256 of the component's bytes.
    pub fn sha256(&self) -> &[u8; 32] {
        &self.sha256
    }
    /// The world it implements.
    pub fn world(&self) -> World {
        self.world
    }
    /// The `rethink:stub` version it was built against.
    pub fn version(&self) -> &str {
        &self.version
    }
    /// Whether it was loaded precompiled from the disk cache.
    pub fn from_cache(&self) -> bool {
        self.from_cache
    }
}

/// Owns the stubs' runtime: shut down (without blocking) when the last host or stub handle
/// goes.
#[derive(Debug)]
pub(crate) struct RuntimeOwner(Option<tokio::runtime::Runtime>);

impl Drop for RuntimeOwner {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

pub(crate) struct Shared {
    pub(crate) engine: Engine,
    /// Where actors, timers and network tasks run.
    pub(crate) runtime: tokio::runtime::Handle,
    linker: Linker<State>,
    pub(crate) config: HostConfig,
    pub(crate) metrics: StubMetrics,
    fingerprint: String,
    /// Dropping it stops the epoch ticker.
    _ticker: std_mpsc::Sender<()>,
}

/// The stub host: cheap to clone. The epoch ticker runs while a clone or a stub lives.
#[derive(Clone)]
pub struct Host {
    shared: Arc<Shared>,
    runtime: Arc<RuntimeOwner>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

fn engine(config: &HostConfig) -> Result<Engine, StubError> {
    let n = config.max_instances.max(1);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(n)
        .total_core_instances(n * 16)
        .total_memories(n * 2)
        .total_tables(n * 8)
        .total_stacks(n)
        .max_core_instances_per_component(16)
        .max_memories_per_component(2)
        .max_tables_per_component(8)
        .max_memory_size(config.max_memory_bytes);
    let mut c = Config::new();
    c.wasm_component_model(true)
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&c).map_err(|e| StubError::Config(e.to_string()))
}

fn linker(engine: &Engine) -> Result<Linker<State>, StubError> {
    let mut linker = Linker::<State>::new(engine);
    let err = |e: wasmtime::Error| StubError::Config(format!("linking the host imports: {e}"));
    protocol_stub::ProtocolStub::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)
        .map_err(err)?;
    connector::rethink::stub::appservice::add_to_linker::<State, HasSelf<State>>(
        &mut linker,
        |s| s,
    )
    .map_err(err)?;
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(err)?;
    Ok(linker)
}

fn spawn_ticker(engine: Engine, tick: std::time::Duration) -> std_mpsc::Sender<()> {
    let (tx, rx) = std_mpsc::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("stub-epoch".into())
        .spawn(move || {
            while let Err(std_mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(tick) {
                engine.increment_epoch();
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "the stub epoch ticker did not start: call deadlines will not fire");
    }
    tx
}

/// What each stub worker thread runs at its start: lowers its scheduling priority to `nice`
/// (Linux). A failure is logged; the thread runs at the embedder's priority.
fn lower_priority(nice: i32) -> impl Fn() + Send + Sync + 'static {
    move || {
        if nice == 0 {
            return;
        }
        #[cfg(target_os = "linux")]
        if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), nice) {
            tracing::warn!(error = %e, nice, "a stub worker thread keeps its priority");
        }
    }
}

impl Host {
    /// Builds the engine and linker and starts the epoch ticker. `metrics` is where the
    /// per-stub metrics go (see [`StubMetrics::new`]).
    pub fn new(config: HostConfig, metrics: StubMetrics) -> Result<Self, StubError> {
        let engine = engine(&config)?;
        let linker = linker(&engine)?;
        let fingerprint = cache::fingerprint(&engine);
        let ticker = spawn_ticker(engine.clone(), config.tick);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.threads.max(1))
            .thread_name("stub-worker")
            .on_thread_start(lower_priority(config.nice))
            .enable_all()
            .build()
            .map_err(|e| StubError::Config(format!("the stubs' runtime: {e}")))?;
        let handle = runtime.handle().clone();
        let owner = Arc::new(RuntimeOwner(Some(runtime)));
        Ok(Self {
            runtime: owner,
            shared: Arc::new(Shared {
                runtime: handle,
                engine,
                linker,
                config,
                metrics,
                fingerprint,
                _ticker: ticker,
            }),
        })
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The engine (for tools that precompile).
    pub fn engine(&self) -> &Engine {
        &self.shared.engine
    }

    /// Compiles `bytes` (or loads its precompiled artifact from the cache), then checks the
    /// `rethink:stub` version it imports and that it implements `protocol-stub` or `connector`.
    pub fn check(&self, bytes: &[u8]) -> Result<Checked, StubError> {
        let sha256: [u8; 32] = Sha256::digest(bytes).into();
        let (component, from_cache) = self.component(bytes, &sha256)?;
        self.check_component(component, sha256, from_cache)
    }

    fn component(&self, bytes: &[u8], sha256: &[u8; 32]) -> Result<(Component, bool), StubError> {
        let s = &self.shared;
        let path = s
            .config
            .cache_dir
            .as_deref()
            .map(|dir| cache::path(dir, sha256, &s.fingerprint));
        if let Some(c) = path.as_deref().and_then(|p| cache::load(&s.engine, p)) {
            return Ok((c, true));
        }
        let started = Instant::now();
        let component =
            Component::new(&s.engine, bytes).map_err(|e| StubError::Compile(format!("{e:#}")))?;
        tracing::debug!(elapsed = ?started.elapsed(), "stub component compiled");
        if let Some(p) = path {
            cache::store(&component, &p)?;
        }
        Ok((component, false))
    }

    fn check_component(
        &self,
        component: Component,
        sha256: [u8; 32],
        from_cache: bool,
    ) -> Result<Checked, StubError> {
        let engine = &self.shared.engine;
        let ty = component.component_type();
        let mut version = None;
        let mut appservice = false;
        for (name, _) in ty.imports(engine) {
            let Some(rest) = name.strip_prefix(WIT_PACKAGE) else {
                continue;
            };
            let (iface, v) = rest.split_once('@').unwrap_or((rest, ""));
            appservice |= iface == "appservice";
            if !v.starts_with("0.1.") {
                return Err(StubError::UnsupportedVersion {
                    found: if v.is_empty() {
                        "(none)".into()
                    } else {
                        v.into()
                    },
                    import: name.to_owned(),
                    supported: WIT_VERSION,
                });
            }
            version.get_or_insert_with(|| v.to_owned());
        }
        let version = version.ok_or(StubError::NotAStub)?;
        let on_event = ty.exports(engine).any(|(name, _)| name == "on-event");
        let world = if appservice || on_event {
            World::Connector
        } else {
            World::ProtocolStub
        };
        let mismatch = |e: wasmtime::Error| StubError::WorldMismatch {
            world: world.as_str(),
            reason: format!("{e:#}"),
        };
        let pre: InstancePre<State> = self
            .shared
            .linker
            .instantiate_pre(&component)
            .map_err(mismatch)?;
        let pre = match world {
            World::Connector => {
                Pre::Connector(connector::ConnectorPre::new(pre).map_err(mismatch)?)
            }
            World::ProtocolStub => {
                Pre::Stub(protocol_stub::ProtocolStubPre::new(pre).map_err(mismatch)?)
            }
        };
        Ok(Checked {
            sha256,
            world,
            version,
            pre,
            from_cache,
        })
    }

    /// Starts `checked` as the stub `spec`: an actor task (on the stubs' own runtime) with
    /// one instance, restarted by its supervisor after a failure.
    pub fn start(
        &self,
        checked: &Checked,
        spec: StubSpec,
        port: Arc<dyn BusPort>,
        kv: Arc<dyn KvStore>,
    ) -> StubHandle {
        self.start_with(checked, spec, port, kv, None)
    }

    /// Starts `checked` as a connector: like [`Host::start`], and its `appservice` imports act
    /// through `matrix`; [`StubHandle::matrix_events`] feeds its `on-event`.
    pub fn start_connector(
        &self,
        checked: &Checked,
        spec: StubSpec,
        port: Arc<dyn BusPort>,
        kv: Arc<dyn KvStore>,
        matrix: Arc<dyn MatrixPort>,
    ) -> StubHandle {
        self.start_with(checked, spec, port, kv, Some(matrix))
    }

    fn start_with(
        &self,
        checked: &Checked,
        spec: StubSpec,
        port: Arc<dyn BusPort>,
        kv: Arc<dyn KvStore>,
        matrix: Option<Arc<dyn MatrixPort>>,
    ) -> StubHandle {
        let (wb, writer) = if spec.kv_write_behind {
            let (wb, writer) = WriteBehind::new(&spec.name, Arc::clone(&kv), spec.kv_limits.2);
            (Some(wb), Some(self.shared.runtime.spawn(writer)))
        } else {
            (None, None)
        };
        let ctx = Arc::new(StubCtx {
            spec,
            port,
            kv,
            matrix,
            started: Instant::now(),
            wb,
        });
        actor::spawn(
            Arc::clone(&self.shared),
            Arc::clone(&self.runtime),
            checked.pre.clone(),
            ctx,
            writer,
        )
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn worker_threads_run_at_the_configured_nice() {
        let nice = std::thread::spawn(|| {
            super::lower_priority(7)();
            rustix::process::getpriority_process(Some(rustix::thread::gettid()))
        })
        .join()
        .expect("thread")
        .expect("getpriority");
        assert_eq!(nice, 7);
    }
}
