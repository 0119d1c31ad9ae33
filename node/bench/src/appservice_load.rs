//! `rethink-bench appservice`: transactions delivered to an external application service on
//! loopback, and the latency the node adds from an event's commit to its transaction.
//!
//! The bench is the service: it listens on `127.0.0.1` (HTTP/1.1, hyper), writes a registration
//! for itself into a fresh `appservices.dir`, and starts the node with it. A user of its
//! namespace creates a room; `--senders` connections then `PUT` `m.room.message` events into it
//! at `--rate` per second for `--duration` seconds: for each event, the time from its `PUT`
//! being answered (the event is committed) to the transaction holding it reaching the service.
//! Then `--burst` events as fast as the senders go: events and transactions per second
//! delivered, and events per transaction (batching).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::http::{HttpConn, encode};
use crate::node_proc::NodeProcess;
use crate::stats::{Latencies, Summary};

const AS_TOKEN: &str = "bench-as-token-0123456789";
const HS_TOKEN: &str = "bench-hs-token-0123456789";
const PREFIX: &str = "/_matrix/client/v3";

/// The `appservice` command's options.
#[derive(Debug, Clone, Args)]
pub(crate) struct AppserviceArgs {
    /// The node's domain (the bench always starts its own node: it registers itself).
    #[arg(long, default_value = "bench.local")]
    domain: String,
    /// Events per second offered in the measured phase.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Seconds of the fixed-rate phase.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Events sent back to back after the fixed-rate phase (0: none).
    #[arg(long, default_value_t = 20_000)]
    burst: u64,
    /// Connections sending, each one `PUT` at a time.
    #[arg(long, default_value_t = 16)]
    senders: u64,
    /// The node's `appservices.max_events_per_txn`.
    #[arg(long, default_value_t = 100)]
    max_events_per_txn: usize,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

impl AppserviceArgs {
    pub(crate) fn validate(&self) -> Result<(), String> {
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return Err(format!("--rate must be above 0, got {}", self.rate));
        }
        if !(self.duration.is_finite() && self.duration > 0.0 && self.duration <= 86_400.0) {
            return Err(format!(
                "--duration must be in (0, 86400], got {}",
                self.duration
            ));
        }
        if self.senders == 0 || self.max_events_per_txn == 0 {
            return Err("--senders and --max-events-per-txn must be at least 1".into());
        }
        Ok(())
    }

    pub(crate) fn json(&self) -> bool {
        self.json
    }
}

/// What the service saw: arrival of each event (by its number) and transactions.
#[derive(Debug, Default)]
struct Seen {
    arrivals: Mutex<HashMap<u64, Instant>>,
    txns: AtomicU64,
    events: AtomicU64,
}

/// The report.
#[derive(Debug)]
pub(crate) struct Report {
    rate: f64,
    sent: u64,
    delivered: u64,
    latency: Option<Summary>,
    rate_txns: u64,
    burst: u64,
    burst_secs: f64,
    burst_txns: u64,
}

impl Report {
    pub(crate) fn to_json(&self) -> String {
        let lat = self.latency.as_ref().map(|s| {
            json!({"p50_us": s.p50_us, "p95_us": s.p95_us, "p99_us": s.p99_us,
                "p999_us": s.p999_us, "max_us": s.max_us, "mean_us": s.mean_us})
        });
        json!({
            "rate_phase": {"offered_per_s": self.rate, "sent": self.sent,
                "delivered": self.delivered, "transactions": self.rate_txns,
                "commit_to_transaction": lat},
            "burst_phase": {"events": self.burst, "seconds": self.burst_secs,
                "events_per_s": self.burst_per_s(), "transactions": self.burst_txns,
                "transactions_per_s": self.burst_txns as f64 / self.burst_secs.max(1e-9)},
        })
        .to_string()
    }

