//! Configuration: raw settings collected from defaults, an optional TOML file and `RETHINK_*`
//! environment variables (figment), then validated into [`Config`], the object the node runs with.
//!
//! Every setting is documented in `rethink.example.toml` at the repository root; a test parses it.
//! Nested settings use `__` in environment variables: `RETHINK_SESSION__RATE_PER_SECOND=100`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

pub use crate::auth::{AuthConfig, StaticToken};
use crate::clock::Clock;

mod appservices;
mod catalogue;
mod cluster;
mod connectors;
mod cross_domain;
mod rate_limit;
mod store;
mod stub_run;
pub use appservices::{AppservicesConfig, RawAppservices};
pub use catalogue::{RawStubs, StubsConfig};
pub use cluster::{ClusterConfig, RawCluster};
pub use connectors::{ConnectorMatrix, RawConnector, RawConnectorMatrix, registration_id};
pub use cross_domain::{CrossDomainConfig, RawCrossDomain};
pub use rate_limit::{RateLimitConfig, RawBucket, RawRateLimit};
pub use store::{RawStore, StoreBackend, StoreConfig, describe as describe_postgres};
pub use stub_run::{RawStubRun, StubRunConfig, StubSource};

/// A configuration that cannot be used, with the setting it concerns.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("setting `{setting}`: {problem}")]
    Invalid {
        setting: &'static str,
        problem: String,
    },
    /// An `[[auth.jwt]]` entry (its message names `auth.jwt[i].setting`).
    #[error(transparent)]
    Jwt(#[from] crate::auth::jwt::JwtConfigError),
}

fn invalid(setting: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting,
        problem: problem.into(),
    }
}

/// The settings as written by the operator, before validation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub domain: String,
    pub listen: String,
    pub data_dir: PathBuf,
    pub log: String,
    pub tls: Option<RawTls>,
    pub auth: RawAuth,
    pub session: RawSession,
    pub allocation: RawAllocation,
    pub store: RawStore,
    pub policy: RawPolicy,
    pub admin: RawAdmin,
    pub matrix: RawMatrix,
    pub server: RawServer,
    /// The URL runtimes and clients reach this node at (catalogue, `.well-known`).
    pub public_url: Option<String>,
    pub stubs: RawStubs,
    pub appservices: RawAppservices,
    /// `[cross_domain]`: routing to other domains (`config/cross_domain.rs`).
    pub cross_domain: RawCrossDomain,
    /// `[connectors.<name>]`: WebAssembly connectors, run as stubs (`config/connectors.rs`).
    pub connectors: std::collections::BTreeMap<String, RawConnector>,
    /// `[cluster]`: several nodes for one domain (`config/cluster.rs`).
    pub cluster: RawCluster,
}

/// `[server]`: the HTTP listener's limits and timeouts, and the shutdown deadline.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    pub header_timeout_ms: u64,
    pub keepalive_timeout_secs: u64,
    pub request_timeout_secs: u64,
    pub max_connections: u32,
    pub max_tls_handshakes: u32,
    pub tls_handshake_timeout_ms: u64,
    pub shutdown_timeout_secs: u64,
}

impl Default for RawServer {
    fn default() -> Self {
        let d = ServerConfig::default();
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self {
            header_timeout_ms: ms(d.header_timeout),
            keepalive_timeout_secs: d.keepalive_timeout.as_secs(),
            request_timeout_secs: d.request_timeout.as_secs(),
            max_connections: d.max_connections,
            max_tls_handshakes: d.max_tls_handshakes,
            tls_handshake_timeout_ms: ms(d.tls_handshake_timeout),
            shutdown_timeout_secs: d.shutdown_timeout.as_secs(),
        }
    }
}

/// `[matrix]`: the Matrix Client-Server API.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMatrix {
    /// The server name in user IDs (`@name:<server_name>`); default: the domain.
    pub server_name: Option<String>,
    pub registration_enabled: bool,
    pub jwt_create_accounts: bool,
    pub txn_retention_secs: u64,
    pub presence: RawPresence,
    pub rate_limit: RawRateLimit,
}

impl Default for RawMatrix {
    fn default() -> Self {
        Self {
            server_name: None,
            registration_enabled: true,
            jwt_create_accounts: true,
            txn_retention_secs: 24 * 60 * 60,
            presence: RawPresence::default(),
            rate_limit: RawRateLimit::default(),
        }
    }
}

/// `[matrix.presence]`: when presence goes idle and offline by itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawPresence {
    pub idle_timeout_ms: u64,
    pub offline_timeout_ms: u64,
}

