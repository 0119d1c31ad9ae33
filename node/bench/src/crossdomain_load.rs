//! The `crossdomain` scenario (issue 13): two nodes of two domains, A and B, each naming the
//! other in `cross_domain.peers` (as `tests/it/crossdomain*.rs` set them up), started here from
//! the release `rethink-node` next to the bench or running elsewhere (`--url-a`, `--url-b`).
//! `--runtimes-per-side` runtimes open sessions on each node; runtime i on A sends PINGs to
//! the hyperty of runtime i on B, so every message goes A's bus → A's instance of B's own stub
//! → B's node session → B's bus → the runtime on B. Before the clock starts, one PING crosses
//! (B's stub downloaded, verified, compiled and connected). Reported: messages/s received in
//! the measured window, end-to-end latency (runtime on A to runtime on B: both in this
//! process), and each node's CPU time (utime + stime of `/proc/<pid>/stat` over the window)
//! per message received.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, PingTemplate, Session};
use crate::node_proc::{self, NodeError, NodeProcess};
use crate::pair_load::{self, Pacing, PairReport};
use crate::ws_load::{self, LoadError};

/// How long the first PING may take (B's stub fetched, checked, compiled and connected).
const PRIME_TIMEOUT: Duration = Duration::from_secs(60);

/// `rethink-bench crossdomain` arguments.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct CrossArgs {
    /// Target running nodes instead of starting two: A's WebSocket URL (ws://…/ws); the nodes
    /// must have cross-domain routing on and name each other in `cross_domain.peers`.
    #[arg(long, requires = "url_b")]
    url_a: Option<String>,
    /// With --url-a: B's WebSocket URL.
    #[arg(long, requires = "url_a")]
    url_b: Option<String>,
    /// With --url-a: A's process id (for its CPU time).
    #[arg(long, requires = "url_a")]
    pid_a: Option<u32>,
    /// With --url-a: B's process id.
    #[arg(long, requires = "url_a")]
    pid_b: Option<u32>,
    #[arg(long, default_value = "a.bench")]
    domain_a: String,
    #[arg(long, default_value = "b.bench")]
    domain_b: String,
    /// Runtimes on each node (each one on A sends to its partner on B).
    #[arg(long, default_value_t = 100)]
    runtimes_per_side: usize,
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
    /// `cross_domain.queue_limit` of the nodes started here (messages waiting for B).
    #[arg(long, default_value_t = 65_536)]
    queue_limit: usize,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

impl CrossArgs {
    /// Checks the arguments; the error names the option.
    pub(crate) fn validate(&self) -> Result<(), String> {
        for url in [&self.url_a, &self.url_b].into_iter().flatten() {
            if !url.starts_with("ws://") {
                return Err(format!("--url-a/--url-b must be ws:// URLs, got {url:?}"));
            }
        }
        if self.domain_a == self.domain_b {
            return Err("--domain-a and --domain-b must differ".into());
        }
        if self.runtimes_per_side == 0 || self.window == 0 || self.queue_limit == 0 {
            return Err("--runtimes-per-side, --window and --queue-limit must be > 0".into());
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

/// The nodes: started here (kept alive by the handles) or running elsewhere.
struct Nodes {
    urls: (String, String),
    pids: (Option<u32>, Option<u32>),
    _started: Vec<NodeProcess>,
}

async fn nodes(args: &CrossArgs) -> Result<Nodes, NodeError> {
    if let (Some(a), Some(b)) = (&args.url_a, &args.url_b) {
        return Ok(Nodes {
            urls: (a.clone(), b.clone()),
            pids: (args.pid_a, args.pid_b),
            _started: Vec::new(),
        });
    }
    let pa = node_proc::free_port().map_err(NodeError::Port)?;
    let pb = node_proc::free_port().map_err(NodeError::Port)?;
    let env = |domain: &str, peer: &str, port: u16| {
        vec![
            ("RETHINK_MATRIX__SERVER_NAME".to_owned(), domain.to_owned()),
            (
                "RETHINK_CROSS_DOMAIN__ENABLED".to_owned(),
                "true".to_owned(),
            ),
            (
                "RETHINK_CROSS_DOMAIN__PEERS".to_owned(),
                format!("{{\"{peer}\"=\"http://127.0.0.1:{port}\"}}"),
            ),
            (
                "RETHINK_CROSS_DOMAIN__QUEUE_LIMIT".to_owned(),
                args.queue_limit.to_string(),
            ),
        ]
    };
    let (da, db) = (&args.domain_a, &args.domain_b);
    let b = NodeProcess::start_on(db, None, pb, true, &env(db, da, pa)).await?;
    let a = NodeProcess::start_on(da, None, pa, true, &env(da, db, pb)).await?;
    Ok(Nodes {
        urls: (a.ws_url(), b.ws_url()),
        pids: (Some(a.pid()), Some(b.pid())),
        _started: vec![a, b],
    })
}

/// Sends one PING from `from` to `to`'s hyperty and waits until `to` gets it.
async fn prime(from: &mut Session, to: &mut Session) -> Result<(), String> {
    let ping = PingTemplate::new(&from.hyperty, &to.hyperty, 64).frame(1..2, 0, 0);
    from.ws
        .send(Message::text(ping))
        .await
        .map_err(|e| format!("priming: sending: {e}"))?;
    let wait = async {
        while let Some(m) = to.ws.next().await {
            match m {
                Ok(Message::Text(t)) if t.contains("\"PING\"") => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(format!("priming: receiving: {e}")),
            }
        }
        Err("priming: B closed the connection".to_owned())
    };
    tokio::time::timeout(PRIME_TIMEOUT, wait)
        .await
        .map_err(|_| format!("priming: no PING across within {PRIME_TIMEOUT:?}"))?
}

/// Runs the scenario.
pub(crate) async fn run(args: &CrossArgs) -> Result<PairReport, LoadError> {
    crate::node_under_test::warn_about_open_files(args.runtimes_per_side as u64 * 4);
    let nodes = nodes(args).await?;
    let (url_a, url_b) = &nodes.urls;
    let (da, db) = (&args.domain_a, &args.domain_b);
    let mut errors = Vec::new();
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let prime_a = client::open_session(url_a, da, &format!("prime-a-{}", &run_id[..8])).await;
    let prime_b = client::open_session(url_b, db, &format!("prime-b-{}", &run_id[..8])).await;
    match (prime_a, prime_b) {
        (Ok(mut a), Ok(mut b)) => {
            if let Err(e) = prime(&mut a, &mut b).await {
                errors.push(e);
            }
        }
        (Err(e), _) | (_, Err(e)) => errors.push(format!("priming: a session: {e}")),
    }

    let n = args.runtimes_per_side;
    let on_a = ws_load::connect_all(url_a, da, n, 50).await?;
    let on_b = ws_load::connect_all(url_b, db, n, 50).await?;
    let pacing = Pacing {
        rate: args.rate,
        window: args.window,
        duration: args.duration,
        warmup: args.warmup,
        size: args.size,
        bidirectional: false,
    };
    let (traffic, cpu_a, cpu_b, more) =
        pair_load::run(on_a, on_b, &pacing, url_a, nodes.pids).await;
    errors.extend(more);
    Ok(PairReport {
        title: format!(
            "crossdomain {da} -> {db}: {n} runtimes per side, {}, {} s measured",
            pair_load::offered(args.rate, args.window),
            args.duration
        ),
        params: serde_json::json!({
            "runtimes_per_side": n, "rate": args.rate, "window": args.window,
            "duration_secs": args.duration,
        }),
        traffic,
        cpu_a,
        cpu_b,
        errors,
    })
}
