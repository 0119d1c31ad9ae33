//! The `matrix` scenario: register the users, create the rooms, have every user
//! join its room and make a first sync (each phase timed, bounded parallelism);
//! then park every user in a long-poll `/sync` loop while the senders run for
//! warm-up + measured time; drain the deliveries, read the node's RSS, and
//! account every acknowledged send against the receivers' syncs.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::cli::MatrixConfig;
use crate::cpu::{CpuMark, CpuUse};
use crate::deliveries;
use crate::http::HttpConn;
use crate::matrix_client::{self, ApiError, User};
use crate::matrix_report::{MatrixReport, MatrixTraffic, Phase, Setup};
use crate::matrix_tasks::{self, Live, SenderSpec, Shared, TaskStats};
use crate::node_proc::NodeError;
use crate::node_under_test::{NodeUnderTest, Protocol, RssSampler, warn_about_open_files};
use crate::report::Rss;
use crate::runtime::{Clock, Schedule, ns};

/// Most time given to deliveries still in flight after the senders stop.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// Why the scenario could not run.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MatrixLoadError {
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error("setup failed ({phase}, {failed} of {total} requests): {first}")]
    Setup {
        phase: &'static str,
        failed: usize,
        total: usize,
        first: ApiError,
    },
    #[error("setup task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// The users, in order, and which room each is in.
#[derive(Debug)]
struct Population {
    users: Vec<Arc<User>>,
    room_ids: Vec<Arc<str>>,
}

impl Population {
    fn room_of(&self, user: usize) -> usize {
        user % self.room_ids.len()
    }

    fn members(&self, room: usize) -> usize {
        (0..self.users.len())
            .filter(|&u| self.room_of(u) == room)
            .count()
    }
}

/// Runs the `matrix` command and returns its report.
pub(crate) async fn run(cfg: &MatrixConfig) -> Result<MatrixReport, MatrixLoadError> {
    // One socket per user and sender here, and as many in the node when it is our child.
    let per_client = if cfg.target.url.is_none() { 2 } else { 1 };
    warn_about_open_files((cfg.users + cfg.senders) as u64 * per_client);

    let node = NodeUnderTest::resolve(&cfg.target).await?;
    let url = node.url(Protocol::Http);
    let authority: Arc<str> = Arc::from(url.trim_start_matches("http://"));
    let pid = node.pid();
    let sampler = RssSampler::spawn(pid);
    let rss_start = node.rss_mib();

    let (population, syncs, setup) = set_up(cfg, &authority, &node).await?;
    let rss_connected = node.rss_mib();

    let (stats, rss_end, cpu) = load(cfg, &authority, &population, syncs, &node).await;

    let figures = deliveries::account(&stats.sent, &stats.deliveries);
    let measured_secs = cfg.duration.as_secs_f64();
    let traffic = MatrixTraffic {
        attempted: stats.attempted,
        acknowledged: stats.acknowledged,
        acknowledged_in_window: stats.acknowledged_in_window,
        measured_secs,
        sends_per_sec: stats.acknowledged_in_window as f64 / measured_secs,
        send_latency: stats.send_latencies.summarize(),
        first_delivery: figures.first,
        every_delivery: figures.every,
        expected_deliveries: figures.expected,
        delivered: figures.delivered,
        missing: figures.missing,
        unacknowledged_delivered: figures.unacknowledged,
        repeats: stats.repeats,
        own_echoes: stats.own_echoes,
        limited_timelines: stats.limited,
        syncs: stats.syncs,
        transport_errors: stats.transport_errors,
    };
    let mut failures = stats.failures;
    failures.extend(node.finish());
    Ok(MatrixReport {
        config: cfg.clone(),
        url,
        node_pid: pid,
        setup,
        traffic,
        errors: stats.errors,
        failures,
        rss: Rss::new(rss_start, rss_connected, rss_end, sampler.stop()),
        cpu,
    })
}

