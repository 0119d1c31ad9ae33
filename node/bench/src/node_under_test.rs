//! The node a scenario runs against, shared by the `ws` and `matrix` scenarios:
//! started by the bench or running elsewhere, its URL for a protocol, its RSS
//! (sampled periodically for the peak), and the open-file limit check.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::cli::Target;
use crate::node_proc::{self, NodeError, NodeProcess};

/// RSS sampling period (for the peak).
const RSS_SAMPLE_PERIOD: Duration = Duration::from_millis(200);

/// What a scenario speaks to the node; picks the URL of a node the bench started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// The runtime bus, `ws://host:port/ws`.
    Ws,
    /// The Matrix Client-Server API, `http://host:port`.
    Http,
}

/// The node under test: started here, or running elsewhere.
#[derive(Debug)]
pub(crate) enum NodeUnderTest {
    Started(NodeProcess),
    External { url: String, pid: Option<u32> },
}

impl NodeUnderTest {
    /// Starts a node for `target`, or refers to the running one it names.
    pub(crate) async fn resolve(target: &Target) -> Result<Self, NodeError> {
        Ok(match &target.url {
            Some(url) => NodeUnderTest::External {
                url: url.clone(),
                pid: target.node_pid,
            },
            None => NodeUnderTest::Started(
                NodeProcess::start(&target.domain, target.node_config.as_deref()).await?,
            ),
        })
    }

    /// The URL to use: the one given for an external node, else the started node's.
    pub(crate) fn url(&self, protocol: Protocol) -> String {
        match (self, protocol) {
            (NodeUnderTest::Started(p), Protocol::Ws) => p.ws_url(),
            (NodeUnderTest::Started(p), Protocol::Http) => p.http_url(),
            (NodeUnderTest::External { url, .. }, _) => url.clone(),
        }
    }

    /// The process id, where known.
    pub(crate) fn pid(&self) -> Option<u32> {
        match self {
            NodeUnderTest::Started(p) => Some(p.pid()),
            NodeUnderTest::External { pid, .. } => *pid,
        }
    }

    /// The node's RSS in MiB now, where it can be read.
    pub(crate) fn rss_mib(&self) -> Option<f64> {
        self.pid().and_then(node_proc::rss_mib)
    }

    /// A failure to report if a node the bench started has exited; stops it otherwise.
    pub(crate) fn finish(self) -> Option<String> {
        match self {
            NodeUnderTest::Started(mut process) => process
                .exit_status()
                .map(|status| format!("the node process exited during the run ({status})")),
            NodeUnderTest::External { .. } => None,
        }
    }
}

/// Warns when the open-file limit is below `needed` descriptors (plus some slack).
pub(crate) fn warn_about_open_files(needed: u64) {
    let needed = needed + 64;
    if let Some(limit) = node_proc::open_files_limit()
        && limit < needed
    {
        eprintln!(
            "warning: the open-file limit is {limit} but about {needed} descriptors are needed; \
             connecting may fail with EMFILE (raise it with `ulimit -n {}`)",
            needed.next_power_of_two()
        );
    }
}

/// Samples a process's RSS periodically to find the peak.
#[derive(Debug)]
pub(crate) struct RssSampler {
    peak_kib: Arc<AtomicU64>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RssSampler {
    /// Starts sampling process `pid` (nothing to sample without one).
    pub(crate) fn spawn(pid: Option<u32>) -> Self {
        let peak_kib = Arc::new(AtomicU64::new(0));
        let task = pid.map(|pid| {
            let peak = Arc::clone(&peak_kib);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(RSS_SAMPLE_PERIOD);
                loop {
                    tick.tick().await;
                    if let Some(kib) = node_proc::rss_kib(pid) {
                        peak.fetch_max(kib, Ordering::Relaxed);
                    }
                }
            })
        });
        RssSampler { peak_kib, task }
    }

    /// Stops sampling; the peak in MiB, if any sample was taken.
    pub(crate) fn stop(self) -> Option<f64> {
        let task = self.task?;
        task.abort();
        let kib = self.peak_kib.load(Ordering::Relaxed);
        (kib > 0).then(|| kib as f64 / 1024.0)
    }
}
