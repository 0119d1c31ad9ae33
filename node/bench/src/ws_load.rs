//! The `ws` scenarios: open the sessions (bounded parallelism), then either
//! drive PING traffic between partner runtimes for warm-up + measured time and
//! drain, or hold idle sessions; sample the node's RSS throughout.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::attack::{AttackReport, Attacker, http_authority};
use crate::cli::{IdleConfig, LoadConfig, WsConfig, WsMode};
use crate::client::{self, ClientError, PingTemplate, Session};
use crate::node_proc::{self, NodeError};
use crate::node_under_test::{NodeUnderTest, Protocol, RssSampler, warn_about_open_files};
use crate::report::{Report, Rss, Traffic};
use crate::runtime::{self, Clock, Outgoing, Phase, Role, RuntimeStats, Schedule, Totals, ns};

/// Most time given to in-flight messages after the senders stop.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a scenario could not run.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoadError {
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error("{failed} of {total} sessions could not be opened; first error: {first}")]
    Connect {
        failed: usize,
        total: usize,
        first: ClientError,
    },
    #[error("the attacker's session could not be opened: {0}")]
    Attacker(#[source] ClientError),
}

/// Runs the `ws` command and returns its report.
pub(crate) async fn run(cfg: &WsConfig) -> Result<Report, LoadError> {
    let sessions_wanted = match &cfg.mode {
        WsMode::Load(l) => l.runtimes,
        WsMode::Idle(i) => i.sessions,
    };
    // Each session is one socket here, and one more in the node when it is our child
    // (it inherits our limit).
    let per_session = if cfg.target.url.is_none() { 2 } else { 1 };
    warn_about_open_files(sessions_wanted as u64 * per_session);

    let node = NodeUnderTest::resolve(&cfg.target).await?;
    let url = node.url(Protocol::Ws);
    let pid = node.pid();
    let sampler = RssSampler::spawn(pid);
    let rss_start = node.rss_mib();

    let started = Instant::now();
    let sessions = connect_all(
        &url,
        &cfg.target.domain,
        sessions_wanted,
        cfg.connect_parallel,
    )
    .await?;
    let connect_secs = started.elapsed().as_secs_f64();
    let attacker = match &cfg.mode {
        WsMode::Load(LoadConfig {
            attack: Some(_), ..
        }) => {
            let id = format!("bench-attacker-{}", uuid::Uuid::new_v4().simple());
            Some(
                client::open_session(&url, &cfg.target.domain, &id)
                    .await
                    .map_err(LoadError::Attacker)?,
            )
        }
        _ => None,
    };
    let rss_connected = node.rss_mib();

    let (traffic, stats, rss_end, attack) = match &cfg.mode {
        WsMode::Load(l) => {
            let (traffic, stats, rss_end, attack) = load(sessions, attacker, l, &url, pid).await;
            (Some(traffic), stats, rss_end, attack)
        }
        WsMode::Idle(i) => {
            let (stats, rss_end) = idle(sessions, i, pid).await;
            (None, stats, rss_end, None)
        }
    };

    let mut failures = stats.failures;
    failures.extend(node.finish());
    Ok(Report {
        config: cfg.clone(),
        url,
        node_pid: pid,
        sessions: sessions_wanted,
        connect_secs,
        traffic,
        attack,
        errors: stats.errors,
        failures,
        rss: Rss::new(rss_start, rss_connected, rss_end, sampler.stop()),
    })
}

