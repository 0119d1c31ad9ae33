//! [`TestNode`]: the real node, started on an ephemeral port in its own tokio runtime so that a
//! test can stop it gracefully and start it again on the same data directory. A node may run on
//! a manual clock ([`TestNode::spawn_with_clock`]) that the test advances instead of waiting. A
//! test that kills the node runs its program instead ([`super::NodeProcess`]): a real SIGKILL.

use std::net::SocketAddr;
use std::time::Duration;

use rethink_node::clock::ManualClock;
use rethink_node::{Config, RunningNode};
use tempfile::TempDir;

use super::DOMAIN;

/// A running node and the data directory it owns.
#[derive(Debug)]
pub(crate) struct TestNode {
    runtime: Option<tokio::runtime::Runtime>,
    running: Option<RunningNode>,
    addr: SocketAddr,
    config: Config,
    clock: Option<ManualClock>,
    _dir: Option<TempDir>,
}

impl TestNode {
    /// The embedded default configuration, on a fresh data directory.
    pub(crate) async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// The default configuration changed by `edit`.
    pub(crate) async fn spawn_with(edit: impl FnOnce(&mut Config)) -> Self {
        let dir = TempDir::new().expect("temp dir");
        let mut config = Config::for_tests(dir.path(), DOMAIN);
        edit(&mut config);
        let mut node = Self::start(config).await;
        node._dir = Some(dir);
        node
    }

    /// Like [`Self::spawn_with`], on a manual clock: the node's time stands still until the
    /// test calls [`Self::advance`]. It stays the node's clock across restarts.
    pub(crate) async fn spawn_with_clock(edit: impl FnOnce(&mut Config)) -> Self {
        let clock = ManualClock::new();
        let mut node = Self::spawn_with(|c| {
            c.clock = clock.clock();
            edit(c);
        })
        .await;
        node.clock = Some(clock);
        node
    }

    /// Moves the node's manual clock forward by `by`; returns once the periodic tasks made due
    /// (the session reaper, the presence sweep) have finished their pass. Panics for a node on
    /// the system clock, or if a pass does not finish within 5 s.
    pub(crate) async fn advance(&self, by: Duration) {
        let clock = self
            .clock
            .as_ref()
            .expect("a node started with spawn_with_clock");
        tokio::time::timeout(Duration::from_secs(5), clock.advance(by))
            .await
            .expect("the node's periodic tasks finish their pass");
    }

    async fn start(config: Config) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("node runtime");
        let running = runtime
            .spawn(RunningNode::start(config.clone()))
            .await
            .expect("start task")
            .expect("node starts");
        let addr = running.local_addr();
        Self {
            runtime: Some(runtime),
            running: Some(running),
            addr,
            config,
            clock: None,
            _dir: None,
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Graceful shutdown (as on SIGTERM), then a new node on the same data directory.
    pub(crate) async fn restart(mut self) -> Self {
        let running = self.running.take().expect("running");
        let runtime = self.runtime.take().expect("runtime");
        runtime.spawn(running.shutdown()).await.expect("shutdown");
        stop_runtime(runtime).await;
        self.respawn().await
    }

    async fn respawn(mut self) -> Self {
        let mut config = self.config.clone();
        // Come back on the same port so clients can reconnect to the same URL.
        config.listen = self.addr;
        let mut node = Self::start(config).await;
        node._dir = self._dir.take();
        node.clock = self.clock.take();
        node
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        drop(self.running.take());
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Drops every task of `runtime` where it stands and waits for its threads (and so its
/// listening socket) to go away.
async fn stop_runtime(runtime: tokio::runtime::Runtime) {
    tokio::task::spawn_blocking(move || {
        runtime.shutdown_timeout(std::time::Duration::from_secs(2))
    })
    .await
    .expect("runtime stops");
}
