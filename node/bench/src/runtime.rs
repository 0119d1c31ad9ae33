//! The two tasks that drive one open session during a scenario: a writer that
//! owns the sink (PING frames on the window / timetable, acknowledgements, the
//! final close) and a reader that owns the stream (latencies, error responses,
//! the highest `seq` to acknowledge).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::client::{self, Event, PING_ID_BASE, PingTemplate, Session, WsStream};
use crate::stats::{ErrorStat, Latencies, merge_errors, record_error};

/// Acknowledge after this many frames received ...
const ACK_EVERY_FRAMES: u32 = 64;
/// ... or this long after the last acknowledgement, whichever comes first.
const ACK_INTERVAL: Duration = Duration::from_millis(10);
/// Frames written before one flush when more are ready at once.
const MAX_FRAMES_PER_FLUSH: u32 = 32;
/// How long the final `close` may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// What the tasks should be doing; changed by the scenario only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Send (if a sender), receive, acknowledge.
    Run,
    /// Stop sending; keep receiving and acknowledging (draining).
    StopSending,
    /// Close the session and return the statistics.
    Shutdown,
}

/// The run's time base: message times are nanoseconds since `epoch`.
#[derive(Debug)]
pub(crate) struct Clock {
    pub(crate) epoch: Instant,
    /// Measurement starts (end of the warm-up), in ns since `epoch`.
    pub(crate) window_start_ns: u64,
    /// Measurement ends; senders stop here.
    pub(crate) window_end_ns: u64,
}

impl Clock {
    pub(crate) fn now_ns(&self) -> u64 {
        ns(self.epoch.elapsed())
    }

    /// Whether `t_ns` falls in the measured window.
    pub(crate) fn in_window(&self, t_ns: u64) -> bool {
        (self.window_start_ns..self.window_end_ns).contains(&t_ns)
    }
}

pub(crate) fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Counters over all sessions, read by the scenario while draining.
#[derive(Debug, Default)]
pub(crate) struct Totals {
    pub(crate) sent: AtomicU64,
    pub(crate) received: AtomicU64,
    /// Error responses to PING messages (those messages will never arrive).
    pub(crate) ping_errors: AtomicU64,
}

/// A fixed sending timetable: frame `k` is due at `first_due + k * interval`.
#[derive(Debug, Clone)]
pub(crate) struct Schedule {
    pub(crate) first_due: Instant,
    pub(crate) interval: Duration,
}

/// What a sending runtime sends.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) template: PingTemplate,
    /// Permits = messages that may still be in flight to the partner.
    pub(crate) window: Arc<Semaphore>,
    pub(crate) batch: u32,
    /// `None`: as fast as the window allows.
    pub(crate) schedule: Option<Schedule>,
}

/// The role of one runtime in the scenario.
#[derive(Debug, Default)]
pub(crate) struct Role {
    pub(crate) outgoing: Option<Outgoing>,
    /// The partner's window, released for each PING received from it.
    pub(crate) incoming_window: Option<Arc<Semaphore>>,
}

/// What one runtime's tasks observed.
#[derive(Debug, Default)]
pub(crate) struct RuntimeStats {
    pub(crate) sent: u64,
    pub(crate) acks_sent: u64,
    pub(crate) received: u64,
    pub(crate) received_in_window: u64,
    /// From the scheduled send time (`t`): includes the generator's own timer
    /// lateness, so that a late sender does not hide queueing (coordinated omission).
    pub(crate) latencies: Latencies,
    /// From the actual send time (`s`): the node and the network only.
    pub(crate) service_latencies: Latencies,
    pub(crate) errors: BTreeMap<u16, ErrorStat>,
    pub(crate) ok_responses: u64,
    pub(crate) other_messages: u64,
    pub(crate) bad_frames: u64,
    /// Why the session ended early, if it did.
    pub(crate) failures: Vec<String>,
}

impl RuntimeStats {
    /// Adds `other` into `self`.
    pub(crate) fn merge(&mut self, other: RuntimeStats) {
        self.sent += other.sent;
        self.acks_sent += other.acks_sent;
        self.received += other.received;
        self.received_in_window += other.received_in_window;
        self.latencies.merge(other.latencies);
        self.service_latencies.merge(other.service_latencies);
        merge_errors(&mut self.errors, other.errors);
        self.ok_responses += other.ok_responses;
        self.other_messages += other.other_messages;
        self.bad_frames += other.bad_frames;
        self.failures.extend(other.failures);
    }
}

