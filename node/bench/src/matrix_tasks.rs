//! The two kinds of task of the Matrix scenario once everyone is in their room:
//! a sender PUTs `m.room.message` events one at a time (back to back or on a
//! timetable) until told to stop; a receiver long-polls `/sync` from its last
//! `next_batch` and times every benchmark message it sees.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hyper::Method;
use tokio::sync::watch;

use crate::deliveries::{Delivery, Sent};
use crate::http::{HttpConn, HttpError};
use crate::matrix_client::{self, User};
use crate::runtime::{Clock, Schedule};
use crate::stats::{ErrorStat, Latencies, merge_errors, record_error};

/// The long-poll timeout asked of `/sync`.
pub(crate) const SYNC_TIMEOUT_MS: u64 = 30_000;
/// Longest wait for one send's answer.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause after a failed request, so that a broken node is not hammered.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Failure descriptions kept per task (all are counted).
const MAX_FAILURES_KEPT: usize = 5;

/// Counters over all tasks, read by the scenario while draining.
#[derive(Debug, Default)]
pub(crate) struct Live {
    /// Receivers the acknowledged sends should reach, summed.
    pub(crate) expected: AtomicU64,
    /// Deliveries seen by the receivers.
    pub(crate) delivered: AtomicU64,
}

/// What the senders and receivers observed; the tasks' results merge into one.
#[derive(Debug, Default)]
pub(crate) struct TaskStats {
    /// PUTs made.
    pub(crate) attempted: u64,
    /// PUTs answered 200 with an `event_id`.
    pub(crate) acknowledged: u64,
    pub(crate) acknowledged_in_window: u64,
    /// PUT round trips of the measured window.
    pub(crate) send_latencies: Latencies,
    pub(crate) sent: Vec<Sent>,
    /// Sync responses received (200).
    pub(crate) syncs: u64,
    pub(crate) deliveries: Vec<Delivery>,
    /// A message a receiver had already seen, returned again.
    pub(crate) repeats: u64,
    /// Messages returned to their own sender's sync (not counted as deliveries).
    pub(crate) own_echoes: u64,
    /// Timelines returned with `limited` (events may have been skipped).
    pub(crate) limited: u64,
    pub(crate) errors: BTreeMap<u16, ErrorStat>,
    /// Requests that got no HTTP answer.
    pub(crate) transport_errors: u64,
    pub(crate) failures: Vec<String>,
}

impl TaskStats {
    pub(crate) fn merge(&mut self, mut other: TaskStats) {
        self.attempted += other.attempted;
        self.acknowledged += other.acknowledged;
        self.acknowledged_in_window += other.acknowledged_in_window;
        self.send_latencies.merge(other.send_latencies);
        self.sent.append(&mut other.sent);
        self.syncs += other.syncs;
        self.deliveries.append(&mut other.deliveries);
        self.repeats += other.repeats;
        self.own_echoes += other.own_echoes;
        self.limited += other.limited;
        merge_errors(&mut self.errors, other.errors);
        self.transport_errors += other.transport_errors;
        self.failures.append(&mut other.failures);
    }

    /// Counts an answer other than 200 (with the Matrix `errcode: error` as description).
    fn status_error(&mut self, status: u16, body: &[u8]) {
        record_error(&mut self.errors, status, || {
            let (errcode, error) = matrix_client::error_body(body)?;
            Some(format!("{errcode}: {error}"))
        });
    }

    fn transport_error(&mut self, who: &str, e: &HttpError) {
        self.transport_errors += 1;
        if self.failures.len() < MAX_FAILURES_KEPT {
            self.failures.push(format!("{who}: {e}"));
        }
    }
}

/// One sender: who sends where, and when.
#[derive(Debug)]
pub(crate) struct SenderSpec {
    pub(crate) index: usize,
    pub(crate) user: Arc<User>,
    pub(crate) room_id: Arc<str>,
    /// Members of the room other than the sender.
    pub(crate) receivers: u32,
    /// `None`: back to back.
    pub(crate) schedule: Option<Schedule>,
}

/// Shared by all tasks of a run.
#[derive(Debug, Clone)]
pub(crate) struct Shared {
    pub(crate) authority: Arc<str>,
    pub(crate) clock: Arc<Clock>,
    pub(crate) live: Arc<Live>,
    /// The next message's sequence id.
    pub(crate) seq: Arc<AtomicU64>,
}

