//! The result of a `ws` run, printed as text or as one JSON object, and the
//! pieces every scenario's report shares (node line, latency lines, errors by
//! code, RSS), so that all reports read alike.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Value, json};

use crate::attack::AttackReport;
use crate::cli::{Target, WsConfig, WsMode};
use crate::stats::{ErrorStat, Summary};

/// Everything a `ws` run reports.
#[derive(Debug)]
pub(crate) struct Report {
    pub(crate) config: WsConfig,
    pub(crate) url: String,
    pub(crate) node_pid: Option<u32>,
    pub(crate) sessions: usize,
    pub(crate) connect_secs: f64,
    /// `None` in idle mode.
    pub(crate) traffic: Option<Traffic>,
    /// What the attacker saw (`--attack-stub`).
    pub(crate) attack: Option<AttackReport>,
    /// Error responses by code.
    pub(crate) errors: BTreeMap<u16, ErrorStat>,
    /// Sessions that ended early, and why.
    pub(crate) failures: Vec<String>,
    pub(crate) rss: Rss,
}

/// Message counts and latencies of the PING scenario.
#[derive(Debug)]
pub(crate) struct Traffic {
    pub(crate) sent: u64,
    pub(crate) received: u64,
    pub(crate) received_in_window: u64,
    /// PING messages answered by an error response.
    pub(crate) refused: u64,
    /// Sent, but neither received nor refused by the end of the drain.
    pub(crate) lost: u64,
    pub(crate) acks_sent: u64,
    pub(crate) ok_responses: u64,
    pub(crate) other_messages: u64,
    pub(crate) bad_frames: u64,
    pub(crate) measured_secs: f64,
    /// Messages received per second in the measured window.
    pub(crate) throughput: f64,
    /// From the scheduled send time (coordinated-omission safe; includes the
    /// generator's timer lateness).
    pub(crate) latency: Option<Summary>,
    /// From the actual send time (the node and the network only).
    pub(crate) service_latency: Option<Summary>,
}

/// The node's resident set size in MiB, where it could be read.
#[derive(Debug)]
pub(crate) struct Rss {
    pub(crate) start: Option<f64>,
    /// Once the clients are set up (sessions open; users registered, in their rooms).
    pub(crate) connected: Option<f64>,
    pub(crate) end: Option<f64>,
    pub(crate) peak: Option<f64>,
}

impl Rss {
    /// The readings, with the peak the highest of them and of the `sampled` peak.
    pub(crate) fn new(
        start: Option<f64>,
        connected: Option<f64>,
        end: Option<f64>,
        sampled: Option<f64>,
    ) -> Self {
        let peak = [sampled, start, connected, end]
            .into_iter()
            .flatten()
            .reduce(f64::max);
        Rss {
            start,
            connected,
            end,
            peak,
        }
    }

    /// The readings as JSON (MiB).
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "start": mib(self.start),
            "connected": mib(self.connected),
            "end": mib(self.end),
            "peak": mib(self.peak),
        })
    }

    /// The text line, without its newline (a scenario may append to it).
    pub(crate) fn write_line(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.2}"));
        write!(
            f,
            "  node RSS MiB start {}, connected {}, end {}, peak {}",
            show(self.start),
            show(self.connected),
            show(self.end),
            show(self.peak)
        )
    }
}

pub(crate) fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn mib(v: Option<f64>) -> Value {
    v.map_or(Value::Null, |v| json!(round2(v)))
}

/// Error responses by code as JSON: `{"503": {"count": 3, "description": ...}}`.
pub(crate) fn errors_json(errors: &BTreeMap<u16, ErrorStat>) -> Value {
    let map: serde_json::Map<String, Value> = errors
        .iter()
        .map(|(code, e)| {
            (
                code.to_string(),
                json!({"count": e.count, "description": e.description}),
            )
        })
        .collect();
    Value::Object(map)
}

