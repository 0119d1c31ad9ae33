//! `rethink-bench registry`: lookups per second through the bus to the built-in domain registry
//! (`[connectors.registry]`, the WebAssembly connector at `domain://registry.<domain>`).
//!
//! The bench starts the node with the registry and with the session rate limit left as the
//! node ships it (`session.rate_per_second`, 5,000/s per runtime unless `--session-rate` says
//! otherwise): the callers are limited, the registry must not be. One runtime registers its
//! hyperty; then `--runtimes` runtimes each keep `--window` `read`s of that hyperty outstanding
//! (`{"type": "read", "to": "domain://registry.<domain>", "body": {"resource": <hyperty>}}`),
//! sending the next as each answer arrives, and acknowledge what they receive. Reported: the
//! answers with code 200 received in the measured window (after `--warmup`, for `--duration`
//! seconds) per second, their round-trip latency, and every other code by count.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, Event, Session};
use crate::node_proc::NodeProcess;
use crate::stats::{ErrorStat, Latencies, Summary, merge_errors, record_error};

/// Ids of lookups start here (the session's own requests use small ids).
const READ_ID_BASE: u64 = 1_000;
/// How long outstanding lookups may take to come back after the measured window.
const DRAIN: Duration = Duration::from_secs(10);

/// The `registry` command's options.
#[derive(Debug, Clone, Args)]
pub(crate) struct RegistryArgs {
    /// The node's domain (the bench always starts its own node, with the registry).
    #[arg(long, default_value = "bench.local")]
    domain: String,
    /// Runtimes looking up, each on its own WebSocket session.
    #[arg(long, default_value_t = 8)]
    runtimes: usize,
    /// Lookups outstanding per runtime. Above 256 in all (the queue of what a stub sends, in
    /// `stubhost`), the registry's answers outrun the node's routing of them and those refused
    /// (503) are dropped by the registry: the run ends with lookups unanswered.
    #[arg(long, default_value_t = 16)]
    window: u64,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before the measurement starts.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// The node's `session.rate_per_second` (and twice that as `rate_burst`); default: the
    /// node's own default.
    #[arg(long)]
    session_rate: Option<u32>,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

impl RegistryArgs {
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.runtimes == 0 || self.window == 0 {
            return Err("--runtimes and --window must be at least 1".into());
        }
        if !(self.duration.is_finite() && self.duration > 0.0 && self.duration <= 86_400.0) {
            return Err(format!(
                "--duration must be in (0, 86400], got {}",
                self.duration
            ));
        }
        if !(self.warmup.is_finite() && (0.0..=3_600.0).contains(&self.warmup)) {
            return Err(format!(
                "--warmup must be in [0, 3600], got {}",
                self.warmup
            ));
        }
        if self.session_rate == Some(0) {
            return Err("--session-rate must be above 0".into());
        }
        Ok(())
    }

    pub(crate) fn json(&self) -> bool {
        self.json
    }
}

/// The report.
#[derive(Debug)]
pub(crate) struct Report {
    runtimes: usize,
    window: u64,
    duration: f64,
    lookups: u64,
    latency: Option<Summary>,
    errors: BTreeMap<u16, ErrorStat>,
}

impl Report {
    fn per_second(&self) -> f64 {
        self.lookups as f64 / self.duration
    }