/// Sends until `stop` turns true; an in-flight PUT is completed first.
pub(crate) async fn send_loop(
    spec: SenderSpec,
    shared: Shared,
    mut stop: watch::Receiver<bool>,
) -> TaskStats {
    let mut stats = TaskStats::default();
    let mut conn = HttpConn::new(&shared.authority);
    let who = format!("sender {}", spec.index);
    let mut due: Option<Instant> = spec.schedule.as_ref().map(|s| s.first_due);
    loop {
        if *stop.borrow_and_update() {
            break;
        }
        if let (Some(at), Some(schedule)) = (due, &spec.schedule) {
            tokio::select! {
                () = tokio::time::sleep_until(at.into()) => {}
                _ = stop.changed() => break,
            }
            due = Some(at + schedule.interval);
        }
        let seq = shared.seq.fetch_add(1, Ordering::Relaxed);
        let path = matrix_client::send_path(&spec.room_id, &format!("t{seq}"));
        let start_ns = shared.clock.now_ns();
        let body = matrix_client::message_body(seq, start_ns);
        let request = conn.request(Method::PUT, &path, Some(&spec.user.token), Some(body));
        let answer = tokio::time::timeout(SEND_TIMEOUT, request).await;
        let end_ns = shared.clock.now_ns();
        stats.attempted += 1;
        match answer {
            Ok(Ok(r)) if r.status == 200 && matrix_client::event_id(&r.body).is_some() => {
                let in_window = shared.clock.in_window(start_ns);
                stats.acknowledged += 1;
                if in_window {
                    stats.acknowledged_in_window += 1;
                    stats.send_latencies.record_ns(end_ns - start_ns);
                }
                stats.sent.push(Sent {
                    seq,
                    receivers: spec.receivers,
                    in_window,
                });
                shared
                    .live
                    .expected
                    .fetch_add(u64::from(spec.receivers), Ordering::Relaxed);
            }
            Ok(Ok(r)) => {
                stats.status_error(r.status, &r.body);
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Ok(Err(e)) => {
                stats.transport_error(&who, &e);
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(_) => {
                stats.transport_errors += 1;
                if stats.failures.len() < MAX_FAILURES_KEPT {
                    stats.failures.push(format!(
                        "{who}: no answer to a send within {SEND_TIMEOUT:?}"
                    ));
                }
                // The connection may still carry the late answer: start afresh.
                conn = HttpConn::new(&shared.authority);
            }
        }
    }
    stats
}

/// Long-polls `/sync` for `user` from `since` until `stop` turns true (an in-flight
/// sync is abandoned).
pub(crate) async fn sync_loop(
    user: Arc<User>,
    mut conn: HttpConn,
    mut since: String,
    shared: Shared,
    mut stop: watch::Receiver<bool>,
) -> TaskStats {
    let mut stats = TaskStats::default();
    let mut seen: HashSet<u64> = HashSet::new();
    let who = format!("sync of {}", user.user_id);
    let sync_path = matrix_client::SyncPath::new(SYNC_TIMEOUT_MS);
    loop {
        if *stop.borrow_and_update() {
            break;
        }
        let path = sync_path.path(Some(&since));
        let answer = tokio::select! {
            answer = conn.request(Method::GET, &path, Some(&user.token), None) => answer,
            _ = stop.changed() => break,
        };
        let now_ns = shared.clock.now_ns();
        let response = match answer {
            Ok(r) if r.status == 200 => r,
            Ok(r) => {
                stats.status_error(r.status, &r.body);
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
            Err(e) => {
                stats.transport_error(&who, &e);
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
        };
        let batch = match matrix_client::parse_sync(&response.body, &user.user_id) {
            Ok(batch) => batch,
            Err(e) => {
                if stats.failures.len() < MAX_FAILURES_KEPT {
                    stats
                        .failures
                        .push(format!("{who}: unparsable sync response: {e}"));
                }
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
        };
        stats.syncs += 1;
        stats.limited += u64::from(batch.limited);
        since = batch.next_batch;
        let mut new = 0;
        for m in batch.messages {
            if m.own {
                stats.own_echoes += 1;
            } else if !seen.insert(m.seq) {
                stats.repeats += 1;
            } else {
                new += 1;
                stats.deliveries.push(Delivery {
                    seq: m.seq,
                    latency_ns: now_ns.saturating_sub(m.t_ns),
                });
            }
        }
        shared.live.delivered.fetch_add(new, Ordering::Relaxed);
    }
    stats
}