/// The `errors` lines: one per code, or `none`.
pub(crate) fn write_errors(
    f: &mut fmt::Formatter<'_>,
    errors: &BTreeMap<u16, ErrorStat>,
) -> fmt::Result {
    if errors.is_empty() {
        return writeln!(f, "  errors       none");
    }
    for (code, e) in errors {
        let desc = e.description.as_deref().unwrap_or("");
        writeln!(f, "  errors       {code}: {} {desc:?}", e.count)?;
    }
    Ok(())
}

/// The `failures` lines (the first five), if any.
pub(crate) fn write_failures(
    f: &mut fmt::Formatter<'_>,
    failures: &[String],
    what: &str,
) -> fmt::Result {
    if failures.is_empty() {
        return Ok(());
    }
    writeln!(f, "  failures     {} {what}, e.g.:", failures.len())?;
    for fail in failures.iter().take(5) {
        writeln!(f, "                 {fail}")?;
    }
    Ok(())
}

/// The `node` line: URL, who started it, domain.
pub(crate) fn write_node(f: &mut fmt::Formatter<'_>, url: &str, target: &Target) -> fmt::Result {
    let who = if target.url.is_none() {
        "started by the bench"
    } else {
        "external"
    };
    writeln!(f, "  node         {url} ({who}, domain {})", target.domain)
}

fn ms(us: u32) -> f64 {
    f64::from(us) / 1000.0
}

/// A latency summary as JSON (µs).
pub(crate) fn summary_json(l: Option<&Summary>) -> Value {
    l.map_or(Value::Null, |l| {
        json!({
            "count": l.count,
            "mean": round2(l.mean_us),
            "p50": l.p50_us,
            "p95": l.p95_us,
            "p99": l.p99_us,
            "p99_9": l.p999_us,
            "max": l.max_us,
        })
    })
}

/// One text line of latency percentiles (ms) under `label`.
pub(crate) fn write_latency(
    f: &mut fmt::Formatter<'_>,
    label: &str,
    l: Option<&Summary>,
) -> fmt::Result {
    match l {
        Some(l) => writeln!(
            f,
            "  {label:<32}  p50 {:.2}  p95 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  \
             mean {:.2}  (n={})",
            ms(l.p50_us),
            ms(l.p95_us),
            ms(l.p99_us),
            ms(l.p999_us),
            ms(l.max_us),
            l.mean_us / 1000.0,
            l.count
        ),
        None => writeln!(f, "  {label:<32}  n/a"),
    }
}