impl Default for RawPresence {
    fn default() -> Self {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let defaults = PresenceConfig::default();
        Self {
            idle_timeout_ms: ms(defaults.idle_timeout),
            offline_timeout_ms: ms(defaults.offline_timeout),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawPolicy {
    pub dir: Option<PathBuf>,
    pub watch_interval_ms: u64,
    pub utc_offset_minutes: i32,
    pub fixed_time: Option<i64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAdmin {
    pub token: Option<String>,
}

impl Default for RawPolicy {
    fn default() -> Self {
        Self {
            dir: None,
            watch_interval_ms: 1000,
            utc_offset_minutes: 0,
            fixed_time: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAuth {
    pub allow_anonymous: bool,
    pub tokens: Vec<StaticToken>,
    /// JWT / OIDC ID token issuers (`[[auth.jwt]]`).
    pub jwt: Vec<crate::auth::jwt::RawJwtIssuer>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSession {
    pub resume_window_secs: u64,
    pub max_frame_bytes: usize,
    pub outbox_max_messages: usize,
    pub outbox_max_bytes: usize,
    pub rate_per_second: u32,
    pub rate_burst: u32,
    pub ping_interval_secs: u64,
    pub idle_timeout_secs: u64,
    pub max_recipients: usize,
    pub max_subscriptions: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAllocation {
    pub max_number: u32,
    pub max_per_session: usize,
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            domain: "localhost".into(),
            listen: "127.0.0.1:8900".into(),
            data_dir: PathBuf::from("./data"),
            log: "info".into(),
            tls: None,
            auth: RawAuth::default(),
            session: RawSession::default(),
            allocation: RawAllocation::default(),
            store: RawStore::default(),
            policy: RawPolicy::default(),
            admin: RawAdmin::default(),
            matrix: RawMatrix::default(),
            server: RawServer::default(),
            public_url: None,
            stubs: RawStubs::default(),
            appservices: RawAppservices::default(),
            cross_domain: RawCrossDomain::default(),
            connectors: Default::default(),
            cluster: RawCluster::default(),
        }
    }
}

impl Default for RawAuth {
    fn default() -> Self {
        Self {
            allow_anonymous: true,
            tokens: Vec::new(),
            jwt: Vec::new(),
        }
    }
}

impl Default for RawSession {
    fn default() -> Self {
        Self {
            resume_window_secs: 300,
            max_frame_bytes: 1024 * 1024,
            outbox_max_messages: 10_000,
            outbox_max_bytes: 16 * 1024 * 1024,
            rate_per_second: 5_000,
            rate_burst: 10_000,
            ping_interval_secs: 20,
            idle_timeout_secs: 60,
            max_recipients: 100,
            max_subscriptions: 1000,
        }
    }
}

impl Default for RawAllocation {
    fn default() -> Self {
        Self {
            max_number: 100,
            max_per_session: 1_000,
        }
    }
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub domain: String,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub log: String,
    pub tls: Option<TlsConfig>,
    pub auth: AuthConfig,
    pub session: SessionConfig,
    pub allocation: AllocationConfig,
    pub store: StoreConfig,
    pub policy: PolicyConfig,
    pub admin: AdminConfig,
    pub matrix: MatrixConfig,
    pub server: ServerConfig,
    /// `public_url` without a trailing slash; `None`: derived from `listen` and `tls`.
    pub public_url: Option<String>,
    pub stubs: StubsConfig,
    pub appservices: AppservicesConfig,
    pub cross_domain: CrossDomainConfig,
    /// `[cluster]`, when `cluster.nats_url` is set.
    pub cluster: Option<ClusterConfig>,
    /// The node's time: the system clock, or a test's [`crate::clock::ManualClock`]. Not a
    /// setting (no file or variable sets it).
    pub clock: Clock,
}

/// The HTTP listener (`crate::server`): limits, timeouts, and the shutdown deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerConfig {
    /// A request head (request line and headers) must be complete this long after the
    /// connection was accepted, or after the first byte of a later request arrived on it.
    pub header_timeout: Duration,
    /// A keep-alive connection with no request in progress is closed after this long.
    pub keepalive_timeout: Duration,
    /// The longest an ordinary request may take (not `/sync`, whose own `timeout` is bounded,
    /// nor a WebSocket session after its upgrade).
    pub request_timeout: Duration,
    /// Most connections open at once (HTTP, WebSocket, TLS handshakes); beyond it new
    /// connections wait in the listen backlog.
    pub max_connections: u32,
    /// Most TLS handshakes in progress at once; beyond it new connections wait.
    pub max_tls_handshakes: u32,
    /// How long a client may take to complete the TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// After SIGTERM, how long connections may take to close by themselves before they are
    /// dropped (the store is flushed either way).
    pub shutdown_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            max_tls_handshakes: 256,
            tls_handshake_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

/// The Matrix Client-Server API.
#[derive(Debug, Clone)]
pub struct MatrixConfig {
    /// The server name in user IDs (`@name:<server_name>`).
    pub server_name: ruma::OwnedServerName,
    /// Whether `POST /_matrix/client/v3/register` creates accounts (403 when off).
    pub registration_enabled: bool,
    /// Whether a JWT login (`org.matrix.login.jwt`) of an identity without an account creates
    /// one (403 when off).
    pub jwt_create_accounts: bool,
    /// How long a client transaction ID of a room event is remembered: a repeated `PUT` with it
    /// within this time returns the first event.
    pub txn_retention: Duration,
    pub presence: PresenceConfig,
    /// `[matrix.rate_limit]`: per-user token buckets of the client API.
    pub rate_limit: RateLimitConfig,
}

/// Presence timeouts (`crate::userdata::Presence`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresenceConfig {
    /// An `online` user without activity (a `/sync` with `set_presence=online`, or a presence
    /// `PUT`) for this long is no longer `currently_active`.
    pub idle_timeout: Duration,
    /// A user who is not `offline`, has no `/sync` in progress and has neither synced nor set
    /// their presence for this long goes `offline`.
    pub offline_timeout: Duration,
}

impl Default for PresenceConfig {
    /// Five minutes to idle, thirty seconds to offline (as Synapse).
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(5 * 60),
            offline_timeout: Duration::from_secs(30),
        }
    }
}

impl PresenceConfig {
    /// How often the timeouts are checked: a quarter of the shorter one, between 50 ms and 5 s.
    pub fn sweep_interval(&self) -> Duration {
        (self.idle_timeout.min(self.offline_timeout) / 4)
            .clamp(Duration::from_millis(50), Duration::from_secs(5))
    }
}

/// Where operator policies live and how the policy clock runs.
#[derive(Debug, Clone)]
pub struct PolicyConfig {
    /// The policy directory; `None` permits every message that passes the built-in checks.
    pub dir: Option<PathBuf>,
    /// How often the directory is checked for changes.
    pub watch_interval: Duration,
    /// Minutes east of UTC used for `context.hour` and `context.weekday`.
    pub utc_offset_minutes: i32,
    /// A pinned clock (unix seconds) for dry runs and tests.
    pub fixed_time: Option<i64>,
}

/// The admin endpoints.
#[derive(Debug, Clone, Default)]
pub struct AdminConfig {
    /// Bearer token for `/admin/*`; `None` disables the admin endpoints.
    pub token: Option<String>,
}

#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub resume_window: Duration,
    pub max_frame_bytes: usize,
    pub outbox_max_messages: usize,
    pub outbox_max_bytes: usize,
    pub rate_per_second: u32,
    pub rate_burst: u32,
    pub ping_interval: Duration,
    pub idle_timeout: Duration,
    /// Most distinct recipients (`to`) of one message; beyond it the message is refused whole.
    pub max_recipients: usize,
    /// Most addresses one session subscribes to; a subscription beyond it is refused whole.
    pub max_subscriptions: usize,
}

#[derive(Debug, Clone)]
pub struct AllocationConfig {
    pub max_number: u32,
    pub max_per_session: usize,
}

impl RawConfig {
    /// Collects settings: defaults, then the TOML file (if given), then `RETHINK_*` variables.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::figment(file, Env::prefixed("RETHINK_").split("__"))
    }

    fn figment(file: Option<&Path>, env: Env) -> Result<Self, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(RawConfig::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(invalid(
                    "config file",
                    format!("{} does not exist", path.display()),
                ));
            }
            fig = fig.merge(Toml::file(path));
        }
        fig.merge(env.ignore(&["config"]))
            .extract()
            .map_err(|e| ConfigError::Load(Box::new(e)))
    }