    fn burst_per_s(&self) -> f64 {
        self.burst as f64 / self.burst_secs.max(1e-9)
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "rate phase: {} events offered at {}/s, {} delivered in {} transactions",
            self.sent, self.rate, self.delivered, self.rate_txns
        )?;
        if let Some(s) = &self.latency {
            writeln!(
                f,
                "  commit -> transaction: p50 {} us, p95 {} us, p99 {} us, p99.9 {} us, max {} us",
                s.p50_us, s.p95_us, s.p99_us, s.p999_us, s.max_us
            )?;
        }
        if self.burst > 0 {
            writeln!(
                f,
                "burst: {} events delivered in {:.3} s: {:.0} events/s, {} transactions \
                 ({:.0}/s, {:.1} events each)",
                self.burst,
                self.burst_secs,
                self.burst_per_s(),
                self.burst_txns,
                self.burst_txns as f64 / self.burst_secs.max(1e-9),
                self.burst as f64 / (self.burst_txns.max(1)) as f64
            )?;
        }
        Ok(())
    }
}

/// Serves transactions: records each event's arrival, answers 200.
async fn serve(listener: TcpListener, seen: Arc<Seen>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let seen = Arc::clone(&seen);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let seen = Arc::clone(&seen);
                async move {
                    let is_txn = req.method() == Method::PUT
                        && req
                            .uri()
                            .path()
                            .starts_with("/_matrix/app/v1/transactions/");
                    let body = req.into_body().collect().await?.to_bytes();
                    if is_txn {
                        record(&seen, &body);
                    }
                    Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from_static(b"{}"))))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