/// Registers the users, creates the rooms, joins, and makes every user's first sync;
/// returns the users, each user's connection and `next_batch`, and the phases' timings.
async fn set_up(
    cfg: &MatrixConfig,
    authority: &Arc<str>,
    node: &NodeUnderTest,
) -> Result<(Population, Vec<(HttpConn, String)>, Setup), MatrixLoadError> {
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let run = Arc::<str>::from(&run_id[..8]);
    let parallel = cfg.setup_parallel;

    let started = Instant::now();
    let users = in_parallel("register", cfg.users, parallel, |i| {
        let (authority, run) = (Arc::clone(authority), Arc::clone(&run));
        async move {
            let mut conn = HttpConn::new(&authority);
            let password = format!("bench-{run}-password");
            matrix_client::register(&mut conn, &format!("bench{run}u{i}"), &password).await
        }
    })
    .await?;
    let users: Vec<Arc<User>> = users.into_iter().map(Arc::new).collect();
    let register = Phase::since(cfg.users, started, node.rss_mib());

    // Room r is created by user r, the first user of room r.
    let started = Instant::now();
    let room_ids = in_parallel("createRoom", cfg.rooms, parallel, |r| {
        let (authority, creator, run) = (
            Arc::clone(authority),
            Arc::clone(&users[r]),
            Arc::clone(&run),
        );
        async move {
            let mut conn = HttpConn::new(&authority);
            let name = format!("bench {run} room {r}");
            matrix_client::create_room(&mut conn, &creator.token, &name).await
        }
    })
    .await?;
    let create_rooms = Phase::since(cfg.rooms, started, node.rss_mib());
    let population = Population {
        users,
        room_ids: room_ids.into_iter().map(Arc::from).collect(),
    };

    let joiners = cfg.users - cfg.rooms;
    let started = Instant::now();
    in_parallel("join", joiners, parallel, |j| {
        let u = cfg.rooms + j;
        let authority = Arc::clone(authority);
        let user = Arc::clone(&population.users[u]);
        let room_id = Arc::clone(&population.room_ids[population.room_of(u)]);
        async move {
            let mut conn = HttpConn::new(&authority);
            matrix_client::join(&mut conn, &user.token, &room_id).await
        }
    })
    .await?;
    let join = Phase::since(joiners, started, node.rss_mib());

    let started = Instant::now();
    let syncs = in_parallel("initial sync", cfg.users, parallel, |u| {
        let authority = Arc::clone(authority);
        let user = Arc::clone(&population.users[u]);
        async move {
            let mut conn = HttpConn::new(&authority);
            let next_batch = initial_sync(&mut conn, &user).await?;
            Ok((conn, next_batch))
        }
    })
    .await?;
    let initial_sync = Phase::since(cfg.users, started, node.rss_mib());

    let setup = Setup {
        register,
        create_rooms,
        join,
        initial_sync,
    };
    Ok((population, syncs, setup))
}

/// A sync without `since` (and without waiting): the user's starting `next_batch`.
async fn initial_sync(conn: &mut HttpConn, user: &User) -> Result<String, ApiError> {
    let step = "initial sync";
    let path = matrix_client::SyncPath::new(0).path(None);
    let r = conn
        .request(hyper::Method::GET, &path, Some(&user.token), None)
        .await
        .map_err(|source| ApiError::Http { step, source })?;
    if r.status != 200 {
        let (errcode, error) = matrix_client::error_body(&r.body).unwrap_or_default();
        return Err(ApiError::Status {
            step,
            status: r.status,
            errcode,
            error,
        });
    }
    matrix_client::parse_sync(&r.body, &user.user_id)
        .map(|batch| batch.next_batch)
        .map_err(|e| ApiError::Parse {
            step,
            detail: e.to_string(),
        })
}