/// State shared by a session's reader and writer.
///
/// The writer acknowledges `ACK_INTERVAL` after something became unacknowledged
/// (`pending`), or at once when `ACK_EVERY_FRAMES` frames arrived (`due`); an
/// idle session has no timer running.
#[derive(Debug, Default)]
struct AckState {
    /// Highest `seq` received.
    last_seq: AtomicU64,
    /// Highest `seq` acknowledged.
    acked: AtomicU64,
    /// Woken when a frame arrived while everything was acknowledged.
    pending: Notify,
    /// Woken when enough frames arrived to acknowledge now.
    due: Notify,
}

/// The running tasks of one session.
#[derive(Debug)]
pub(crate) struct RuntimeTasks {
    writer: JoinHandle<RuntimeStats>,
    reader: JoinHandle<RuntimeStats>,
}

impl RuntimeTasks {
    /// Waits for both tasks (after `Phase::Shutdown`) and merges what they saw.
    pub(crate) async fn join(self) -> RuntimeStats {
        let mut stats = RuntimeStats::default();
        for task in [self.writer, self.reader] {
            match task.await {
                Ok(s) => stats.merge(s),
                Err(e) => stats.failures.push(format!("session task failed: {e}")),
            }
        }
        stats
    }
}

/// Starts the reader and writer of `session` in `role`.
pub(crate) fn spawn(
    session: Session,
    role: Role,
    clock: Arc<Clock>,
    totals: Arc<Totals>,
    phase: watch::Receiver<Phase>,
) -> RuntimeTasks {
    let Session {
        ws,
        runtime_url,
        last_seq,
        ..
    } = session;
    let (sink, stream) = ws.split();
    let ack = Arc::new(AckState {
        last_seq: AtomicU64::new(last_seq),
        ..AckState::default()
    });
    let own_window = role.outgoing.as_ref().map(|o| Arc::clone(&o.window));
    let reader = Reader {
        clock: Arc::clone(&clock),
        totals: Arc::clone(&totals),
        ack: Arc::clone(&ack),
        own_window,
        incoming_window: role.incoming_window,
        frames_since_ack: 0,
        stats: RuntimeStats::default(),
    };
    let writer = Writer {
        sink,
        runtime_url,
        outgoing: role.outgoing,
        clock,
        totals,
        ack,
        next_ctl_id: 3,
        next_ping_id: PING_ID_BASE,
        ack_deadline: None,
        stats: RuntimeStats::default(),
    };
    RuntimeTasks {
        reader: tokio::spawn(reader.run(stream, phase.clone())),
        writer: tokio::spawn(writer.run(phase)),
    }
}

struct Writer {
    sink: SplitSink<WsStream, Message>,
    runtime_url: String,
    outgoing: Option<Outgoing>,
    clock: Arc<Clock>,
    totals: Arc<Totals>,
    ack: Arc<AckState>,
    next_ctl_id: u64,
    next_ping_id: u64,
    /// When the pending acknowledgement is due, if one is.
    ack_deadline: Option<Instant>,
    stats: RuntimeStats,
}

