//! The result of a `matrix` run, printed as text or as one JSON object, laid
//! out like the `ws` report (same node, latency, errors and RSS lines).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Instant;

use serde_json::{Value, json};

use crate::cli::MatrixConfig;
use crate::cpu::CpuUse;
use crate::report::{
    Rss, errors_json, round2, summary_json, write_errors, write_failures, write_latency, write_node,
};
use crate::stats::{ErrorStat, Summary};

/// Everything a `matrix` run reports.
#[derive(Debug)]
pub(crate) struct MatrixReport {
    pub(crate) config: MatrixConfig,
    pub(crate) url: String,
    pub(crate) node_pid: Option<u32>,
    pub(crate) setup: Setup,
    pub(crate) traffic: MatrixTraffic,
    /// Answers other than 200, by status.
    pub(crate) errors: BTreeMap<u16, ErrorStat>,
    pub(crate) failures: Vec<String>,
    pub(crate) rss: Rss,
    /// CPU over the measured window.
    pub(crate) cpu: CpuUse,
}

/// One setup phase: how many requests, how long, the node's RSS after it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Phase {
    pub(crate) requests: usize,
    pub(crate) secs: f64,
    pub(crate) rss_after: Option<f64>,
}

impl Phase {
    /// `requests` made since `started`; the node's RSS now.
    pub(crate) fn since(requests: usize, started: Instant, rss_after: Option<f64>) -> Self {
        Phase {
            requests,
            secs: started.elapsed().as_secs_f64(),
            rss_after,
        }
    }

    fn per_sec(&self) -> f64 {
        if self.secs > 0.0 {
            self.requests as f64 / self.secs
        } else {
            0.0
        }
    }

    fn to_json(self) -> Value {
        json!({"requests": self.requests, "secs": round2(self.secs),
               "per_sec": round2(self.per_sec()), "rss_mib_after": self.rss_after.map(round2)})
    }
}

/// The setup phases, in order.
#[derive(Debug)]
pub(crate) struct Setup {
    pub(crate) register: Phase,
    pub(crate) create_rooms: Phase,
    pub(crate) join: Phase,
    pub(crate) initial_sync: Phase,
}

/// Sends, deliveries and their latencies.
#[derive(Debug)]
pub(crate) struct MatrixTraffic {
    pub(crate) attempted: u64,
    pub(crate) acknowledged: u64,
    pub(crate) acknowledged_in_window: u64,
    pub(crate) measured_secs: f64,
    /// Acknowledged sends per second, over the sends started in the measured window.
    pub(crate) sends_per_sec: f64,
    /// The PUT's round trip.
    pub(crate) send_latency: Option<Summary>,
    /// From the start of the PUT to the first receiver's sync returning it.
    pub(crate) first_delivery: Option<Summary>,
    /// The same for every receiver.
    pub(crate) every_delivery: Option<Summary>,
    pub(crate) expected_deliveries: u64,
    pub(crate) delivered: u64,
    /// Expected deliveries not seen by the end of the drain.
    pub(crate) missing: u64,
    pub(crate) unacknowledged_delivered: u64,
    pub(crate) repeats: u64,
    pub(crate) own_echoes: u64,
    pub(crate) limited_timelines: u64,
    pub(crate) syncs: u64,
    pub(crate) transport_errors: u64,
}

impl MatrixReport {
    /// The report as one JSON object (latencies in µs, RSS in MiB).
    pub(crate) fn to_json(&self) -> Value {
        let c = &self.config;
        let t = &self.traffic;
        json!({
            "scenario": "matrix",
            "url": self.url,
            "node_started_by_bench": c.target.url.is_none(),
            "node_pid": self.node_pid,
            "domain": c.target.domain,
            "config": {
                "users": c.users,
                "rooms": c.rooms,
                "senders": c.senders,
                "rate": c.rate,
                "duration_secs": c.duration.as_secs_f64(),
                "warmup_secs": c.warmup.as_secs_f64(),
                "setup_parallel": c.setup_parallel,
            },
            "setup": {
                "register": self.setup.register.to_json(),
                "create_rooms": self.setup.create_rooms.to_json(),
                "join": self.setup.join.to_json(),
                "initial_sync": self.setup.initial_sync.to_json(),
            },
            "traffic": {
                "attempted": t.attempted,
                "acknowledged": t.acknowledged,
                "acknowledged_in_window": t.acknowledged_in_window,
                "measured_secs": t.measured_secs,
                "sends_per_sec": round2(t.sends_per_sec),
                "send_latency_us": summary_json(t.send_latency.as_ref()),
                "sync_latency_first_us": summary_json(t.first_delivery.as_ref()),
                "sync_latency_every_us": summary_json(t.every_delivery.as_ref()),
                "expected_deliveries": t.expected_deliveries,
                "delivered": t.delivered,
                "missing": t.missing,
                "unacknowledged_delivered": t.unacknowledged_delivered,
                "repeats": t.repeats,
                "own_echoes": t.own_echoes,
                "limited_timelines": t.limited_timelines,
                "syncs": t.syncs,
                "transport_errors": t.transport_errors,
            },
            "errors": errors_json(&self.errors),
            "failures": self.failures.len(),
            "first_failures": self.failures.iter().take(5).collect::<Vec<_>>(),
            "rss_mib": self.rss.to_json(),
            "cpu": {
                "node_cores": self.cpu.node_cores.map(round2),
                "node_us_per_send": self.cpu.node_us_per_op(t.sends_per_sec).map(round2),
                "bench_cores": self.cpu.bench_cores.map(round2),
            },
        })
    }
}