/// Runs `make(i)` for `i` in `0..n`, at most `parallel` at a time; the results in order,
/// or the first error (with how many failed).
async fn in_parallel<T, Fut>(
    phase: &'static str,
    n: usize,
    parallel: usize,
    mut make: impl FnMut(usize) -> Fut,
) -> Result<Vec<T>, MatrixLoadError>
where
    T: Send + 'static,
    Fut: Future<Output = Result<T, ApiError>> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(parallel));
    let mut tasks = JoinSet::new();
    for i in 0..n {
        let Ok(permit) = Arc::clone(&limit).acquire_owned().await else {
            break;
        };
        let job = make(i);
        tasks.spawn(async move {
            let result = job.await;
            drop(permit);
            (i, result)
        });
    }
    let mut results: Vec<Option<T>> = (0..n).map(|_| None).collect();
    let mut failed = 0;
    let mut first = None;
    while let Some(joined) = tasks.join_next().await {
        match joined? {
            (i, Ok(value)) => results[i] = Some(value),
            (_, Err(e)) => {
                failed += 1;
                first.get_or_insert(e);
            }
        }
    }
    match first {
        Some(first) => Err(MatrixLoadError::Setup {
            phase,
            failed,
            total: n,
            first,
        }),
        None => Ok(results.into_iter().flatten().collect()),
    }
}

/// The load itself: receivers parked in `/sync`, senders for warm-up + measured time,
/// then the drain. Returns the merged statistics, the RSS after the drain and the CPU used
/// over the measured window.
async fn load(
    cfg: &MatrixConfig,
    authority: &Arc<str>,
    population: &Population,
    syncs: Vec<(HttpConn, String)>,
    node: &NodeUnderTest,
) -> (TaskStats, Option<f64>, CpuUse) {
    let epoch = Instant::now();
    let shared = Shared {
        authority: Arc::clone(authority),
        clock: Arc::new(Clock {
            epoch,
            window_start_ns: ns(cfg.warmup),
            window_end_ns: ns(cfg.warmup + cfg.duration),
        }),
        live: Arc::new(Live::default()),
        seq: Arc::new(AtomicU64::new(1)),
    };
    let (stop_syncs, syncs_stopped) = watch::channel(false);
    let receivers: Vec<_> = population
        .users
        .iter()
        .zip(syncs)
        .map(|(user, (conn, since))| {
            tokio::spawn(matrix_tasks::sync_loop(
                Arc::clone(user),
                conn,
                since,
                shared.clone(),
                syncs_stopped.clone(),
            ))
        })
        .collect();

    // Each sender's interval on the timetable, the senders spread evenly over one interval.
    let interval = cfg
        .rate
        .map(|rate| Duration::from_secs_f64(cfg.senders as f64 / rate));
    let (stop_sends, sends_stopped) = watch::channel(false);
    let senders: Vec<_> = (0..cfg.senders)
        .map(|s| {
            let u = s % population.users.len();
            let room = population.room_of(u);
            let spec = SenderSpec {
                index: s,
                user: Arc::clone(&population.users[u]),
                room_id: Arc::clone(&population.room_ids[room]),
                receivers: u32::try_from(population.members(room) - 1).unwrap_or(u32::MAX),
                schedule: interval.map(|interval| Schedule {
                    first_due: epoch + interval.mul_f64(s as f64 / cfg.senders as f64),
                    interval,
                }),
            };
            tokio::spawn(matrix_tasks::send_loop(
                spec,
                shared.clone(),
                sends_stopped.clone(),
            ))
        })
        .collect();

    tokio::time::sleep_until((epoch + cfg.warmup).into()).await;
    let window_start = CpuMark::now(node.pid());
    tokio::time::sleep_until((epoch + cfg.warmup + cfg.duration).into()).await;
    let cpu = window_start.until(CpuMark::now(node.pid()), cfg.duration);
    let _ = stop_sends.send(true);
    let mut stats = TaskStats::default();
    for task in senders {
        collect(&mut stats, task.await);
    }
    let drain_deadline = Instant::now() + DRAIN_TIMEOUT;
    while Instant::now() < drain_deadline {
        let live = &shared.live;
        if live.delivered.load(Ordering::Relaxed) >= live.expected.load(Ordering::Relaxed) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let rss_end = node.rss_mib();
    let _ = stop_syncs.send(true);
    for task in receivers {
        collect(&mut stats, task.await);
    }
    (stats, rss_end, cpu)
}

/// Merges a finished task's statistics, or notes that it failed.
fn collect(stats: &mut TaskStats, joined: Result<TaskStats, tokio::task::JoinError>) {
    match joined {
        Ok(s) => stats.merge(s),
        Err(e) => stats.failures.push(format!("a task failed: {e}")),
    }
}