enum Action {
    Nothing,
    ArmAck,
    Ack,
    Send,
    Shutdown,
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// Waits until the next frame is due and its window permits are taken;
/// `false` if the window is closed.
async fn next_slot(out: &Outgoing, due: Option<Instant>) -> bool {
    if let Some(due) = due {
        tokio::time::sleep_until(due.into()).await;
    }
    match out.window.acquire_many(out.batch).await {
        Ok(permits) => {
            permits.forget();
            true
        }
        Err(_) => false,
    }
}

impl Writer {
    async fn run(mut self, mut phase: watch::Receiver<Phase>) -> RuntimeStats {
        let mut sending = self.outgoing.is_some() && *phase.borrow() == Phase::Run;
        let mut due = self
            .outgoing
            .as_ref()
            .and_then(|o| o.schedule.as_ref())
            .map(|s| s.first_due);
        // The handshake responses are still unacknowledged.
        self.arm_ack_if_pending();
        loop {
            let action = tokio::select! {
                biased;
                changed = phase.changed() => match changed.map(|()| *phase.borrow_and_update()) {
                    Ok(Phase::Run) => Action::Nothing,
                    Ok(Phase::StopSending) => {
                        sending = false;
                        Action::Nothing
                    }
                    Ok(Phase::Shutdown) | Err(_) => Action::Shutdown,
                },
                () = self.ack.due.notified() => Action::Ack,
                () = sleep_until_opt(self.ack_deadline), if self.ack_deadline.is_some() => Action::Ack,
                () = self.ack.pending.notified(), if self.ack_deadline.is_none() => Action::ArmAck,
                ok = async {
                    match &self.outgoing {
                        Some(out) => next_slot(out, due).await,
                        None => false,
                    }
                }, if sending => {
                    if ok { Action::Send } else { sending = false; Action::Nothing }
                }
            };
            let result = match action {
                Action::Nothing => Ok(()),
                Action::ArmAck => {
                    self.ack_deadline = Some(Instant::now() + ACK_INTERVAL);
                    Ok(())
                }
                Action::Shutdown => break,
                Action::Ack => self.send_ack().await,
                Action::Send => self.send_pings(&mut due, &mut sending).await,
            };
            if let Err(e) = result {
                self.stats.failures.push(format!("send failed: {e}"));
                return self.stats;
            }
        }
        let close = client::close_frame(self.next_ctl_id, &self.runtime_url);
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            self.sink.send(Message::text(close)).await?;
            self.sink.close().await
        })
        .await;
        self.stats
    }

    async fn send_ack(&mut self) -> Result<(), tungstenite::Error> {
        self.ack_deadline = None;
        let seq = self.ack.last_seq.load(Ordering::SeqCst);
        if seq > self.ack.acked.load(Ordering::SeqCst) {
            let frame = client::ack_frame(self.next_ctl_id, &self.runtime_url, seq);
            self.next_ctl_id += 1;
            self.sink.send(Message::text(frame)).await?;
            self.ack.acked.store(seq, Ordering::SeqCst);
            self.stats.acks_sent += 1;
        }
        // Frames that arrived meanwhile may not have signalled `pending`.
        self.arm_ack_if_pending();
        Ok(())
    }

    fn arm_ack_if_pending(&mut self) {
        let unacked =
            self.ack.last_seq.load(Ordering::SeqCst) > self.ack.acked.load(Ordering::SeqCst);
        if unacked && self.ack_deadline.is_none() {
            self.ack_deadline = Some(Instant::now() + ACK_INTERVAL);
        }
    }

    /// Sends the frame whose permits were just taken, then as many more as are
    /// ready without waiting (window permits free, timetable due), and flushes.
    async fn send_pings(
        &mut self,
        due: &mut Option<Instant>,
        sending: &mut bool,
    ) -> Result<(), tungstenite::Error> {
        let Some(out) = &self.outgoing else {
            return Ok(());
        };
        let k = u64::from(out.batch);
        let mut frames = 0;
        loop {
            let now_ns = self.clock.now_ns();
            if now_ns >= self.clock.window_end_ns {
                // The measurement is over: give the permits back and stop.
                out.window.add_permits(out.batch as usize);
                *sending = false;
                break;
            }
            // With a timetable, the latency counts from the scheduled time (`t`);
            // the actual send time (`s`, the same without one) is carried too.
            let s_ns = now_ns;
            let t_ns = due.map_or(s_ns, |d| ns(d.saturating_duration_since(self.clock.epoch)));
            let frame = out
                .template
                .frame(self.next_ping_id..self.next_ping_id + k, t_ns, s_ns);
            self.next_ping_id += k;
            self.sink.feed(Message::text(frame)).await?;
            self.stats.sent += k;
            self.totals.sent.fetch_add(k, Ordering::Relaxed);
            frames += 1;
            if let (Some(d), Some(s)) = (due.as_mut(), out.schedule.as_ref()) {
                *d += s.interval;
            }
            if frames >= MAX_FRAMES_PER_FLUSH || due.is_some_and(|d| d > Instant::now()) {
                break;
            }
            match out.window.try_acquire_many(out.batch) {
                Ok(permits) => permits.forget(),
                Err(_) => break,
            }
        }
        self.sink.flush().await
    }
}