    pub(crate) fn to_json(&self) -> String {
        let lat = self.latency.as_ref().map(|s| {
            json!({"p50_us": s.p50_us, "p95_us": s.p95_us, "p99_us": s.p99_us,
                "p999_us": s.p999_us, "max_us": s.max_us, "mean_us": s.mean_us})
        });
        let errors: serde_json::Map<String, Value> = self
            .errors
            .iter()
            .map(|(code, e)| (code.to_string(), json!(e.count)))
            .collect();
        json!({"runtimes": self.runtimes, "window": self.window, "seconds": self.duration,
            "lookups": self.lookups, "lookups_per_s": self.per_second(),
            "round_trip": lat, "errors": errors})
        .to_string()
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "registry: {} lookups in {:.1} s: {:.0} lookups/s ({} runtimes, {} outstanding each)",
            self.lookups,
            self.duration,
            self.per_second(),
            self.runtimes,
            self.window
        )?;
        if let Some(s) = &self.latency {
            writeln!(
                f,
                "  round trip: p50 {} us, p95 {} us, p99 {} us, p99.9 {} us, max {} us",
                s.p50_us, s.p95_us, s.p99_us, s.p999_us, s.max_us
            )?;
        }
        for (code, e) in &self.errors {
            writeln!(
                f,
                "  code {code}: {} ({})",
                e.count,
                e.description.as_deref().unwrap_or("")
            )?;
        }
        Ok(())
    }
}

/// What one runtime measured.
#[derive(Debug, Default)]
struct Measured {
    lookups: u64,
    latency: Latencies,
    errors: BTreeMap<u16, ErrorStat>,
}

fn registry(domain: &str) -> String {
    format!("domain://registry.{domain}")
}

fn read_frame(id: u64, from: &str, to: &str, hyperty: &str) -> String {
    json!({"id": id, "type": "read", "from": from, "to": to, "body": {"resource": hyperty}})
        .to_string()
}

/// Sends `text` and returns the body of the response with `id` (acknowledging as it goes).
async fn request(s: &mut Session, id: u64, text: String) -> anyhow::Result<Value> {
    s.ws.send(Message::text(text)).await?;
    loop {
        let msg = tokio::time::timeout(DRAIN, s.ws.next())
            .await
            .context("no answer from the node")?
            .context("the node closed the connection")??;
        let Message::Text(text) = msg else { continue };
        let v: Value = serde_json::from_str(text.as_str())?;
        for m in v.as_array().cloned().unwrap_or_else(|| vec![v]) {
            if let Some(seq) = m["seq"].as_u64() {
                s.last_seq = s.last_seq.max(seq);
            }
            if m["id"].as_u64() == Some(id) && m["type"] == "response" {
                return Ok(m["body"].clone());
            }
        }
    }
}

/// Registers `s`'s hyperty and checks that a lookup finds it.
async fn register(s: &mut Session, domain: &str) -> anyhow::Result<()> {
    let from = format!("{}/registry", s.runtime_url);
    let value = json!({"hypertyURL": s.hyperty, "user": "user://idp.example/bench",
        "hypertyDescriptorURL": "hyperty-catalogue://example.com/bench", "expires": 3600,
        "resources": ["chat"], "dataSchemes": ["comm"]});
    let create = json!({"id": 10, "type": "create", "from": from, "to": registry(domain), "body": {"value": value}});
    let body = request(s, 10, create.to_string()).await?;
    anyhow::ensure!(body["code"] == 200, "create: {body}");
    let hyperty = s.hyperty.clone();
    let body = request(s, 11, read_frame(11, &from, &registry(domain), &hyperty)).await?;
    anyhow::ensure!(
        body["code"] == 200 && body["value"][&hyperty].is_object(),
        "read: {body}"
    );
    Ok(())
}

