//! The node's policy point: it loads the operator's policy directory into a
//! `rethink_policy::Engine`, swaps it atomically when the directory changes (file watch by polling,
//! SIGHUP, `POST /admin/policy/reload`), refuses an invalid set while keeping the previous one,
//! and builds the facts of each decision ([`facts`]). The decision itself is pure and lives in the
//! `rethink-policy` crate; the enforcement point is `bus::permit`. Matrix actions are decided
//! here too ([`matrix`]: the query and the [`MatrixPermit`] the room engine requires).

pub mod dry_run;
pub mod facts;
mod loader;
pub mod matrix;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rethink_policy::Engine;
use tokio_util::sync::CancellationToken;

pub use facts::PolicyClock;
pub use loader::{PolicyLoadError, fingerprint, load_dir};
pub use matrix::{MatrixDenied, MatrixPermit, MatrixRequest};

use crate::config::PolicyConfig;
use crate::locks::{read, write};
use crate::metrics::Metrics;

/// The current policy set, if a directory is configured.
#[derive(Debug)]
pub struct PolicyPoint {
    dir: Option<PathBuf>,
    engine: RwLock<Option<Arc<Engine>>>,
    clock: PolicyClock,
    metrics: Arc<Metrics>,
    /// Counts the successful reloads (for those following them: a cluster's other nodes).
    reloaded: tokio::sync::watch::Sender<u64>,
}

impl PolicyPoint {
    /// Loads the configured directory. An invalid set at start is an error: the node does not
    /// start with policies it cannot enforce.
    pub fn new(config: &PolicyConfig, metrics: Arc<Metrics>) -> Result<Self, PolicyLoadError> {
        let engine = match &config.dir {
            Some(dir) => Some(Arc::new(load_dir(dir)?)),
            None => None,
        };
        if let (Some(dir), Some(e)) = (&config.dir, &engine) {
            tracing::info!(dir = %dir.display(), policies = e.policy_count(), "policies loaded");
        }
        Ok(Self {
            dir: config.dir.clone(),
            engine: RwLock::new(engine),
            clock: PolicyClock::new(config.utc_offset_minutes, config.fixed_time),
            metrics,
            reloaded: tokio::sync::watch::Sender::new(0),
        })
    }

    /// The engine in force, or `None` when no policy directory is configured (permit all that
    /// passes the built-in checks).
    pub fn engine(&self) -> Option<Arc<Engine>> {
        read(&self.engine).clone()
    }

    /// A receiver that sees each successful reload from now on.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.reloaded.subscribe()
    }

    /// The policy directory, when one is configured.
    pub fn dir(&self) -> Option<&std::path::Path> {
        self.dir.as_deref()
    }

    /// The clock decisions read their time facts from.
    pub fn clock(&self) -> &PolicyClock {
        &self.clock
    }

    /// Reloads the directory. On success the new set replaces the old one for every message
    /// decided from now on; on failure the old set stays. Returns the number of policies.
    pub fn reload(&self) -> Result<usize, PolicyLoadError> {
        let Some(dir) = &self.dir else {
            return Err(PolicyLoadError::NotConfigured);
        };
        match load_dir(dir) {
            Ok(engine) => {
                let count = engine.policy_count();
                *write(&self.engine) = Some(Arc::new(engine));
                self.metrics.policy_reload(true);
                self.reloaded.send_modify(|n| *n += 1);
                tracing::info!(dir = %dir.display(), policies = count, "policies reloaded");
                Ok(count)
            }
            Err(e) => {
                self.metrics.policy_reload(false);
                tracing::error!(error = %e, "policy set refused; the previous set stays in force");
                Err(e)
            }
        }
    }

    /// Polls the directory for changes and reloads; also reloads on SIGHUP.
    pub async fn watch(
        self: Arc<Self>,
        interval: std::time::Duration,
        shutdown: CancellationToken,
    ) {
        let Some(dir) = self.dir.clone() else {
            return;
        };
        let mut last: Vec<(String, SystemTime, u64)> = fingerprint(&dir);
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut hangup = sighup();
        loop {
            let by_signal = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => false,
                _ = next_hangup(&mut hangup) => true,
            };
            let now = fingerprint(&dir);
            if by_signal || now != last {
                last = now;
                let _ = self.reload();
            }
        }
    }
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = Option<()>;

#[cfg(unix)]
fn sighup() -> Hangup {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}

#[cfg(not(unix))]
fn sighup() -> Hangup {
    None
}

#[cfg(unix)]
async fn next_hangup(h: &mut Hangup) {
    match h {
        Some(sig) => {
            sig.recv().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn next_hangup(_: &mut Hangup) {
    std::future::pending().await
}
