//! Command line: raw clap arguments, then validated into the configuration the
//! scenarios run with.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand, error::ErrorKind};

pub(crate) use crate::attack::AttackConfig;

/// Load generator for rethink-node.
#[derive(Debug, Parser)]
#[command(name = "rethink-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: RawCommand,
}

#[derive(Debug, Subcommand)]
enum RawCommand {
    /// WebSocket bus: runtimes in pairs send PING messages to each other's hyperty
    /// (or, with --idle, open sessions that stay idle and report the node's RSS).
    Ws(WsArgs),
    /// Matrix Client-Server API: users in rooms, each parked in a long-poll /sync, while
    /// concurrent senders PUT m.room.message events; send and send-to-sync latencies.
    Matrix(MatrixArgs),
    /// Matrix application service on loopback: the bench is the service; events sent at a
    /// fixed rate, then a burst; commit-to-transaction latency and transactions per second.
    Appservice(crate::appservice_load::AppserviceArgs),
    /// The domain registry connector: runtimes keep lookups outstanding through the bus;
    /// lookups per second and their round trip.
    Registry(crate::registry_load::RegistryArgs),
    /// Two nodes of two domains (A and B, each naming the other in `cross_domain.peers`):
    /// runtimes on A send PINGs to runtimes on B through B's own stub run by A; throughput,
    /// end-to-end latency and each node's CPU per message.
    Crossdomain(crate::crossdomain_load::CrossArgs),
    /// Two nodes of one domain on one PostgreSQL and one NATS (started here, or given):
    /// runtimes on node 1 send PINGs to runtimes on node 2 (or, with --local, on node 1);
    /// throughput, end-to-end latency and each node's CPU per message.
    Cluster(crate::cluster_load::ClusterArgs),
}

#[derive(Debug, Args)]
struct MatrixArgs {
    /// Target a running node's HTTP API (e.g. http://127.0.0.1:9000) instead of starting one.
    #[arg(long)]
    url: Option<String>,
    /// With --url: the node's process id, to report its RSS.
    #[arg(long, requires = "url")]
    node_pid: Option<u32>,
    /// The node's domain (the bench starts its own node with this domain).
    #[arg(long, default_value = "bench.local")]
    domain: String,
    /// Users to register; user u joins room u mod --rooms, and every user syncs.
    #[arg(long, default_value_t = 100)]
    users: usize,
    /// Rooms to create (public, each created by its first user).
    #[arg(long, default_value_t = 10)]
    rooms: usize,
    /// Concurrent senders, each one PUT at a time on its own connection; sender s sends as
    /// user s mod --users into that user's room.
    #[arg(long, default_value_t = 20)]
    senders: usize,
    /// Total offered sends per second over all senders (0 = each sender back to back).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before the measurement starts.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Requests in flight at once while registering, creating rooms and joining.
    #[arg(long, default_value_t = 8)]
    setup_parallel: usize,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct WsArgs {
    /// Target a running node (e.g. ws://127.0.0.1:9000/ws) instead of starting one.
    #[arg(long)]
    url: Option<String>,
    /// With --url: the node's process id, to report its RSS.
    #[arg(long, requires = "url")]
    node_pid: Option<u32>,
    /// The node's domain (the bench starts its own node with this domain).
    #[arg(long, default_value = "bench.local")]
    domain: String,
    /// Number of runtimes (sessions); they form runtimes/2 sender→receiver pairs.
    #[arg(long, default_value_t = 100)]
    runtimes: usize,
    /// Every runtime both sends to and receives from its partner.
    #[arg(long)]
    bidirectional: bool,
    /// Total offered messages per second over all senders (0 = as fast as the window allows).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Most messages a sender has in flight (sent, neither received nor refused).
    #[arg(long, default_value_t = 256)]
    window: u32,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before the measurement starts.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Approximate size of one message in bytes (padded).
    #[arg(long, default_value_t = 200)]
    size: usize,
    /// Messages per WebSocket frame (a JSON array when > 1).
    #[arg(long, default_value_t = 1)]
    batch: u32,
    /// Idle mode: open this many sessions (default 1000), keep them idle, report RSS.
    #[arg(long, num_args = 0..=1, default_missing_value = "1000", value_name = "N")]
    idle: Option<usize>,
    /// Idle mode: seconds the sessions stay idle before the RSS is read again.
    #[arg(long, default_value_t = 5.0)]
    hold: f64,
    /// Sessions opened concurrently while connecting.
    #[arg(long, default_value_t = 50)]
    connect_parallel: usize,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    /// Start the node with this configuration file (its `--config`), e.g. one with
    /// `[stubs.run.*]` for --attack-stub; the bench's own settings (listen, domain, data
    /// directory, rate limits) still override it.
    #[arg(long, conflicts_with = "url", value_name = "FILE")]
    node_config: Option<PathBuf>,
    /// While the load runs, one more session keeps sending the probe stub's `spin` command
    /// (no limit: it loops until its call deadline) to this address of a stub run by the node
    /// (repeat for several stubs); the report adds the answers and the node's stub metrics.
    #[arg(long, value_name = "ADDRESS")]
    attack_stub: Vec<String>,
    /// With --attack-stub: spin commands per second to each stub.
    #[arg(long, default_value_t = 2.0, requires = "attack_stub")]
    attack_rate: f64,
}

/// A validated command.
#[derive(Debug)]
pub(crate) enum Command {
    Ws(WsConfig),
    Matrix(MatrixConfig),
    Appservice(crate::appservice_load::AppserviceArgs),
    Registry(crate::registry_load::RegistryArgs),
    Crossdomain(crate::crossdomain_load::CrossArgs),
    Cluster(crate::cluster_load::ClusterArgs),
}

/// Where the node is.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// `Some` to target a running node, `None` to start one.
    pub(crate) url: Option<String>,
    pub(crate) node_pid: Option<u32>,
    pub(crate) domain: String,
    /// The configuration file of a node the bench starts.
    pub(crate) node_config: Option<PathBuf>,
}