    /// Checks every setting and builds the runtime configuration.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let domain = self.domain.trim().to_ascii_lowercase();
        let domain_ok = !domain.is_empty()
            && domain.len() <= 253
            && domain.split('.').all(|l| {
                !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !domain_ok {
            return Err(invalid(
                "domain",
                format!("{:?} is not a domain name", self.domain),
            ));
        }
        let listen: SocketAddr = self.listen.parse().map_err(|e| {
            invalid(
                "listen",
                format!(
                    "{:?} is not an address like 127.0.0.1:8900: {e}",
                    self.listen
                ),
            )
        })?;
        let tls = match self.tls {
            None => None,
            Some(t) => {
                for (setting, path) in [("tls.cert", &t.cert), ("tls.key", &t.key)] {
                    if !path.is_file() {
                        return Err(invalid(
                            setting,
                            format!("{} is not a file", path.display()),
                        ));
                    }
                }
                Some(TlsConfig {
                    cert: t.cert,
                    key: t.key,
                })
            }
        };
        for (i, t) in self.auth.tokens.iter().enumerate() {
            if t.token.len() < 16 {
                return Err(invalid(
                    "auth.tokens",
                    format!("token #{} is shorter than 16 characters", i + 1),
                ));
            }
            if rethink_proto::AddressRef::parse(&t.subject).is_err() {
                return Err(invalid(
                    "auth.tokens",
                    format!(
                        "token #{}: subject {:?} is not an address",
                        i + 1,
                        t.subject
                    ),
                ));
            }
            // `node://<domain>` is the identity of another domain's node (bus/gateways.rs),
            // which only a verified node proof gives.
            if t.subject.starts_with("node://") {
                return Err(invalid(
                    "auth.tokens",
                    format!("token #{}: subject node://... is reserved for nodes", i + 1),
                ));
            }
        }
        let jwt = crate::auth::jwt::validate_issuers(self.auth.jwt)?;
        let s = &self.session;
        positive("session.resume_window_secs", s.resume_window_secs)?;
        positive("session.max_frame_bytes", s.max_frame_bytes as u64)?;
        positive("session.outbox_max_messages", s.outbox_max_messages as u64)?;
        positive("session.rate_per_second", u64::from(s.rate_per_second))?;
        positive("session.ping_interval_secs", s.ping_interval_secs)?;
        positive("session.max_recipients", s.max_recipients as u64)?;
        positive("session.max_subscriptions", s.max_subscriptions as u64)?;
        if s.outbox_max_bytes < s.max_frame_bytes {
            return Err(invalid(
                "session.outbox_max_bytes",
                "must be at least session.max_frame_bytes",
            ));
        }
        if s.rate_burst < s.rate_per_second.min(1) {
            return Err(invalid("session.rate_burst", "must be at least 1"));
        }
        if s.idle_timeout_secs <= s.ping_interval_secs {
            return Err(invalid(
                "session.idle_timeout_secs",
                "must be longer than session.ping_interval_secs",
            ));
        }
        positive(
            "allocation.max_number",
            u64::from(self.allocation.max_number),
        )?;
        positive(
            "allocation.max_per_session",
            self.allocation.max_per_session as u64,
        )?;
        if let Some(dir) = &self.policy.dir
            && !dir.is_dir()
        {
            return Err(invalid(
                "policy.dir",
                format!("{} is not a directory", dir.display()),
            ));
        }
        positive("policy.watch_interval_ms", self.policy.watch_interval_ms)?;
        let mut appservices = appservices::validate_appservices(&self.appservices)?;
        appservices.connectors = connectors::validate_connector_matrix(&self.connectors)?;
        if self.policy.utc_offset_minutes.abs() > 14 * 60 {
            return Err(invalid(
                "policy.utc_offset_minutes",
                "must be between -840 and 840",
            ));
        }
        if self.admin.token.as_ref().is_some_and(|t| t.len() < 16) {
            return Err(invalid("admin.token", "must be at least 16 characters"));
        }
        positive("matrix.txn_retention_secs", self.matrix.txn_retention_secs)?;
        if self.matrix.txn_retention_secs > MAX_TXN_RETENTION_SECS {
            return Err(invalid(
                "matrix.txn_retention_secs",
                format!("must be at most {MAX_TXN_RETENTION_SECS} (a year)"),
            ));
        }
        positive(
            "matrix.presence.idle_timeout_ms",
            self.matrix.presence.idle_timeout_ms,
        )?;
        positive(
            "matrix.presence.offline_timeout_ms",
            self.matrix.presence.offline_timeout_ms,
        )?;
        let rate_limit = rate_limit::validate_rate_limit(&self.matrix.rate_limit)?;
        let server = validate_server(&self.server)?;
        let store = self.store.validate()?;
        let cluster = self.cluster.validate(&store.backend)?;
        let public_url = catalogue::validate_public_url(self.public_url)?;
        let mut stubs = self.stubs.validate(&self.data_dir, &domain)?;
        let connectors = connectors::validate_connectors(&self.connectors, &domain, &stubs.run)?;
        stubs.run.extend(connectors);
        let cross_domain = self.cross_domain.validate(&self.data_dir, &domain)?;
        let server_name = self.matrix.server_name.as_deref().unwrap_or(&domain);
        let server_name = ruma::ServerName::parse(server_name).map_err(|e| {
            invalid(
                "matrix.server_name",
                format!("{server_name:?} is not a server name: {e}"),
            )
        })?;
        Ok(Config {
            domain,
            listen,
            data_dir: self.data_dir,
            log: self.log,
            tls,
            auth: AuthConfig {
                allow_anonymous: self.auth.allow_anonymous,
                tokens: self.auth.tokens,
                jwt,
            },
            session: SessionConfig {
                resume_window: Duration::from_secs(s.resume_window_secs),
                max_frame_bytes: s.max_frame_bytes,
                outbox_max_messages: s.outbox_max_messages,
                outbox_max_bytes: s.outbox_max_bytes,
                rate_per_second: s.rate_per_second,
                rate_burst: s.rate_burst.max(1),
                ping_interval: Duration::from_secs(s.ping_interval_secs),
                idle_timeout: Duration::from_secs(s.idle_timeout_secs),
                max_recipients: s.max_recipients,
                max_subscriptions: s.max_subscriptions,
            },
            allocation: AllocationConfig {
                max_number: self.allocation.max_number,
                max_per_session: self.allocation.max_per_session,
            },
            store,
            policy: PolicyConfig {
                dir: self.policy.dir,
                watch_interval: Duration::from_millis(self.policy.watch_interval_ms),
                utc_offset_minutes: self.policy.utc_offset_minutes,
                fixed_time: self.policy.fixed_time,
            },
            admin: AdminConfig {
                token: self.admin.token,
            },
            matrix: MatrixConfig {
                server_name,
                registration_enabled: self.matrix.registration_enabled,
                jwt_create_accounts: self.matrix.jwt_create_accounts,
                txn_retention: Duration::from_secs(self.matrix.txn_retention_secs),
                presence: PresenceConfig {
                    idle_timeout: Duration::from_millis(self.matrix.presence.idle_timeout_ms),
                    offline_timeout: Duration::from_millis(self.matrix.presence.offline_timeout_ms),
                },
                rate_limit,
            },
            server,
            public_url,
            stubs,
            appservices,
            cross_domain,
            cluster,
            clock: Clock::system(),
        })
    }
}

fn validate_server(s: &RawServer) -> Result<ServerConfig, ConfigError> {
    positive("server.header_timeout_ms", s.header_timeout_ms)?;
    positive("server.keepalive_timeout_secs", s.keepalive_timeout_secs)?;
    positive("server.request_timeout_secs", s.request_timeout_secs)?;
    positive("server.max_connections", u64::from(s.max_connections))?;
    positive("server.max_tls_handshakes", u64::from(s.max_tls_handshakes))?;
    positive(
        "server.tls_handshake_timeout_ms",
        s.tls_handshake_timeout_ms,
    )?;
    positive("server.shutdown_timeout_secs", s.shutdown_timeout_secs)?;
    // A semaphore holds at most this many permits.
    if s.max_connections as usize > tokio::sync::Semaphore::MAX_PERMITS {
        return Err(invalid("server.max_connections", "is too large"));
    }
    Ok(ServerConfig {
        header_timeout: Duration::from_millis(s.header_timeout_ms),
        keepalive_timeout: Duration::from_secs(s.keepalive_timeout_secs),
        request_timeout: Duration::from_secs(s.request_timeout_secs),
        max_connections: s.max_connections,
        max_tls_handshakes: s.max_tls_handshakes,
        tls_handshake_timeout: Duration::from_millis(s.tls_handshake_timeout_ms),
        shutdown_timeout: Duration::from_secs(s.shutdown_timeout_secs),
    })
}

/// The longest `matrix.txn_retention_secs`.
const MAX_TXN_RETENTION_SECS: u64 = 366 * 24 * 60 * 60;

fn positive(setting: &'static str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        Err(invalid(setting, "must be greater than 0"))
    } else {
        Ok(())
    }
}

impl Config {
    /// The embedded default with a given data directory and listen address (tests, benchmarks).
    pub fn for_tests(data_dir: &Path, domain: &str) -> Self {
        let raw = RawConfig {
            domain: domain.into(),
            listen: "127.0.0.1:0".into(),
            data_dir: data_dir.to_path_buf(),
            ..RawConfig::default()
        };
        match raw.validate() {
            // Tests send faster than any client: the limiter is on only where a test says so.
            Ok(mut c) => {
                c.matrix.rate_limit = RateLimitConfig::off();
                c
            }
            Err(e) => panic!("the test configuration is invalid: {e}"),
        }
    }
}

#[cfg(test)]
mod tests;
