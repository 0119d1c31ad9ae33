//! The `cluster` scenario (issue 14): two nodes of one domain on one PostgreSQL database
//! (`store.url`) and one NATS server (`cluster.nats_url`), with distinct `cluster.node_id`s.
//! PostgreSQL and NATS are started here (the repository's `scripts/pg-test-server` and
//! `scripts/nats-test-server`, throw-away data in a temporary directory) unless given with
//! `--pg-url` / `--nats-url`. `--runtimes` runtimes on node 1 send PINGs to as many runtimes on
//! node 2 (with `--bidirectional`, back too), so every message takes the cross-node route:
//! `cluster_inbox` in PostgreSQL, a NATS notice, the holder's move into the outbox. With
//! `--local` both runtimes of a pair are on node 1 (node 2 stays a member): the local route of
//! a clustered node. Reported as `crossdomain` does (`pair_load.rs`): throughput, end-to-end
//! latency, each node's CPU time per message received.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::node_proc::{self, NodeError, NodeProcess};
use crate::pair_load::{self, Pacing, PairReport};
use crate::ws_load::{self, LoadError};

/// `rethink-bench cluster` arguments.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ClusterArgs {
    /// The PostgreSQL database both nodes use (`store.url`; give a fresh one). Without it, a
    /// throw-away server is started with `scripts/pg-test-server`.
    #[arg(long)]
    pg_url: Option<String>,
    /// The NATS server (`cluster.nats_url`). Without it, a throw-away `nats-server` is started
    /// with `scripts/nats-test-server`.
    #[arg(long)]
    nats_url: Option<String>,
    #[arg(long, default_value = "cluster.bench")]
    domain: String,
    /// Sending runtimes on node 1 (each with its partner on node 2, or on node 1 with --local).
    #[arg(long, default_value_t = 100)]
    runtimes: usize,
    /// Both runtimes of a pair are on node 1: the local route of a clustered node.
    #[arg(long)]
    local: bool,
    /// The partners send back too (as `ws --bidirectional`).
    #[arg(long)]
    bidirectional: bool,
    /// Total offered messages per second (0 = as fast as the windows allow).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Most messages a sender has in flight.
    #[arg(long, default_value_t = 64)]
    window: u32,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before the measurement starts.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Approximate size of one message in bytes.
    #[arg(long, default_value_t = 200)]
    size: usize,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    /// The throw-away PostgreSQL server zero-fills each new WAL segment (PostgreSQL's default).
    /// Without it the server runs with `wal_init_zero = off`: a fresh server has no segments to
    /// recycle, and at 10,000 msg/s would zero-fill a new 16 MB one every ~1.1 s, each time
    /// stalling every commit for 12-16 ms, which a server in steady state (recycling segments)
    /// does not do (BENCHMARKS.md, 2026-12-04).
    #[arg(long)]
    zero_fill_wal: bool,
}

impl ClusterArgs {
    /// Checks the arguments; the error names the option.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if let Some(url) = &self.pg_url
            && !url.starts_with("postgres://")
            && !url.starts_with("postgresql://")
        {
            return Err(format!("--pg-url must be a postgres:// URL, got {url:?}"));
        }
        if self.pg_url.is_some() && self.zero_fill_wal {
            return Err(
                "--zero-fill-wal is for the throw-away server; with --pg-url the server's own \
                 settings apply"
                    .into(),
            );
        }
        if let Some(url) = &self.nats_url
            && !url.starts_with("nats://")
        {
            return Err(format!("--nats-url must be a nats:// URL, got {url:?}"));
        }
        if self.runtimes == 0 || self.window == 0 {
            return Err("--runtimes and --window must be > 0".into());
        }
        let ok = |v: f64, min: f64| v.is_finite() && v >= min && v <= 86_400.0;
        if !ok(self.duration, 0.1) || !ok(self.warmup, 0.0) || !ok(self.rate, 0.0) {
            return Err("--duration, --warmup and --rate must be finite and >= 0".into());
        }
        Ok(())
    }

    pub(crate) fn json(&self) -> bool {
        self.json
    }
}