/// The `ws` command, validated.
#[derive(Debug, Clone)]
pub(crate) struct WsConfig {
    pub(crate) target: Target,
    pub(crate) mode: WsMode,
    pub(crate) connect_parallel: usize,
    pub(crate) json: bool,
}

/// What the `ws` command does once the sessions are open.
#[derive(Debug, Clone)]
pub(crate) enum WsMode {
    Load(LoadConfig),
    Idle(IdleConfig),
}

/// The PING load scenario.
#[derive(Debug, Clone)]
pub(crate) struct LoadConfig {
    pub(crate) runtimes: usize,
    pub(crate) bidirectional: bool,
    /// Total messages/s; `None` = unlimited (window-bound).
    pub(crate) rate: Option<f64>,
    pub(crate) window: u32,
    pub(crate) duration: Duration,
    pub(crate) warmup: Duration,
    pub(crate) size: usize,
    pub(crate) batch: u32,
    /// Runaway stubs kept busy meanwhile.
    pub(crate) attack: Option<AttackConfig>,
}

impl LoadConfig {
    /// Number of runtimes that send.
    pub(crate) fn senders(&self) -> usize {
        let pairs = self.runtimes / 2;
        if self.bidirectional { pairs * 2 } else { pairs }
    }
}

/// The `matrix` command, validated.
#[derive(Debug, Clone)]
pub(crate) struct MatrixConfig {
    /// `url`, if given, is the node's HTTP base URL (`http://host:port`).
    pub(crate) target: Target,
    pub(crate) users: usize,
    pub(crate) rooms: usize,
    pub(crate) senders: usize,
    /// Total sends/s; `None` = unlimited (each sender back to back).
    pub(crate) rate: Option<f64>,
    pub(crate) duration: Duration,
    pub(crate) warmup: Duration,
    pub(crate) setup_parallel: usize,
    pub(crate) json: bool,
}

/// The idle-sessions scenario.
#[derive(Debug, Clone)]
pub(crate) struct IdleConfig {
    pub(crate) sessions: usize,
    pub(crate) hold: Duration,
}