impl Report {
    /// The report as one JSON object (latencies in µs, RSS in MiB).
    pub(crate) fn to_json(&self) -> Value {
        let config = match &self.config.mode {
            WsMode::Load(l) => json!({
                "mode": "load",
                "runtimes": l.runtimes,
                "senders": l.senders(),
                "bidirectional": l.bidirectional,
                "rate": l.rate,
                "window": l.window,
                "duration_secs": l.duration.as_secs_f64(),
                "warmup_secs": l.warmup.as_secs_f64(),
                "size": l.size,
                "batch": l.batch,
            }),
            WsMode::Idle(i) => json!({
                "mode": "idle",
                "sessions": i.sessions,
                "hold_secs": i.hold.as_secs_f64(),
            }),
        };
        let traffic = self.traffic.as_ref().map(|t| {
            json!({
                "sent": t.sent,
                "received": t.received,
                "received_in_window": t.received_in_window,
                "refused": t.refused,
                "lost": t.lost,
                "acks_sent": t.acks_sent,
                "ok_responses": t.ok_responses,
                "other_messages": t.other_messages,
                "bad_frames": t.bad_frames,
                "measured_secs": t.measured_secs,
                "messages_per_sec": round2(t.throughput),
                "latency_us": summary_json(t.latency.as_ref()),
                "service_latency_us": summary_json(t.service_latency.as_ref()),
            })
        });
        json!({
            "scenario": "ws",
            "url": self.url,
            "node_started_by_bench": self.config.target.url.is_none(),
            "node_pid": self.node_pid,
            "domain": self.config.target.domain,
            "config": config,
            "sessions": self.sessions,
            "connect_secs": round2(self.connect_secs),
            "traffic": traffic,
            "attack": self.attack.as_ref().map(AttackReport::to_json),
            "errors": errors_json(&self.errors),
            "failures": self.failures.len(),
            "first_failures": self.failures.iter().take(5).collect::<Vec<_>>(),
            "rss_mib": self.rss.to_json(),
        })
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "rethink-bench ws")?;
        write_node(f, &self.url, &self.config.target)?;
        match &self.config.mode {
            WsMode::Load(l) => {
                let direction = if l.bidirectional {
                    "bidirectional"
                } else {
                    "one-way"
                };
                writeln!(
                    f,
                    "  runtimes     {} ({} pairs, {direction}, {} senders)",
                    l.runtimes,
                    l.runtimes / 2,
                    l.senders()
                )?;
                match l.rate {
                    Some(r) => writeln!(f, "  offered      {r} msg/s on a fixed timetable")?,
                    None => writeln!(f, "  offered      unlimited (window-bound)")?,
                }
                writeln!(
                    f,
                    "  messages     ~{} B, batch {}, window {}",
                    l.size, l.batch, l.window
                )?;
                writeln!(
                    f,
                    "  time         warm-up {:.1} s, measured {:.1} s",
                    l.warmup.as_secs_f64(),
                    l.duration.as_secs_f64()
                )?;
            }
            WsMode::Idle(i) => {
                writeln!(
                    f,
                    "  idle         {} sessions held {:.1} s",
                    i.sessions,
                    i.hold.as_secs_f64()
                )?;
            }
        }
        writeln!(f, "results")?;
        writeln!(
            f,
            "  connected    {} sessions in {:.2} s",
            self.sessions, self.connect_secs
        )?;
        if let Some(t) = &self.traffic {
            writeln!(f, "  sent         {}", t.sent)?;
            writeln!(
                f,
                "  received     {} ({} in the measured window)",
                t.received, t.received_in_window
            )?;
            writeln!(f, "  refused      {} (error responses to PING)", t.refused)?;
            writeln!(
                f,
                "  lost         {} (neither received nor refused)",
                t.lost
            )?;
            writeln!(f, "  throughput   {:.1} msg/s", t.throughput)?;
            if t.latency.is_none() && t.service_latency.is_none() {
                writeln!(
                    f,
                    "  latency      no message received in the measured window"
                )?;
            } else {
                write_latency(f, "latency ms (from scheduled send)", t.latency.as_ref())?;
                write_latency(
                    f,
                    "latency ms (from actual send)",
                    t.service_latency.as_ref(),
                )?;
            }
            if t.other_messages + t.bad_frames > 0 {
                writeln!(
                    f,
                    "  unexpected   {} other messages, {} unparsable frames",
                    t.other_messages, t.bad_frames
                )?;
            }
        }
        write_errors(f, &self.errors)?;
        write_failures(f, &self.failures, "session(s) ended early")?;
        if let Some(attack) = &self.attack {
            write!(f, "{attack}")?;
        }
        self.rss.write_line(f)?;
        if let (Some(start), Some(end)) = (self.rss.start, self.rss.end)
            && self.sessions > 0
        {
            let per_session_kib = (end - start) * 1024.0 / self.sessions as f64;
            write!(f, " ({per_session_kib:.1} KiB per session)")?;
        }
        if self.node_pid.is_none() {
            write!(f, " (pass --node-pid to read it)")?;
        }
        writeln!(f)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::cli::{IdleConfig, LoadConfig, Target};

    fn idle_report() -> Report {
        Report {
            config: WsConfig {
                target: Target {
                    url: None,
                    node_pid: None,
                    node_config: None,
                    domain: "bench.local".into(),
                },
                mode: WsMode::Idle(IdleConfig {
                    sessions: 10,
                    hold: Duration::from_secs(1),
                }),
                connect_parallel: 50,
                json: true,
            },
            url: "ws://127.0.0.1:1/ws".into(),
            node_pid: Some(42),
            sessions: 10,
            connect_secs: 0.123,
            traffic: None,
            attack: None,
            errors: BTreeMap::from([(
                503,
                ErrorStat {
                    count: 3,
                    description: Some("outbox full".into()),
                },
            )]),
            failures: vec![],
            rss: Rss {
                start: Some(10.0),
                connected: Some(11.004),
                end: Some(11.5),
                peak: None,
            },
        }
    }