/// Why the shared services could not be started.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServiceError {
    #[error("cannot create a temporary directory: {0}")]
    Dir(#[source] std::io::Error),
    #[error("cannot run {script}: {source}")]
    Run {
        script: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{script} start failed: {stderr}")]
    Failed { script: PathBuf, stderr: String },
}

/// A server started with one of the repository's `scripts/*-test-server`; stopped on drop.
struct ScriptServer {
    script: PathBuf,
    dir: tempfile::TempDir,
    url: String,
}

impl ScriptServer {
    /// Starts `scripts/<name>` with the environment variables `env` added.
    fn start(name: &str, env: &[(&str, &str)]) -> Result<ScriptServer, ServiceError> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../scripts")
            .join(name);
        let dir = tempfile::Builder::new()
            .prefix("rethink-bench-")
            .tempdir()
            .map_err(ServiceError::Dir)?;
        let out = Command::new(&script)
            .arg("start")
            .arg(dir.path())
            .envs(env.iter().copied())
            .output()
            .map_err(|source| ServiceError::Run {
                script: script.clone(),
                source,
            })?;
        let url = std::fs::read_to_string(dir.path().join("url")).unwrap_or_default();
        if !out.status.success() || url.trim().is_empty() {
            return Err(ServiceError::Failed {
                script,
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(ScriptServer {
            script,
            dir,
            url: url.trim().to_owned(),
        })
    }
}

impl Drop for ScriptServer {
    fn drop(&mut self) {
        let _ = Command::new(&self.script)
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}

/// Why the scenario could not run.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClusterError {
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error(transparent)]
    Load(#[from] LoadError),
}

/// Runs the scenario.
pub(crate) async fn run(args: &ClusterArgs) -> Result<PairReport, ClusterError> {
    crate::node_under_test::warn_about_open_files(args.runtimes as u64 * 4);
    // Kept alive (and stopped at the end) by these handles.
    let pg = match &args.pg_url {
        Some(_) => None,
        None => {
            let settings = if args.zero_fill_wal {
                ""
            } else {
                "-c wal_init_zero=off"
            };
            eprintln!(
                "PostgreSQL: a throw-away server (scripts/pg-test-server), settings: {}",
                if settings.is_empty() {
                    "defaults"
                } else {
                    settings
                }
            );
            Some(ScriptServer::start(
                "pg-test-server",
                &[("PG_TEST_SERVER_SETTINGS", settings)],
            )?)
        }
    };
    let nats = match &args.nats_url {
        Some(_) => None,
        None => Some(ScriptServer::start("nats-test-server", &[])?),
    };
    let pg_url = args.pg_url.clone().or(pg.as_ref().map(|s| s.url.clone()));
    let nats_url = args
        .nats_url
        .clone()
        .or(nats.as_ref().map(|s| s.url.clone()));
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let mut nodes = Vec::new();
    for i in 1..=2 {
        let env = vec![
            (
                "RETHINK_STORE__URL".to_owned(),
                pg_url.clone().unwrap_or_default(),
            ),
            (
                "RETHINK_CLUSTER__NATS_URL".to_owned(),
                nats_url.clone().unwrap_or_default(),
            ),
            (
                "RETHINK_CLUSTER__NODE_ID".to_owned(),
                format!("bench-{}-{i}", &run_id[..8]),
            ),
        ];
        let port = node_proc::free_port().map_err(NodeError::Port)?;
        nodes.push(NodeProcess::start_on(&args.domain, None, port, true, &env).await?);
    }
    let (n1, n2) = (&nodes[0], &nodes[1]);
    let n = args.runtimes;
    let url_1 = n1.ws_url();
    let senders = ws_load::connect_all(&url_1, &args.domain, n, 50).await?;
    let partners_on = if args.local { &url_1 } else { &n2.ws_url() };
    let partners = ws_load::connect_all(partners_on, &args.domain, n, 50).await?;
    let pacing = Pacing {
        rate: args.rate,
        window: args.window,
        duration: args.duration,
        warmup: args.warmup,
        size: args.size,
        bidirectional: args.bidirectional,
    };
    let pids = (Some(n1.pid()), Some(n2.pid()));
    let (traffic, cpu_a, cpu_b, errors) =
        pair_load::run(senders, partners, &pacing, &url_1, pids).await;
    let route = if args.local {
        "local (both on node 1)"
    } else {
        "node 1 -> node 2"
    };
    let both_ways = if args.bidirectional {
        ", both ways"
    } else {
        ""
    };
    Ok(PairReport {
        title: format!(
            "cluster {}: {n} pairs, {route}{both_ways}, {}, {} s measured (A = node 1, B = node 2)",
            args.domain,
            pair_load::offered(args.rate, args.window),
            args.duration
        ),
        params: serde_json::json!({
            "runtimes": n, "local": args.local, "bidirectional": args.bidirectional,
            "rate": args.rate, "window": args.window, "duration_secs": args.duration,
        }),
        traffic,
        cpu_a,
        cpu_b,
        errors,
    })
}