/// Parses and validates the command line; prints the error and exits on failure.
pub(crate) fn parse() -> Command {
    let cli = Cli::parse();
    match cli.command {
        RawCommand::Ws(args) => match args.validate() {
            Ok(cfg) => Command::Ws(cfg),
            Err(msg) => Cli::command().error(ErrorKind::ValueValidation, msg).exit(),
        },
        RawCommand::Matrix(args) => match args.validate() {
            Ok(cfg) => Command::Matrix(cfg),
            Err(msg) => Cli::command().error(ErrorKind::ValueValidation, msg).exit(),
        },
        RawCommand::Appservice(args) => match args.validate() {
            Ok(()) => Command::Appservice(args),
            Err(msg) => Cli::command().error(ErrorKind::ValueValidation, msg).exit(),
        },
        RawCommand::Registry(args) => match args.validate() {
            Ok(()) => Command::Registry(args),
            Err(msg) => Cli::command().error(ErrorKind::ValueValidation, msg).exit(),
        },
        RawCommand::Crossdomain(args) => match args.validate() {
            Ok(()) => Command::Crossdomain(args),
            Err(msg) => Cli::command().error(ErrorKind::ValueValidation, msg).exit(),
        },
        RawCommand::Cluster(args) => match args.validate() {
            Ok(()) => Command::Cluster(args),
            Err(msg) => Cli::command().error(ErrorKind::ValueValidation, msg).exit(),
        },
    }
}

fn seconds(name: &str, v: f64, min: f64) -> Result<Duration, String> {
    if !v.is_finite() || v < min || v > 86_400.0 {
        return Err(format!(
            "--{name} must be between {min} and 86400 seconds, got {v}"
        ));
    }
    Ok(Duration::from_secs_f64(v))
}

fn check_domain(domain: &str) -> Result<(), String> {
    if domain.is_empty() || domain.contains(['/', ' ', '"']) {
        return Err(format!(
            "--domain must be a plain domain name, got {domain:?}"
        ));
    }
    Ok(())
}

fn check_rate(rate: f64) -> Result<Option<f64>, String> {
    if !rate.is_finite() || rate < 0.0 {
        return Err(format!("--rate must be >= 0, got {rate}"));
    }
    Ok((rate > 0.0).then_some(rate))
}

impl MatrixArgs {
    fn validate(self) -> Result<MatrixConfig, String> {
        if let Some(url) = &self.url {
            let rest = url.strip_prefix("http://").ok_or_else(|| {
                format!("--url must be an http:// URL (no TLS in the bench), got {url:?}")
            })?;
            if rest.trim_end_matches('/').contains('/') || rest.is_empty() {
                return Err(format!(
                    "--url must be the node's base URL without a path, got {url:?}"
                ));
            }
        }
        check_domain(&self.domain)?;
        if self.rooms == 0 || self.users < self.rooms {
            return Err(format!(
                "--rooms must be between 1 and --users ({}), got {}",
                self.users, self.rooms
            ));
        }
        if self.senders == 0 {
            return Err("--senders must be at least 1".into());
        }
        if self.setup_parallel == 0 {
            return Err("--setup-parallel must be at least 1".into());
        }
        Ok(MatrixConfig {
            target: Target {
                url: self.url.map(|u| u.trim_end_matches('/').to_owned()),
                node_pid: self.node_pid,
                domain: self.domain,
                node_config: None,
            },
            users: self.users,
            rooms: self.rooms,
            senders: self.senders,
            rate: check_rate(self.rate)?,
            duration: seconds("duration", self.duration, 0.1)?,
            warmup: seconds("warmup", self.warmup, 0.0)?,
            setup_parallel: self.setup_parallel,
            json: self.json,
        })
    }
}