/// Opens `n` sessions, at most `parallel` at a time; fails if any fails.
pub(crate) async fn connect_all(
    url: &str,
    domain: &str,
    n: usize,
    parallel: usize,
) -> Result<Vec<Session>, LoadError> {
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let limit = Arc::new(Semaphore::new(parallel));
    let mut tasks = JoinSet::new();
    for i in 0..n {
        let Ok(permit) = Arc::clone(&limit).acquire_owned().await else {
            break;
        };
        let (url, domain) = (url.to_owned(), domain.to_owned());
        let runtime_id = format!("bench-{}-{i}", &run_id[..8]);
        tasks.spawn(async move {
            let result = client::open_session(&url, &domain, &runtime_id).await;
            drop(permit);
            (i, result)
        });
    }
    let mut sessions: Vec<Option<Session>> = (0..n).map(|_| None).collect();
    let mut failed = 0;
    let mut first = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((i, Ok(session))) => sessions[i] = Some(session),
            Ok((_, Err(e))) => {
                failed += 1;
                // EMFILE is the most useful error to show.
                if first.is_none() || matches!(e, ClientError::TooManyOpenFiles) {
                    first = Some(e);
                }
            }
            Err(e) => {
                failed += 1;
                first.get_or_insert(ClientError::Protocol {
                    step: "connect",
                    detail: format!("task failed: {e}"),
                });
            }
        }
    }
    match first {
        Some(first) => Err(LoadError::Connect {
            failed,
            total: n,
            first,
        }),
        None => Ok(sessions.into_iter().flatten().collect()),
    }
}