/// One runtime's loop: `window` lookups of `hyperty` outstanding until `end`, then the
/// outstanding ones drained.
async fn look_up(
    mut s: Session,
    domain: String,
    hyperty: String,
    window: u64,
    (start, end): (Instant, Instant),
) -> anyhow::Result<Measured> {
    let from = format!("{}/registry", s.runtime_url);
    let to = registry(&domain);
    let mut out = Measured::default();
    let mut sent: HashMap<u64, Instant> = HashMap::new();
    let mut next = READ_ID_BASE;
    let mut acked = s.last_seq;
    let mut batch = Vec::new();
    loop {
        let now = Instant::now();
        if now < end {
            while (sent.len() as u64) < window {
                batch.push(read_frame(next, &from, &to, &hyperty));
                sent.insert(next, now);
                next += 1;
            }
        }
        if !batch.is_empty() {
            let frame = if batch.len() == 1 {
                batch.pop().unwrap_or_default()
            } else {
                format!("[{}]", batch.join(","))
            };
            batch.clear();
            s.ws.send(Message::text(frame)).await?;
        }
        if s.last_seq >= acked + window {
            acked = s.last_seq;
            s.ws.send(Message::text(client::ack_frame(2, &s.runtime_url, acked)))
                .await?;
        }
        if sent.is_empty() && Instant::now() >= end {
            break;
        }
        let msg = match tokio::time::timeout(DRAIN, s.ws.next()).await {
            Ok(Some(msg)) => msg?,
            Ok(None) => anyhow::bail!("the node closed the connection"),
            Err(_) => anyhow::bail!("{} lookups unanswered after {DRAIN:?}", sent.len()),
        };
        let Message::Text(text) = msg else { continue };
        let arrived = Instant::now();
        let measured = arrived >= start && arrived < end;
        client::for_each_message(text.as_str(), |m| {
            if let Some(seq) = m.seq {
                s.last_seq = s.last_seq.max(seq);
            }
            let Event::Response {
                code,
                id: Some(id),
                description,
            } = m.event
            else {
                return;
            };
            let Some(at) = sent.remove(&id) else { return };
            if !measured {
                return;
            }
            if code == 200 {
                out.lookups += 1;
                let ns = arrived.saturating_duration_since(at).as_nanos();
                out.latency.record_ns(u64::try_from(ns).unwrap_or(u64::MAX));
            } else {
                record_error(&mut out.errors, code, || {
                    description.map(|d| d.into_owned())
                });
            }
        })?;
    }
    let _ =
        s.ws.send(Message::text(client::close_frame(3, &s.runtime_url)))
            .await;
    Ok(out)
}

pub(crate) async fn run(cfg: &RegistryArgs) -> anyhow::Result<Report> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("rethink.toml");
    std::fs::write(&config, "[connectors.registry]\n")?;
    let rate = cfg
        .session_rate
        .map(|r| (r.to_string(), (2 * r).to_string()));
    let env: Vec<(&str, &str)> = match &rate {
        Some((r, b)) => vec![
            ("RETHINK_SESSION__RATE_PER_SECOND", r.as_str()),
            ("RETHINK_SESSION__RATE_BURST", b.as_str()),
        ],
        None => Vec::new(),
    };
    let node = NodeProcess::start_with(&cfg.domain, Some(&config), false, &env).await?;
    let url = node.ws_url();
    let mut owner = client::open_session(&url, &cfg.domain, "owner").await?;
    register(&mut owner, &cfg.domain).await?;
    let hyperty = owner.hyperty.clone();
    let mut sessions = Vec::with_capacity(cfg.runtimes);
    for i in 0..cfg.runtimes {
        sessions.push(client::open_session(&url, &cfg.domain, &format!("reader{i}")).await?);
    }
    let start = Instant::now() + Duration::from_secs_f64(cfg.warmup);
    let end = start + Duration::from_secs_f64(cfg.duration);
    let tasks: Vec<_> = sessions
        .into_iter()
        .map(|s| {
            tokio::spawn(look_up(
                s,
                cfg.domain.clone(),
                hyperty.clone(),
                cfg.window,
                (start, end),
            ))
        })
        .collect();
    let mut total = Measured::default();
    for t in tasks {
        let m = t.await.context("a runtime panicked")??;
        total.lookups += m.lookups;
        total.latency.merge(m.latency);
        merge_errors(&mut total.errors, m.errors);
    }
    drop(owner);
    drop(node);
    Ok(Report {
        runtimes: cfg.runtimes,
        window: cfg.window,
        duration: cfg.duration,
        lookups: total.lookups,
        latency: total.latency.summarize(),
        errors: total.errors,
    })
}