impl WsArgs {
    fn validate(self) -> Result<WsConfig, String> {
        if let Some(url) = &self.url
            && !(url.starts_with("ws://") || url.starts_with("wss://"))
        {
            return Err(format!("--url must be a ws:// URL, got {url:?}"));
        }
        if let Some(url) = &self.url
            && url.starts_with("wss://")
        {
            return Err(
                "wss:// is not supported by the bench (build has no TLS); use ws://".into(),
            );
        }
        check_domain(&self.domain)?;
        if self.connect_parallel == 0 {
            return Err("--connect-parallel must be at least 1".into());
        }
        if let Some(path) = &self.node_config
            && !path.is_file()
        {
            return Err(format!("--node-config {}: no such file", path.display()));
        }
        let attack = if self.attack_stub.is_empty() {
            None
        } else {
            if !self.attack_rate.is_finite() || !(0.01..=1000.0).contains(&self.attack_rate) {
                return Err(format!(
                    "--attack-rate must be between 0.01 and 1000 per second, got {}",
                    self.attack_rate
                ));
            }
            if let Some(bad) = self
                .attack_stub
                .iter()
                .find(|a| !a.contains("://") || a.contains(['"', ' ']))
            {
                return Err(format!(
                    "--attack-stub must be an address such as hyperty://<domain>/<name>, got {bad:?}"
                ));
            }
            Some(AttackConfig {
                stubs: self.attack_stub,
                rate: self.attack_rate,
            })
        };
        let target = Target {
            url: self.url,
            node_pid: self.node_pid,
            domain: self.domain,
            node_config: self.node_config,
        };
        let mode = if let Some(sessions) = self.idle {
            if sessions == 0 {
                return Err("--idle needs at least 1 session".into());
            }
            if attack.is_some() {
                return Err("--attack-stub needs the load scenario, not --idle".into());
            }
            WsMode::Idle(IdleConfig {
                sessions,
                hold: seconds("hold", self.hold, 0.0)?,
            })
        } else {
            if self.runtimes < 2 {
                return Err(format!(
                    "--runtimes must be at least 2 (one pair), got {}",
                    self.runtimes
                ));
            }
            if self.batch == 0 || self.batch > 10_000 {
                return Err(format!(
                    "--batch must be between 1 and 10000, got {}",
                    self.batch
                ));
            }
            if self.window < self.batch {
                return Err(format!(
                    "--window ({}) must be at least --batch ({})",
                    self.window, self.batch
                ));
            }
            if self.size > 16 * 1024 * 1024 {
                return Err(format!("--size must be at most 16 MiB, got {}", self.size));
            }
            WsMode::Load(LoadConfig {
                runtimes: self.runtimes,
                bidirectional: self.bidirectional,
                rate: check_rate(self.rate)?,
                window: self.window,
                duration: seconds("duration", self.duration, 0.1)?,
                warmup: seconds("warmup", self.warmup, 0.0)?,
                size: self.size,
                batch: self.batch,
                attack,
            })
        };
        Ok(WsConfig {
            target,
            mode,
            connect_parallel: self.connect_parallel,
            json: self.json,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws(args: &[&str]) -> Result<WsConfig, String> {
        let argv = ["rethink-bench", "ws"].iter().chain(args);
        let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
        let RawCommand::Ws(a) = cli.command else {
            return Err("not ws".into());
        };
        a.validate()
    }

    fn matrix(args: &[&str]) -> Result<MatrixConfig, String> {
        let argv = ["rethink-bench", "matrix"].iter().chain(args);
        let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
        let RawCommand::Matrix(a) = cli.command else {
            return Err("not matrix".into());
        };
        a.validate()
    }

    #[test]
    fn matrix_defaults_and_values() {
        let cfg = matrix(&[]).expect("valid");
        assert_eq!((cfg.users, cfg.rooms, cfg.senders), (100, 10, 20));
        assert_eq!(cfg.rate, None);
        assert_eq!(cfg.warmup, Duration::from_secs(2));
        let cfg = matrix(&[
            "--users",
            "4",
            "--rooms",
            "2",
            "--senders",
            "1",
            "--rate",
            "500",
            "--duration",
            "1",
            "--url",
            "http://127.0.0.1:8008/",
        ])
        .expect("valid");
        assert_eq!(cfg.rate, Some(500.0));
        assert_eq!(cfg.target.url.as_deref(), Some("http://127.0.0.1:8008"));
    }

    #[test]
    fn matrix_rejects_bad_values() {
        assert!(matrix(&["--users", "2", "--rooms", "3"]).is_err());
        assert!(matrix(&["--rooms", "0"]).is_err());
        assert!(matrix(&["--senders", "0"]).is_err());
        assert!(matrix(&["--rate", "-5"]).is_err());
        assert!(matrix(&["--url", "ws://127.0.0.1:1/ws"]).is_err());
        assert!(matrix(&["--url", "http://127.0.0.1:1/_matrix"]).is_err());
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults() {
        let cfg = ws(&[]).expect("valid");
        assert!(cfg.target.url.is_none());
        assert_eq!(cfg.target.domain, "bench.local");
        let WsMode::Load(l) = cfg.mode else {
            panic!("load mode")
        };
        assert_eq!(l.runtimes, 100);
        assert_eq!(l.senders(), 50);
        assert_eq!(l.rate, None);
        assert_eq!(l.window, 256);
        assert_eq!(l.duration, Duration::from_secs(10));
        assert_eq!(l.warmup, Duration::from_secs(2));
        assert_eq!(l.batch, 1);
    }

    #[test]
    fn bidirectional_senders() {
        let WsMode::Load(l) = ws(&["--runtimes", "11", "--bidirectional"])
            .expect("valid")
            .mode
        else {
            panic!("load mode")
        };
        assert_eq!(l.senders(), 10);
    }

    #[test]
    fn idle_flag_with_and_without_value() {
        let WsMode::Idle(i) = ws(&["--idle"]).expect("valid").mode else {
            panic!("idle")
        };
        assert_eq!(i.sessions, 1000);
        let WsMode::Idle(i) = ws(&["--idle", "20", "--hold", "1"]).expect("valid").mode else {
            panic!("idle")
        };
        assert_eq!(i.sessions, 20);
        assert_eq!(i.hold, Duration::from_secs(1));
    }

    #[test]
    fn rejects_bad_values() {
        assert!(ws(&["--runtimes", "1"]).is_err());
        assert!(ws(&["--batch", "0"]).is_err());
        assert!(ws(&["--batch", "8", "--window", "4"]).is_err());
        assert!(ws(&["--rate", "-1"]).is_err());
        assert!(ws(&["--duration", "0"]).is_err());
        assert!(ws(&["--url", "http://x/ws"]).is_err());
        assert!(
            ws(&["--node-pid", "12"]).is_err(),
            "--node-pid requires --url"
        );
    }

    #[test]
    fn attack_options() {
        let WsMode::Load(l) = ws(&["--attack-stub", "hyperty://bench.local/runaway"])
            .expect("valid")
            .mode
        else {
            panic!("load mode")
        };
        assert_eq!(
            l.attack,
            Some(AttackConfig {
                stubs: vec!["hyperty://bench.local/runaway".into()],
                rate: 2.0
            })
        );
        let WsMode::Load(l) = ws(&[
            "--attack-stub",
            "hyperty://d/a",
            "--attack-stub",
            "hyperty://d/b",
            "--attack-rate",
            "5",
        ])
        .expect("valid")
        .mode
        else {
            panic!("load mode")
        };
        let attack = l.attack.expect("attack");
        assert_eq!((attack.stubs.len(), attack.rate), (2, 5.0));
        assert!(matches!(
            ws(&[]).expect("valid").mode,
            WsMode::Load(LoadConfig { attack: None, .. })
        ));
        assert!(ws(&["--attack-rate", "5"]).is_err(), "needs --attack-stub");
        assert!(ws(&["--attack-stub", "runaway"]).is_err());
        assert!(ws(&["--attack-stub", "hyperty://d/a", "--attack-rate", "0"]).is_err());
        assert!(ws(&["--attack-stub", "hyperty://d/a", "--idle"]).is_err());
        assert!(ws(&["--node-config", "/nonexistent/rethink.toml"]).is_err());
        assert!(
            ws(&[
                "--node-config",
                "Cargo.toml",
                "--url",
                "ws://127.0.0.1:1/ws"
            ])
            .is_err(),
            "a running node has its own configuration"
        );
        let cfg = ws(&["--node-config", "Cargo.toml"]).expect("valid");
        assert_eq!(cfg.target.node_config, Some(PathBuf::from("Cargo.toml")));
    }

    #[test]
    fn rate_zero_means_unlimited() {
        let WsMode::Load(l) = ws(&["--rate", "5000"]).expect("valid").mode else {
            panic!()
        };
        assert_eq!(l.rate, Some(5000.0));
    }
}