fn write_phase(f: &mut fmt::Formatter<'_>, label: &str, what: &str, p: Phase) -> fmt::Result {
    write!(
        f,
        "  {label:<12} {} {what} in {:.2} s ({:.1}/s)",
        p.requests,
        p.secs,
        p.per_sec()
    )?;
    match p.rss_after {
        Some(rss) => writeln!(f, ", node RSS {rss:.2} MiB after"),
        None => writeln!(f),
    }
}

/// The CPU line: the node's cores and CPU per send, the bench's cores.
fn write_cpu(f: &mut fmt::Formatter<'_>, cpu: &CpuUse, sends_per_sec: f64) -> fmt::Result {
    let cores = |c: Option<f64>| c.map_or_else(|| "n/a".to_owned(), |c| format!("{c:.2}"));
    write!(f, "  cpu          node {} cores", cores(cpu.node_cores))?;
    if let Some(us) = cpu.node_us_per_op(sends_per_sec) {
        write!(f, " ({us:.0} µs per send)")?;
    }
    writeln!(f, ", bench {} cores", cores(cpu.bench_cores))
}

impl fmt::Display for MatrixReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        let t = &self.traffic;
        writeln!(f, "rethink-bench matrix")?;
        write_node(f, &self.url, &c.target)?;
        writeln!(
            f,
            "  users        {} in {} rooms (~{} per room), {} senders",
            c.users,
            c.rooms,
            c.users / c.rooms,
            c.senders
        )?;
        match c.rate {
            Some(r) => writeln!(f, "  offered      {r} sends/s on a fixed timetable")?,
            None => writeln!(f, "  offered      unlimited (one PUT in flight per sender)")?,
        }
        writeln!(
            f,
            "  time         warm-up {:.1} s, measured {:.1} s",
            c.warmup.as_secs_f64(),
            c.duration.as_secs_f64()
        )?;
        writeln!(f, "setup")?;
        write_phase(f, "register", "users", self.setup.register)?;
        write_phase(f, "createRoom", "rooms", self.setup.create_rooms)?;
        write_phase(f, "join", "joins", self.setup.join)?;
        write_phase(f, "first sync", "syncs", self.setup.initial_sync)?;
        writeln!(f, "results")?;
        writeln!(
            f,
            "  sends        {} attempted, {} acknowledged ({} in the measured window)",
            t.attempted, t.acknowledged, t.acknowledged_in_window
        )?;
        writeln!(f, "  throughput   {:.1} sends/s", t.sends_per_sec)?;
        write_latency(f, "send ms (PUT round trip)", t.send_latency.as_ref())?;
        write_latency(
            f,
            "send-to-sync ms (first receiver)",
            t.first_delivery.as_ref(),
        )?;
        write_latency(
            f,
            "send-to-sync ms (every receiver)",
            t.every_delivery.as_ref(),
        )?;
        writeln!(
            f,
            "  deliveries   {} expected, {} delivered, {} missing",
            t.expected_deliveries, t.delivered, t.missing
        )?;
        writeln!(
            f,
            "  syncs        {} returned, {} cut timelines (limited), {} repeated messages, \
             {} own echoes",
            t.syncs, t.limited_timelines, t.repeats, t.own_echoes
        )?;
        if t.unacknowledged_delivered > 0 {
            writeln!(
                f,
                "  unexpected   {} deliveries of sends that were not acknowledged",
                t.unacknowledged_delivered
            )?;
        }
        write_errors(f, &self.errors)?;
        if t.transport_errors > 0 {
            writeln!(
                f,
                "  no answer    {} requests (connection errors, timeouts)",
                t.transport_errors
            )?;
        }
        write_failures(f, &self.failures, "failure(s)")?;
        write_cpu(f, &self.cpu, t.sends_per_sec)?;
        self.rss.write_line(f)?;
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
    use crate::cli::Target;

    fn summary(base_us: u32) -> Summary {
        Summary {
            count: 500,
            mean_us: f64::from(base_us),
            p50_us: base_us,
            p95_us: base_us + 100,
            p99_us: base_us + 200,
            p999_us: base_us + 300,
            max_us: base_us + 400,
        }
    }

    fn report() -> MatrixReport {
        let phase = |requests, secs| Phase {
            requests,
            secs,
            rss_after: Some(20.0),
        };
        MatrixReport {
            config: MatrixConfig {
                target: Target {
                    url: None,
                    node_pid: None,
                    node_config: None,
                    domain: "bench.local".into(),
                },
                users: 100,
                rooms: 10,
                senders: 20,
                rate: None,
                duration: Duration::from_secs(10),
                warmup: Duration::from_secs(2),
                setup_parallel: 8,
                json: false,
            },
            url: "http://127.0.0.1:1".into(),
            node_pid: Some(7),
            setup: Setup {
                register: phase(100, 2.0),
                create_rooms: phase(10, 0.5),
                join: phase(90, 0.0),
                initial_sync: phase(100, 1.0),
            },
            traffic: MatrixTraffic {
                attempted: 5001,
                acknowledged: 5000,
                acknowledged_in_window: 4000,
                measured_secs: 10.0,
                sends_per_sec: 400.0,
                send_latency: Some(summary(8_000)),
                first_delivery: Some(summary(9_000)),
                every_delivery: None,
                expected_deliveries: 45_000,
                delivered: 44_990,
                missing: 10,
                unacknowledged_delivered: 0,
                repeats: 0,
                own_echoes: 5000,
                limited_timelines: 0,
                syncs: 30_000,
                transport_errors: 0,
            },
            errors: BTreeMap::from([(
                429,
                ErrorStat {
                    count: 1,
                    description: Some("M_LIMIT_EXCEEDED: slow down".into()),
                },
            )]),
            failures: vec![],
            rss: Rss::new(Some(25.0), Some(30.0), Some(35.5), None),
            cpu: CpuUse {
                node_cores: Some(1.3),
                bench_cores: Some(0.5),
            },
        }
    }

    #[test]
    fn json_report_has_the_figures() {
        let v = report().to_json();
        assert_eq!(v["scenario"], "matrix");
        assert_eq!(v["config"]["senders"], 20);
        assert_eq!(v["setup"]["register"]["per_sec"], 50.0);
        assert_eq!(v["setup"]["join"]["per_sec"], 0.0);
        let t = &v["traffic"];
        assert_eq!(t["sends_per_sec"], 400.0);
        assert_eq!(t["send_latency_us"]["p99"], 8_200);
        assert_eq!(t["sync_latency_first_us"]["p50"], 9_000);
        assert_eq!(t["sync_latency_every_us"], Value::Null);
        assert_eq!(t["missing"], 10);
        assert_eq!(v["errors"]["429"]["count"], 1);
        assert_eq!(v["rss_mib"]["peak"], 35.5);
        assert_eq!(v["cpu"]["node_cores"], 1.3);
        assert_eq!(v["cpu"]["node_us_per_send"], 3250.0);
        assert_eq!(v["cpu"]["bench_cores"], 0.5);
    }

    #[test]
    fn text_report_lines_up_with_ws() {
        let text = report().to_string();
        assert!(text.contains("throughput   400.0 sends/s"), "{text}");
        assert!(
            text.contains("register     100 users in 2.00 s (50.0/s), node RSS 20.00 MiB after"),
            "{text}"
        );
        assert!(
            text.contains("45000 expected, 44990 delivered, 10 missing"),
            "{text}"
        );
        assert!(
            text.contains("429: 1 \"M_LIMIT_EXCEEDED: slow down\""),
            "{text}"
        );
        assert!(
            text.contains("start 25.00, connected 30.00, end 35.50"),
            "{text}"
        );
        assert!(
            text.contains("cpu          node 1.30 cores (3250 µs per send), bench 0.50 cores"),
            "{text}"
        );
        let line = |label: &str| {
            text.lines()
                .find(|l| l.trim_start().starts_with(label))
                .unwrap_or_else(|| panic!("no {label:?} line in {text}"))
                .to_owned()
        };
        let send = line("send ms");
        let first = line("send-to-sync ms (first");
        assert!(send.contains("p50 8.00  p95 8.10  p99 8.20"), "{text}");
        assert_eq!(send.find("p50"), first.find("p50"), "{text}");
        assert!(line("send-to-sync ms (every").ends_with("n/a"), "{text}");
    }
}
