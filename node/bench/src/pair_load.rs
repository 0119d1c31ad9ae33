//! Load between two nodes, shared by the scenarios that start two (`crossdomain`, `cluster`):
//! senders on node A paired with receivers on node B (or on A itself), the PING traffic of
//! `ws_load::load` with each node's CPU time (`cpu.rs`) over the measured window, and the
//! report both scenarios print.

use std::time::{Duration, Instant};

use crate::cli::LoadConfig;
use crate::client::Session;
use crate::cpu::{CpuMark, CpuUse};
use crate::report::Traffic;
use crate::ws_load;

/// What to run: the pacing of the senders, common to the two-node scenarios.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pacing {
    /// Total offered messages per second (0 = as fast as the windows allow).
    pub(crate) rate: f64,
    /// Most messages a sender has in flight.
    pub(crate) window: u32,
    /// Measured seconds.
    pub(crate) duration: f64,
    /// Seconds of load before the measurement starts.
    pub(crate) warmup: f64,
    /// Approximate size of one message in bytes.
    pub(crate) size: usize,
    /// Both runtimes of a pair send (else the first sends, the second receives).
    pub(crate) bidirectional: bool,
}

/// What a two-node run measured.
#[derive(Debug)]
pub(crate) struct PairReport {
    /// The first line of the text report (what ran).
    pub(crate) title: String,
    /// The parameters, as JSON fields of the report.
    pub(crate) params: serde_json::Value,
    pub(crate) traffic: Traffic,
    pub(crate) cpu_a: CpuUse,
    pub(crate) cpu_b: CpuUse,
    pub(crate) errors: Vec<String>,
}

/// Runs the PING load between `firsts[i]` (a sender) and `seconds[i]` (its partner) and reads
/// the CPU time of the processes `pids` (A, B) over the measured window. `url` and `pid_a`
/// name node A for the load's own report of failures.
pub(crate) async fn run(
    firsts: Vec<Session>,
    seconds: Vec<Session>,
    pacing: &Pacing,
    url: &str,
    pids: (Option<u32>, Option<u32>),
) -> (Traffic, CpuUse, CpuUse, Vec<String>) {
    // Pairs (2i, 2i + 1): the sender, its partner.
    let sessions: Vec<Session> = firsts
        .into_iter()
        .zip(seconds)
        .flat_map(|(a, b)| [a, b])
        .collect();
    let cfg = LoadConfig {
        runtimes: sessions.len(),
        bidirectional: pacing.bidirectional,
        rate: (pacing.rate > 0.0).then_some(pacing.rate),
        window: pacing.window,
        duration: Duration::from_secs_f64(pacing.duration),
        warmup: Duration::from_secs_f64(pacing.warmup),
        size: pacing.size,
        batch: 1,
        attack: None,
    };
    let (pid_a, pid_b) = pids;
    // CPU marks at the measured window's edges (the load starts right after this).
    let start = Instant::now();
    let marks = tokio::spawn({
        let (warmup, duration) = (cfg.warmup, cfg.duration);
        async move {
            tokio::time::sleep_until((start + warmup).into()).await;
            let (a0, b0) = (CpuMark::now(pid_a), CpuMark::now(pid_b));
            tokio::time::sleep_until((start + warmup + duration).into()).await;
            let (a1, b1) = (CpuMark::now(pid_a), CpuMark::now(pid_b));
            (a0.until(a1, duration), b0.until(b1, duration))
        }
    });
    let (traffic, stats, _, _) = ws_load::load(sessions, None, &cfg, url, pid_a).await;
    let (cpu_a, cpu_b) = marks.await.unwrap_or_default();
    let mut errors = stats.failures;
    for (code, e) in &stats.errors {
        errors.push(format!("{code}: {} times ({:?})", e.count, e.description));
    }
    (traffic, cpu_a, cpu_b, errors)
}

impl PairReport {
    /// CPU µs per message received of (A, B, both).
    fn cpu_per_message(&self) -> (Option<f64>, Option<f64>, Option<f64>) {
        let rate = self.traffic.throughput;
        let a = self.cpu_a.node_us_per_op(rate);
        let b = self.cpu_b.node_us_per_op(rate);
        (a, b, a.zip(b).map(|(a, b)| a + b))
    }

    /// The report as one JSON object: the parameters, then the figures.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        let t = &self.traffic;
        let (a, b, both) = self.cpu_per_message();
        let lat = |s: &Option<crate::stats::Summary>| {
            s.as_ref().map(|s| {
                serde_json::json!({"p50_us": s.p50_us, "p99_us": s.p99_us,
                    "p999_us": s.p999_us, "max_us": s.max_us, "count": s.count})
            })
        };
        let mut out = self.params.clone();
        let figures = serde_json::json!({
            "sent": t.sent, "received": t.received, "refused": t.refused, "lost": t.lost,
            "throughput": t.throughput,
            "latency": lat(&t.latency), "service_latency": lat(&t.service_latency),
            "cpu_cores": {"a": self.cpu_a.node_cores, "b": self.cpu_b.node_cores,
                "bench": self.cpu_a.bench_cores},
            "cpu_us_per_message": {"a": a, "b": b, "both": both},
            "errors": self.errors,
        });
        if let (Some(out), serde_json::Value::Object(figures)) = (out.as_object_mut(), figures) {
            out.extend(figures);
        }
        out
    }
}

impl std::fmt::Display for PairReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = &self.traffic;
        writeln!(f, "{}", self.title)?;
        writeln!(
            f,
            "messages   sent {}  received {}  refused {}  lost {}",
            t.sent, t.received, t.refused, t.lost
        )?;
        writeln!(f, "throughput {:.0} msg/s received", t.throughput)?;
        for (name, s) in [("latency", &t.latency), ("service", &t.service_latency)] {
            if let Some(s) = s {
                writeln!(
                    f,
                    "{name:<10} p50 {} us  p99 {} us  p99.9 {} us  max {} us ({} samples)",
                    s.p50_us, s.p99_us, s.p999_us, s.max_us, s.count
                )?;
            }
        }
        let (a, b, both) = self.cpu_per_message();
        let us = |v: Option<f64>| v.map_or("?".to_owned(), |v| format!("{v:.1} us"));
        let cores = |v: Option<f64>| v.map_or("?".to_owned(), |v| format!("{v:.2}"));
        writeln!(
            f,
            "node CPU   A {} cores, {} /msg;  B {} cores, {} /msg;  both {} /msg;  bench {} cores",
            cores(self.cpu_a.node_cores),
            us(a),
            cores(self.cpu_b.node_cores),
            us(b),
            us(both),
            cores(self.cpu_a.bench_cores)
        )?;
        for e in &self.errors {
            writeln!(f, "error      {e}")?;
        }
        Ok(())
    }
}

/// The offered rate as the title says it.
pub(crate) fn offered(rate: f64, window: u32) -> String {
    if rate > 0.0 {
        format!("{rate} msg/s offered")
    } else {
        format!("unlimited (window {window})")
    }
}