struct Reader {
    clock: Arc<Clock>,
    totals: Arc<Totals>,
    ack: Arc<AckState>,
    /// This runtime's own sending window, released on error responses to its PINGs.
    own_window: Option<Arc<Semaphore>>,
    incoming_window: Option<Arc<Semaphore>>,
    frames_since_ack: u32,
    stats: RuntimeStats,
}

impl Reader {
    async fn run(
        mut self,
        mut stream: SplitStream<WsStream>,
        mut phase: watch::Receiver<Phase>,
    ) -> RuntimeStats {
        loop {
            let msg = tokio::select! {
                biased;
                changed = phase.changed() => match changed {
                    Ok(()) if *phase.borrow_and_update() != Phase::Shutdown => continue,
                    _ => break,
                },
                msg = stream.next() => msg,
            };
            match msg {
                None => {
                    self.stats
                        .failures
                        .push("connection closed by the node".into());
                    break;
                }
                Some(Err(e)) => {
                    self.stats.failures.push(format!("receive failed: {e}"));
                    break;
                }
                Some(Ok(Message::Text(text))) => self.handle(text.as_str()),
                Some(Ok(Message::Binary(bytes))) => match std::str::from_utf8(&bytes) {
                    Ok(text) => self.handle(text),
                    Err(_) => self.stats.bad_frames += 1,
                },
                // After `Shutdown` the writer has closed the session, and
                // this is the node's answer to it: not a failure. Checked
                // here because the close can race ahead of `changed()` on a
                // multi-threaded runtime.
                Some(Ok(Message::Close(_))) if *phase.borrow() == Phase::Shutdown => break,
                Some(Ok(Message::Close(frame))) => {
                    let why =
                        frame.map_or_else(String::new, |f| format!(": {} {}", f.code, f.reason));
                    self.stats
                        .failures
                        .push(format!("the node closed the session{why}"));
                }
                Some(Ok(_)) => {}
            }
        }
        self.stats
    }

    fn handle(&mut self, text: &str) {
        let now_ns = self.clock.now_ns();
        let in_window = self.clock.in_window(now_ns);
        let mut max_seq = 0;
        let mut pings = 0u64;
        let mut ping_errors = 0u64;
        let stats = &mut self.stats;
        let parsed = client::for_each_message(text, |m| {
            max_seq = max_seq.max(m.seq.unwrap_or(0));
            match m.event {
                Event::Ping { t_ns, s_ns } => {
                    pings += 1;
                    if in_window {
                        stats.latencies.record_ns(now_ns.saturating_sub(t_ns));
                        stats
                            .service_latencies
                            .record_ns(now_ns.saturating_sub(s_ns));
                    }
                }
                Event::Response {
                    code,
                    id,
                    description,
                } if code >= 400 => {
                    record_error(&mut stats.errors, code, || {
                        description.map(|d| d.into_owned())
                    });
                    if id.is_some_and(|id| id >= PING_ID_BASE) {
                        ping_errors += 1;
                    }
                }
                Event::Response { .. } => stats.ok_responses += 1,
                Event::Other => stats.other_messages += 1,
            }
        });
        if parsed.is_err() {
            self.stats.bad_frames += 1;
        }
        if pings > 0 {
            self.stats.received += pings;
            if in_window {
                self.stats.received_in_window += pings;
            }
            self.totals.received.fetch_add(pings, Ordering::Relaxed);
            if let Some(w) = &self.incoming_window {
                w.add_permits(usize::try_from(pings).unwrap_or(usize::MAX));
            }
        }
        if ping_errors > 0 {
            self.totals
                .ping_errors
                .fetch_add(ping_errors, Ordering::Relaxed);
            if let Some(w) = &self.own_window {
                w.add_permits(usize::try_from(ping_errors).unwrap_or(usize::MAX));
            }
        }
        if max_seq > 0 {
            let before = self.ack.last_seq.fetch_max(max_seq, Ordering::SeqCst);
            if before <= self.ack.acked.load(Ordering::SeqCst) {
                // Everything was acknowledged before this frame: start the timer.
                self.ack.pending.notify_one();
            }
            self.frames_since_ack += 1;
            if self.frames_since_ack >= ACK_EVERY_FRAMES {
                self.frames_since_ack = 0;
                self.ack.due.notify_one();
            }
        }
    }
}