    fn summary(base_us: u32) -> Summary {
        Summary {
            count: 1000,
            mean_us: f64::from(base_us) + 0.456,
            p50_us: base_us,
            p95_us: base_us + 100,
            p99_us: base_us + 200,
            p999_us: base_us + 300,
            max_us: base_us + 400,
        }
    }

    fn load_report(latency: Option<Summary>, service_latency: Option<Summary>) -> Report {
        let mut r = idle_report();
        r.config.mode = WsMode::Load(LoadConfig {
            runtimes: 4,
            bidirectional: false,
            rate: Some(1000.0),
            window: 64,
            duration: Duration::from_secs(1),
            warmup: Duration::from_secs(1),
            size: 200,
            batch: 1,
            attack: None,
        });
        r.sessions = 4;
        r.errors.clear();
        r.traffic = Some(Traffic {
            sent: 2000,
            received: 2000,
            received_in_window: 1000,
            refused: 0,
            lost: 0,
            acks_sent: 30,
            ok_responses: 0,
            other_messages: 0,
            bad_frames: 0,
            measured_secs: 1.0,
            throughput: 1000.0,
            latency,
            service_latency,
        });
        r
    }

    #[test]
    fn json_report_has_both_latencies() {
        let v = load_report(Some(summary(1250)), Some(summary(250))).to_json();
        let t = &v["traffic"];
        assert_eq!(
            t["latency_us"],
            json!({"count": 1000, "mean": 1250.46, "p50": 1250, "p95": 1350,
                   "p99": 1450, "p99_9": 1550, "max": 1650})
        );
        assert_eq!(
            t["service_latency_us"],
            json!({"count": 1000, "mean": 250.46, "p50": 250, "p95": 350,
                   "p99": 450, "p99_9": 550, "max": 650})
        );
        let v = load_report(None, None).to_json();
        assert_eq!(v["traffic"]["latency_us"], Value::Null);
        assert_eq!(v["traffic"]["service_latency_us"], Value::Null);
    }

    #[test]
    fn text_report_has_both_latencies() {
        let text = load_report(Some(summary(1250)), Some(summary(250))).to_string();
        let line = |label: &str| {
            text.lines()
                .find(|l| l.trim_start().starts_with(label))
                .unwrap_or_else(|| panic!("no {label:?} line in {text}"))
                .to_owned()
        };
        let scheduled = line("latency ms (from scheduled send)");
        assert!(scheduled.contains("p50 1.25  p95 1.35"), "{text}");
        assert!(
            scheduled.contains("max 1.65  mean 1.25  (n=1000)"),
            "{text}"
        );
        let actual = line("latency ms (from actual send)");
        assert!(actual.contains("p50 0.25  p95 0.35"), "{text}");
        assert!(actual.contains("p99 0.45  p99.9 0.55  max 0.65"), "{text}");
        // Both lines line up.
        assert_eq!(scheduled.find("p50"), actual.find("p50"), "{text}");

        let text = load_report(None, None).to_string();
        assert!(text.contains("no message received"), "{text}");
        assert!(!text.contains("from actual send"), "{text}");
    }

    #[test]
    fn json_report_has_the_figures() {
        let v = idle_report().to_json();
        assert_eq!(v["config"]["mode"], "idle");
        assert_eq!(v["errors"]["503"]["count"], 3);
        assert_eq!(v["rss_mib"]["connected"], 11.0);
        assert_eq!(v["rss_mib"]["peak"], Value::Null);
        assert_eq!(v["traffic"], Value::Null);
    }

    #[test]
    fn text_report_mentions_rss_and_errors() {
        let text = idle_report().to_string();
        assert!(text.contains("503: 3"), "{text}");
        assert!(text.contains("start 10.00"), "{text}");
        assert!(text.contains("KiB per session"), "{text}");
    }
}
