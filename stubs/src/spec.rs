//! Settings: [`HostConfig`] (the engine and its bounds, shared by every stub) and [`StubSpec`]
//! (one running stub: its name, configuration, addresses, network allow-list and limits).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Sees the text messages of a stub's WebSockets (the host's `net` imports), both ways, for an
/// embedder that follows the protocol the stub speaks (the node's gateway to another domain
/// follows the session protocol: `rethink-node`'s `crossdomain/tap.rs`). Called on the
/// instance's thread (`sent`) or the socket's task (`received`): it must be quick.
pub trait NetTap: Send + Sync + std::fmt::Debug {
    /// The stub wrote `text` on `socket` (the host took it for writing).
    fn sent(&self, socket: u64, text: &str);
    /// `text` arrived on `socket` (before the stub is given it).
    fn received(&self, socket: u64, text: &str);
}

/// The host's settings.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Where precompiled components are kept (created if missing); `None`: no disk cache.
    pub cache_dir: Option<PathBuf>,
    /// How many stub instances may exist at once (pooling-allocator slots).
    pub max_instances: u32,
    /// The largest memory any stub may be given (pool slot size), in bytes.
    pub max_memory_bytes: usize,
    /// The epoch tick: the granularity of call deadlines, and the longest slice a busy guest
    /// runs before it yields its thread to other stubs.
    pub tick: Duration,
    /// Worker threads of the stubs' own tokio runtime (stubs never run on the embedder's
    /// threads, so a runaway stub cannot take them).
    pub threads: usize,
    /// The nice value of those threads (Linux; 0 = the embedder's priority): a stub that spins
    /// until its call deadline then gets a small share of a contended CPU, so the embedder's
    /// own threads keep their latency.
    pub nice: i32,
    /// First restart delay after a failure; doubles per consecutive failure.
    pub restart_backoff: Duration,
    /// Largest restart delay.
    pub restart_backoff_max: Duration,
    /// Consecutive failures that open a stub's breaker.
    pub breaker_threshold: u32,
    /// How long an open breaker refuses messages before it half-opens.
    pub breaker_cooldown: Duration,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            cache_dir: None,
            max_instances: 64,
            max_memory_bytes: 256 << 20,
            tick: Duration::from_millis(10),
            threads: 2,
            nice: 10,
            restart_backoff: Duration::from_millis(50),
            restart_backoff_max: Duration::from_secs(10),
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_secs(30),
        }
    }
}

/// One running stub.
#[derive(Debug, Clone)]
pub struct StubSpec {
    /// The instance's name: in logs, metrics, the key-value namespace and lost-message answers.
    pub name: String,
    /// What `host.config` answers.
    pub config: Vec<(String, String)>,
    /// The addresses the stub may send from and listen on (and those below them).
    pub addresses: Vec<String>,
    /// Address patterns (a connector's `namespaces` with `*`) it may send from, and listen on
    /// as written (`rethink_proto::AddressPattern`, the matcher of the bus's claims).
    pub patterns: Vec<rethink_proto::AddressPattern>,
    /// Origins (`scheme://host:port`) the stub may open sockets and requests to.
    pub allow: Vec<String>,
    /// Memory limit of the instance, in bytes.
    pub memory_bytes: usize,
    /// Deadline of one export call.
    pub call_timeout: Duration,
    /// Messages waiting for the stub before `deliver` refuses (503).
    pub mailbox: usize,
    /// Timers one instance may have set.
    pub max_timers: usize,
    /// Sockets and requests one instance may have open.
    pub max_connections: usize,
    /// Key-value bounds: key bytes, value bytes, total bytes.
    pub kv_limits: (usize, usize, usize),
    /// Key-value writes are committed behind the calls, in batches, the instance's effects
    /// held until the writes before them are (`writebehind.rs`), instead of each write being
    /// one commit the call waits for. Off by default.
    pub kv_write_behind: bool,
    /// What sees the stub's WebSocket messages, if anything ([`NetTap`]).
    pub tap: Option<Arc<dyn NetTap>>,
}

impl StubSpec {
    /// A spec with the default limits: 16 MiB, 1 s per call, 256 messages.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            config: Vec::new(),
            addresses: Vec::new(),
            patterns: Vec::new(),
            allow: Vec::new(),
            memory_bytes: 16 << 20,
            call_timeout: Duration::from_secs(1),
            mailbox: 256,
            max_timers: 64,
            max_connections: 16,
            kv_limits: (256, 64 << 10, 1 << 20),
            kv_write_behind: false,
            tap: None,
        }
    }

    /// Whether `address` is one of the stub's addresses or below one, or matches one of its
    /// patterns.
    pub fn owns(&self, address: &str) -> bool {
        self.addresses.iter().any(|a| {
            address == a
                || address
                    .strip_prefix(a.as_str())
                    .is_some_and(|rest| a.ends_with('/') || rest.starts_with('/'))
        }) || self.patterns.iter().any(|p| p.matches(address))
    }

    /// Whether the stub may listen on `listener`: an address it owns, or one of its patterns
    /// as written.
    pub fn may_listen(&self, listener: &str) -> bool {
        if rethink_proto::AddressPattern::is_pattern(listener) {
            self.patterns.iter().any(|p| p.as_str() == listener)
        } else {
            self.owns(listener)
        }
    }
}