fn record(seen: &Seen, body: &[u8]) {
    let now = Instant::now();
    seen.txns.fetch_add(1, Ordering::Relaxed);
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    let mut arrivals = seen.arrivals.lock().unwrap_or_else(|e| e.into_inner());
    for e in v["events"].as_array().into_iter().flatten() {
        if let Some(n) = e["content"]["body"]
            .as_str()
            .and_then(|b| b.strip_prefix('e'))
            .and_then(|n| n.parse::<u64>().ok())
        {
            arrivals.insert(n, now);
            seen.events.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Sends events `from..to` on `senders` connections, sender `s` taking every `senders`-th one,
/// each at its slot of `interval` after `start` (`None`: back to back). Returns each event's
/// commit instant.
async fn send(
    authority: &str,
    (base, query): (&str, &str),
    range: std::ops::Range<u64>,
    senders: u64,
    interval: Option<Duration>,
) -> anyhow::Result<HashMap<u64, Instant>> {
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for s in 0..senders {
        let (authority, range) = (authority.to_owned(), range.clone());
        let (base, query) = (base.to_owned(), query.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut conn = HttpConn::new(&authority);
            let mut commits = HashMap::new();
            for n in range.clone().filter(|n| n % senders == s) {
                if let Some(every) = interval {
                    let slot = every.saturating_mul(u32::try_from(n - range.start).unwrap_or(0));
                    tokio::time::sleep_until(start + slot).await;
                }
                let body = json!({"msgtype": "m.text", "body": format!("e{n}")}).to_string();
                let r = conn
                    .request(
                        Method::PUT,
                        &format!("{base}/e{n}?{query}"),
                        Some(AS_TOKEN),
                        Some(Bytes::from(body)),
                    )
                    .await?;
                if r.status != 200 {
                    anyhow::bail!("send e{n}: {}", r.status);
                }
                commits.insert(n, Instant::now());
            }
            anyhow::Ok(commits)
        }));
    }
    let mut all = HashMap::new();
    for t in tasks {
        all.extend(t.await.context("a sender panicked")??);
    }
    Ok(all)
}

/// Waits until `n` events arrived (or `within` passed).
async fn wait_for(seen: &Seen, n: u64, within: Duration) {
    let deadline = Instant::now() + within;
    while seen.events.load(Ordering::Relaxed) < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub(crate) async fn run(cfg: &AppserviceArgs) -> anyhow::Result<Report> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let seen = Arc::new(Seen::default());
    let server = tokio::spawn(serve(listener, Arc::clone(&seen)));
    let dir = tempfile::tempdir()?;
    let services = dir.path().join("services");
    std::fs::create_dir(&services)?;
    let domain = cfg.domain.replace('.', "\\.");
    std::fs::write(
        services.join("bench.yaml"),
        format!(
            "id: bench\nurl: \"http://127.0.0.1:{port}\"\nas_token: {AS_TOKEN}\n\
             hs_token: {HS_TOKEN}\nsender_localpart: benchbot\nrate_limited: false\n\
             namespaces:\n  users:\n    - exclusive: true\n      regex: '@bench_.*:{domain}'\n"
        ),
    )?;
    let config = dir.path().join("rethink.toml");
    std::fs::write(
        &config,
        format!(
            "[appservices]\ndir = {:?}\nmax_events_per_txn = {}\n",
            services.display().to_string(),
            cfg.max_events_per_txn
        ),
    )?;
    let node = NodeProcess::start(&cfg.domain, Some(&config)).await?;
    let authority = node
        .http_url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let mut conn = HttpConn::new(&authority);
    let reg = json!({"type": "m.login.application_service", "username": "bench_user"});
    let r = conn
        .request(
            Method::POST,
            &format!("{PREFIX}/register"),
            Some(AS_TOKEN),
            Some(Bytes::from(reg.to_string())),
        )
        .await?;
    anyhow::ensure!(r.status == 200, "register: {}", r.status);
    let as_user = format!("user_id={}", encode(&format!("@bench_user:{}", cfg.domain)));
    let r = conn
        .request(
            Method::POST,
            &format!("{PREFIX}/createRoom?{as_user}"),
            Some(AS_TOKEN),
            Some(Bytes::from_static(b"{}")),
        )
        .await?;
    anyhow::ensure!(r.status == 200, "createRoom: {}", r.status);
    let room: Value = serde_json::from_slice(&r.body)?;
    let room = room["room_id"].as_str().context("no room_id")?.to_owned();
    let base = format!("{PREFIX}/rooms/{}/send/m.room.message", encode(&room));
    let target = (base.as_str(), as_user.as_str());
    let sent = (cfg.rate * cfg.duration).round() as u64;
    let interval = Duration::from_secs_f64(1.0 / cfg.rate);
    let settle = Duration::from_secs(30);

    let before = seen.txns.load(Ordering::Relaxed);
    let commits = send(&authority, target, 0..sent, cfg.senders, Some(interval)).await?;
    wait_for(&seen, sent, settle).await;
    let rate_txns = seen.txns.load(Ordering::Relaxed) - before;
    let mut latencies = Latencies::default();
    {
        let arrivals = seen.arrivals.lock().unwrap_or_else(|e| e.into_inner());
        for (n, commit) in &commits {
            if let Some(arrived) = arrivals.get(n) {
                let ns = arrived.saturating_duration_since(*commit).as_nanos();
                latencies.record_ns(u64::try_from(ns).unwrap_or(u64::MAX));
            }
        }
    }
    let delivered = seen.events.load(Ordering::Relaxed);

    let (burst_secs, burst_txns) = if cfg.burst > 0 {
        let before = seen.txns.load(Ordering::Relaxed);
        let start = Instant::now();
        send(
            &authority,
            target,
            sent..sent + cfg.burst,
            cfg.senders,
            None,
        )
        .await?;
        wait_for(&seen, sent + cfg.burst, settle).await;
        (
            start.elapsed().as_secs_f64(),
            seen.txns.load(Ordering::Relaxed) - before,
        )
    } else {
        (0.0, 0)
    };
    server.abort();
    drop(node);
    Ok(Report {
        rate: cfg.rate,
        sent,
        delivered,
        latency: latencies.summarize(),
        rate_txns,
        burst: cfg.burst,
        burst_secs,
        burst_txns,
    })
}