/// The PING scenario on open sessions, with the attacker on its own session if one is
/// configured. Returns the traffic figures, the merged per-session statistics, the RSS after
/// draining and what the attacker saw.
pub(crate) async fn load(
    sessions: Vec<Session>,
    attacker: Option<Session>,
    cfg: &LoadConfig,
    url: &str,
    pid: Option<u32>,
) -> (Traffic, RuntimeStats, Option<f64>, Option<AttackReport>) {
    let epoch = Instant::now();
    let clock = Arc::new(Clock {
        epoch,
        window_start_ns: ns(cfg.warmup),
        window_end_ns: ns(cfg.warmup + cfg.duration),
    });
    let totals = Arc::new(Totals::default());
    let (phase_tx, phase_rx) = watch::channel(Phase::Run);

    let paired = cfg.runtimes / 2 * 2;
    let senders = cfg.senders();
    // Frame interval of one sender on the timetable.
    let interval = cfg
        .rate
        .map(|rate| Duration::from_secs_f64(f64::from(cfg.batch) * senders as f64 / rate));
    let hyperties: Vec<String> = sessions.iter().map(|s| s.hyperty.clone()).collect();
    let windows: Vec<Arc<Semaphore>> = (0..paired)
        .map(|_| Arc::new(Semaphore::new(cfg.window as usize)))
        .collect();

    let mut tasks = Vec::with_capacity(sessions.len());
    let mut sender_index = 0;
    for (i, session) in sessions.into_iter().enumerate() {
        let partner = i ^ 1;
        let mut role = Role::default();
        if i < paired {
            let sends = cfg.bidirectional || i % 2 == 0;
            let receives = cfg.bidirectional || i % 2 == 1;
            if sends {
                let schedule = interval.map(|interval| Schedule {
                    // Spread the senders evenly over one interval.
                    first_due: epoch + interval.mul_f64(sender_index as f64 / senders as f64),
                    interval,
                });
                sender_index += 1;
                role.outgoing = Some(Outgoing {
                    template: PingTemplate::new(&hyperties[i], &hyperties[partner], cfg.size),
                    window: Arc::clone(&windows[i]),
                    batch: cfg.batch,
                    schedule,
                });
            }
            if receives {
                role.incoming_window = Some(Arc::clone(&windows[partner]));
            }
        }
        tasks.push(runtime::spawn(
            session,
            role,
            Arc::clone(&clock),
            Arc::clone(&totals),
            phase_rx.clone(),
        ));
    }

    // The attack starts with the load (warm-up included), so that the measured window sees a
    // stub already spinning.
    let attacker = attacker.zip(cfg.attack.clone()).map(|(session, attack)| {
        Attacker::spawn(session, attack, Arc::clone(&clock), phase_rx.clone())
    });

    tokio::time::sleep_until((epoch + cfg.warmup + cfg.duration).into()).await;
    let _ = phase_tx.send(Phase::StopSending);
    // Let the writers notice, then wait for what is still in flight.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let drain_deadline = Instant::now() + DRAIN_TIMEOUT;
    while Instant::now() < drain_deadline {
        let sent = totals.sent.load(Ordering::Relaxed);
        let settled =
            totals.received.load(Ordering::Relaxed) + totals.ping_errors.load(Ordering::Relaxed);
        if settled >= sent {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let rss_end = pid.and_then(node_proc::rss_mib);
    let _ = phase_tx.send(Phase::Shutdown);

    let mut stats = RuntimeStats::default();
    for t in tasks {
        stats.merge(t.join().await);
    }
    let attack = match attacker {
        Some(a) => Some(a.finish(http_authority(url)).await),
        None => None,
    };
    let ping_errors = totals.ping_errors.load(Ordering::Relaxed);
    let measured_secs = cfg.duration.as_secs_f64();
    let latencies = std::mem::take(&mut stats.latencies);
    let service_latencies = std::mem::take(&mut stats.service_latencies);
    let traffic = Traffic {
        sent: stats.sent,
        received: stats.received,
        received_in_window: stats.received_in_window,
        refused: ping_errors,
        lost: stats.sent.saturating_sub(stats.received + ping_errors),
        acks_sent: stats.acks_sent,
        ok_responses: stats.ok_responses,
        other_messages: stats.other_messages,
        bad_frames: stats.bad_frames,
        measured_secs,
        throughput: stats.received_in_window as f64 / measured_secs,
        latency: latencies.summarize(),
        service_latency: service_latencies.summarize(),
    };
    (traffic, stats, rss_end, attack)
}

/// The idle scenario: the sessions only acknowledge what they get for `hold`.
async fn idle(
    sessions: Vec<Session>,
    cfg: &IdleConfig,
    pid: Option<u32>,
) -> (RuntimeStats, Option<f64>) {
    let clock = Arc::new(Clock {
        epoch: Instant::now(),
        window_start_ns: 0,
        window_end_ns: 0,
    });
    let totals = Arc::new(Totals::default());
    let (phase_tx, phase_rx) = watch::channel(Phase::StopSending);
    let tasks: Vec<_> = sessions
        .into_iter()
        .map(|s| {
            runtime::spawn(
                s,
                Role::default(),
                Arc::clone(&clock),
                Arc::clone(&totals),
                phase_rx.clone(),
            )
        })
        .collect();
    tokio::time::sleep(cfg.hold).await;
    let rss_end = pid.and_then(node_proc::rss_mib);
    let _ = phase_tx.send(Phase::Shutdown);
    let mut stats = RuntimeStats::default();
    for t in tasks {
        stats.merge(t.join().await);
    }
    (stats, rss_end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{AttackConfig, Target};
    use crate::mock_node::MockNode;

    fn config(url: String, mode: WsMode) -> WsConfig {
        WsConfig {
            target: Target {
                url: Some(url),
                node_pid: None,
                node_config: None,
                domain: "bench.local".into(),
            },
            mode,
            connect_parallel: 4,
            json: false,
        }
    }

    fn load_mode(runtimes: usize, bidirectional: bool, rate: Option<f64>, batch: u32) -> WsMode {
        WsMode::Load(LoadConfig {
            runtimes,
            bidirectional,
            rate,
            window: 64,
            duration: Duration::from_millis(500),
            warmup: Duration::from_millis(200),
            size: 200,
            batch,
            attack: None,
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unlimited_load_against_mock_node() {
        let node = MockNode::start("bench.local", 0).await;
        let report = run(&config(node.url(), load_mode(4, false, None, 1)))
            .await
            .expect("runs");
        eprintln!("{report}\n{}", report.to_json());
        let t = report.traffic.as_ref().expect("traffic");
        assert!(t.received_in_window > 0, "{report}");
        assert_eq!(t.lost, 0, "{report}");
        assert_eq!(t.sent, t.received, "{report}");
        assert!(report.errors.is_empty(), "{report}");
        assert!(report.failures.is_empty(), "{report}");
        assert!(t.acks_sent > 0, "{report}");
        let (l, s) = (
            t.latency.as_ref().expect("latency"),
            t.service_latency.as_ref().expect("service latency"),
        );
        // Without a timetable both count from the same (actual) send time.
        assert_eq!(l, s);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rated_bidirectional_batches_against_mock_node() {
        let node = MockNode::start("bench.local", 0).await;
        let mode = load_mode(6, true, Some(2_000.0), 4);
        let report = run(&config(node.url(), mode)).await.expect("runs");
        let t = report.traffic.as_ref().expect("traffic");
        // 2000 msg/s offered for 0.7 s in total.
        assert!((1_000..=1_800).contains(&t.sent), "{report}");
        assert_eq!(t.lost, 0, "{report}");
        assert!((1_000.0..3_000.0).contains(&t.throughput), "{report}");
        // Each message is sent at or after its scheduled time, so the latency
        // from the actual send is never above the one from the schedule.
        let (l, s) = (
            t.latency.as_ref().expect("latency"),
            t.service_latency.as_ref().expect("service latency"),
        );
        assert_eq!(l.count, s.count);
        assert!(s.p50_us <= l.p50_us, "{report}");
        assert!(s.p99_us <= l.p99_us, "{report}");
        assert!(s.max_us <= l.max_us, "{report}");
        assert!(s.mean_us <= l.mean_us, "{report}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refusals_are_counted_not_lost() {
        let node = MockNode::start("bench.local", 7).await;
        let report = run(&config(node.url(), load_mode(4, false, None, 1)))
            .await
            .expect("runs");
        let t = report.traffic.as_ref().expect("traffic");
        let refused = report.errors.get(&503).map(|e| e.count).unwrap_or(0);
        assert!(refused > 0, "{report}");
        assert_eq!(t.refused, refused, "{report}");
        assert_eq!(t.lost, 0, "{report}");
        assert_eq!(t.sent, t.received + t.refused, "{report}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_sessions_against_mock_node() {
        let node = MockNode::start("bench.local", 0).await;
        let mode = WsMode::Idle(IdleConfig {
            sessions: 20,
            hold: Duration::from_millis(100),
        });
        let report = run(&config(node.url(), mode)).await.expect("runs");
        assert_eq!(report.sessions, 20);
        assert!(report.traffic.is_none());
        assert!(report.failures.is_empty(), "{report}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn attacked_load_against_mock_node() {
        let stubs = vec![
            "hyperty://bench.local/runaway".to_owned(),
            "hyperty://bench.local/other".to_owned(),
        ];
        let node = MockNode::start_with_stubs("bench.local", 0, stubs.clone()).await;
        let WsMode::Load(mut load) = load_mode(4, false, Some(1_000.0), 1) else {
            unreachable!()
        };
        load.attack = Some(AttackConfig {
            stubs: stubs.clone(),
            rate: 20.0,
        });
        let report = run(&config(node.url(), WsMode::Load(load)))
            .await
            .expect("runs");
        let t = report.traffic.as_ref().expect("traffic");
        assert_eq!(t.lost, 0, "{report}");
        assert!(report.failures.is_empty(), "{report}");
        assert!(report.errors.is_empty(), "the load sees no 504: {report}");
        let a = report.attack.as_ref().expect("attack report");
        // 20/s to each of two stubs for the 0.7 s of warm-up and measurement.
        assert!((20..=40).contains(&a.sent), "{report}");
        assert_eq!(a.answers.len(), 1, "{report}");
        let answered = &a.answers[&504];
        assert_eq!(answered.count, a.sent, "{report}");
        assert_eq!(a.unanswered, 0, "{report}");
        assert!(
            answered
                .description
                .as_deref()
                .is_some_and(|d| d.contains("deadline")),
            "{report}"
        );
        assert!(answered.last_secs < 0.7 + 0.5, "{report}");
        assert!(a.failure.is_none(), "{report}");
        // The mock has no /metrics: said, not fatal.
        assert!(a.metrics.is_err(), "{report}");
        let text = report.to_string();
        assert!(text.contains("attack ") && text.contains("504: "), "{text}");
        assert_eq!(
            report.to_json()["attack"]["answers"]["504"]["count"],
            a.sent
        );
    }

    #[tokio::test]
    async fn connection_refused_is_reported() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let url = format!("ws://127.0.0.1:{port}/ws");
        let err = run(&config(url, load_mode(2, false, None, 1)))
            .await
            .expect_err("fails");
        assert!(
            matches!(
                err,
                LoadError::Connect {
                    failed: 2,
                    total: 2,
                    ..
                }
            ),
            "{err}"
        );
    }
}
