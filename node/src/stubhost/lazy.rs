//! The node's one stub host ([`LazyHost`]), built the first time something needs it: a stub of
//! `stubs.dir` to check or a `[stubs.run.*]` instance to start. A node with neither builds no
//! engine. [`HostCheck`] is the catalogue's [`Validator`] for `stubs.dir`: the structural check,
//! then the host's [`Host::check`], which compiles the component (or loads it precompiled from
//! the disk cache, keyed by its sha256 and the engine) and type-checks it against the world
//! through the linker, so a component whose function types do not match is refused with
//! wasmtime's reason. The artifact it leaves in the cache is what a `[stubs.run]` instance and
//! the next start load instead of compiling again.

use std::sync::{Arc, Mutex};

use rethink_stubs::catalogue::{self, Structural, ValidationError, Validator};
use rethink_stubs::{Host, HostConfig, StubError, StubMetrics, World};

use crate::locks::lock;

/// The stub host, built on first use with these settings.
#[derive(Debug)]
pub struct LazyHost {
    config: HostConfig,
    metrics: StubMetrics,
    host: Mutex<Option<Host>>,
}

impl LazyHost {
    /// A host that will be built with `config`, its metrics in `metrics`.
    pub fn new(config: HostConfig, metrics: StubMetrics) -> Self {
        Self {
            config,
            metrics,
            host: Mutex::new(None),
        }
    }

    /// The host, built now if it was not yet (an engine, its epoch ticker and the stubs' own
    /// runtime: cheap, no compilation). A failure is returned and tried again next time.
    pub fn get(&self) -> Result<Host, StubError> {
        let mut slot = lock(&self.host);
        if let Some(host) = slot.as_ref() {
            return Ok(host.clone());
        }
        let host = Host::new(self.config.clone(), self.metrics.clone())?;
        tracing::info!("stub host started");
        *slot = Some(host.clone());
        Ok(host)
    }
}

/// The catalogue's check of `stubs.dir` components with the wasmtime host. Blocking (it
/// compiles): the catalogue calls it off the async threads.
#[derive(Debug)]
pub struct HostCheck {
    host: Arc<LazyHost>,
}

impl HostCheck {
    pub fn new(host: Arc<LazyHost>) -> Self {
        Self { host }
    }
}

impl Validator for HostCheck {
    fn check(&self, bytes: &[u8]) -> Result<catalogue::Checked, ValidationError> {
        // The cheap check first: its reasons are the more precise for a component that is not
        // a stub at all.
        Structural.check(bytes)?;
        let host = self
            .host
            .get()
            .map_err(|e| ValidationError::Host(Box::new(e)))?;
        let checked = host
            .check(bytes)
            .map_err(|e| ValidationError::Host(Box::new(e)))?;
        Ok(catalogue::Checked {
            package_version: checked.version().to_owned(),
            world: match checked.world() {
                World::ProtocolStub => catalogue::World::ProtocolStub,
                World::Connector => catalogue::World::Connector,
            },
        })
    }
}
