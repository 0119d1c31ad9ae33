//! Starting an instance of a stub ([`Launcher`]) and following the catalogue for an instance
//! that runs a catalogue stub by name ([`follow`]).
//!
//! When `stubs.dir` replaces that stub (a new snapshot whose stub has another sha256), the new
//! version is checked (loaded precompiled from the cache the catalogue's check filled) and
//! started under the same instance name (same session, addresses, key-value store); once its
//! `init` has run the pump is swapped to it, so new messages go to it; the old instance is then
//! stopped, which handles what its mailbox holds (it drains) before it ends. Nothing accepted is
//! dropped: every frame went to exactly one mailbox, and a connector's Matrix events the old
//! instance did not handle are given to the new one ([`Launcher::drain`]). A stub removed from the catalogue, or a
//! replacement that does not start, leaves the running version in place (logged).

use std::sync::Arc;

use rethink_stubs::catalogue::{Snapshot, Stub};
use rethink_stubs::{Host, KvStore, StubError, StubHandle, StubSpec};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::port::{LostTx, NodePort, Queue};
use super::pump::{PumpTarget, Swap};
use super::versions::{RunningVersions, Version};

/// A live instance and the version it runs.
pub(super) struct Instance {
    pub(super) handle: StubHandle,
    pub(super) version: Version,
}

/// Everything needed to start an instance of one `[stubs.run]` entry, any version.
pub(super) struct Launcher {
    pub(super) host: Host,
    pub(super) spec: StubSpec,
    pub(super) kv: Arc<dyn KvStore>,
    /// The router's queues: every version's port sends into them.
    pub(super) sends: Queue,
    pub(super) lost: LostTx,
    pub(super) versions: RunningVersions,
    /// A connector's Matrix side (`[connectors.<name>.matrix]`).
    pub(super) matrix: Option<Arc<super::NodeMatrix>>,
}

impl Launcher {
    /// Checks `bytes` (off the async threads: a compilation, or a load from the cache) and
    /// starts them; returns once the instance's first `init` has run (so its listeners are set).
    pub(super) async fn launch(
        &self,
        bytes: impl AsRef<[u8]> + Send + 'static,
        version: Version,
    ) -> Result<(Instance, PumpTarget), StubError> {
        let host = self.host.clone();
        let checked = tokio::task::spawn_blocking(move || host.check(bytes.as_ref()))
            .await
            .map_err(|e| StubError::Instantiate {
                stub: version.stub.clone(),
                reason: format!("the check did not finish: {e}"),
            })??;
        let port = Arc::new(NodePort::new(self.sends.clone(), self.lost.clone()));
        let handle = match &self.matrix {
            Some(m) => {
                let handle = self.host.start_connector(
                    &checked,
                    self.spec.clone(),
                    port.clone(),
                    Arc::clone(&self.kv),
                    Arc::clone(m) as Arc<dyn rethink_stubs::MatrixPort>,
                );
                m.attach(&self.spec.name, handle.matrix_events());
                handle
            }
            None => self.host.start(
                &checked,
                self.spec.clone(),
                port.clone(),
                Arc::clone(&self.kv),
            ),
        };
        // Its listeners are set by its first init: messages are given to it after that (or
        // after init failed), so that none is refused for arriving first.
        handle.started().await;
        self.versions.started(&version);
        let target = PumpTarget {
            port,
            mailbox: handle.mailbox(),
        };
        Ok((Instance { handle, version }, target))
    }

    /// Stops `instance` after it has handled its mailbox. A connector's Matrix events it did
    /// not handle (the one whose call ended its last instance while it was being replaced, and
    /// any still queued) go to its successor's queue, after what that one already holds: at
    /// least once, not in stream order (the successor's acknowledgements may move the stored
    /// feed position back: a restart then gives some events again, never loses one).
    pub(super) async fn drain(&self, instance: Instance) {
        let own = instance.handle.matrix_events();
        let left = instance.handle.stop_handing_over().await;
        self.versions.stopped(&instance.version);
        if left.is_empty() {
            return;
        }
        let name = &self.spec.name;
        let successor = self
            .matrix
            .as_ref()
            .and_then(|m| m.queue(name))
            .filter(|q| !q.same_queue(&own));
        let Some(queue) = successor else {
            for event in &left {
                tracing::warn!(stub = %name, position = event.position,
                    "stopped before a Matrix event was handled: it is given again at the next start");
            }
            return;
        };
        for event in left {
            let position = event.position;
            if queue.send(event).await.is_err() {
                tracing::warn!(stub = %name, position,
                    "the successor stopped before taking a Matrix event: it is given again at the next start");
            } else {
                tracing::info!(stub = %name, position,
                    "a Matrix event the replaced instance did not handle goes to the new version");
            }
        }
    }
}

/// The version label of catalogue stub `stub` run by instance `instance`.
pub(super) fn catalogue_version(instance: &str, stub: &Stub) -> Version {
    Version {
        stub: instance.to_owned(),
        source: stub.name().to_owned(),
        sha256: stub.sha256().to_owned(),
        version: stub.version().to_owned(),
    }
}

/// What [`follow`] works with.
pub(super) struct Follower {
    pub(super) launcher: Launcher,
    /// The catalogue stub's name.
    pub(super) stub: String,
    pub(super) snapshots: watch::Receiver<Arc<Snapshot>>,
    pub(super) swaps: mpsc::Sender<Swap>,
    pub(super) stop: CancellationToken,
}

/// Follows the catalogue for one instance until `stop`; returns the instance serving then.
pub(super) async fn follow(mut f: Follower, mut current: Instance) -> Instance {
    let mut warned_removed = false;
    loop {
        tokio::select! {
            () = f.stop.cancelled() => return current,
            changed = f.snapshots.changed() => if changed.is_err() { return current },
        }
        let snapshot = Arc::clone(&f.snapshots.borrow_and_update());
        let generation = snapshot.generation();
        let Some(stub) = snapshot.get(&f.stub) else {
            if !warned_removed {
                tracing::warn!(stub = %current.version.stub, source = %f.stub, version = %current.version, generation,
                    "stub removed from the catalogue: the instance keeps running its last version");
                warned_removed = true;
            }
            continue;
        };
        warned_removed = false;
        if stub.sha256() == current.version.sha256 {
            continue;
        }
        let next = catalogue_version(&current.version.stub, stub);
        tracing::info!(stub = %next.stub, from = %current.version, to = %next, generation,
            "stub replaced in the catalogue: starting the new version");
        let (new, target) = match f.launcher.launch(stub.bytes().clone(), next).await {
            Ok(started) => started,
            Err(e) => {
                tracing::error!(stub = %current.version.stub, error = %e, version = %current.version,
                    "the replacement did not start: the running version stays");
                continue;
            }
        };
        let (done, swapped) = oneshot::channel();
        let sent = f.swaps.send(Swap { target, done }).await.is_ok();
        if !sent || swapped.await.is_err() {
            // The pump has stopped (the node is stopping): the new instance never served.
            f.launcher.drain(new).await;
            return current;
        }
        let old = std::mem::replace(&mut current, new);
        tracing::info!(stub = %current.version.stub, version = %current.version, draining = %old.version,
            "new stub version serving; the old instance drains its mailbox");
        let drained = old.version.clone();
        f.launcher.drain(old).await;
        tracing::info!(stub = %drained.stub, version = %drained, "the old stub version drained and stopped");
    }
}
