//! [`Clock`]: the node's time, as a handle given at construction (in [`crate::Config`]), so
//! that tests can control it.
//!
//! Everything that waits for time to pass on a scale a test would otherwise sleep for goes
//! through it: the session reaper and resume windows, a session's idle timeout and its
//! credential's expiry, presence timeouts, typing expiry, the `/sync` long-poll deadline.
//!
//! The production clock ([`Clock::system`]) is the operating system's clock for wall time and
//! tokio's timer for waits. A test makes a [`ManualClock`] and hands its [`ManualClock::clock`]
//! to the node: time then stands still until the test calls [`ManualClock::advance`], which
//! wakes every wait whose deadline has come and returns once every periodic task
//! ([`Clock::ticker`]) due has finished its pass, so that what the pass decided is visible.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

/// A deadline passed before the future finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("deadline elapsed")]
pub struct Elapsed;

/// The node's time. Cheap to clone; the default is the system clock.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    manual: Option<Arc<Manual>>,
}

impl Clock {
    /// The operating system's clock and tokio's timer.
    pub fn system() -> Self {
        Self { manual: None }
    }

    /// Monotonic now.
    pub fn now(&self) -> Instant {
        match &self.manual {
            None => Instant::now(),
            Some(m) => m.base + m.offset(),
        }
    }

    /// Wall-clock now, in milliseconds since the Unix epoch.
    pub fn unix_ms(&self) -> i64 {
        let since_epoch = match &self.manual {
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
            Some(m) => m.base_unix + m.offset(),
        };
        i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
    }

    /// Wall-clock now, in seconds since the Unix epoch.
    pub fn unix_secs(&self) -> u64 {
        u64::try_from(self.unix_ms() / 1000).unwrap_or(0)
    }

    /// Waits until `deadline`.
    pub async fn sleep_until(&self, deadline: Instant) {
        match &self.manual {
            None => tokio::time::sleep_until(deadline.into()).await,
            Some(m) => m.wait_until(deadline).await,
        }
    }

    /// Waits for `period`.
    pub async fn sleep(&self, period: Duration) {
        self.sleep_until(self.now() + period).await;
    }

    /// `fut`'s output, or [`Elapsed`] if `deadline` comes first.
    pub async fn timeout_at<F: Future>(
        &self,
        deadline: Instant,
        fut: F,
    ) -> Result<F::Output, Elapsed> {
        match &self.manual {
            None => tokio::time::timeout_at(deadline.into(), fut)
                .await
                .map_err(|_| Elapsed),
            Some(m) => {
                tokio::select! {
                    biased;
                    out = fut => Ok(out),
                    () = m.wait_until(deadline) => Err(Elapsed),
                }
            }
        }
    }

    /// A periodic tick for a task that loops `tick().await; work().await`: the first tick
    /// completes at once, the next ones every `period` from the ticker's creation; ticks that
    /// were missed are not made up for (one tick, then the schedule restarts from it).
    pub fn ticker(&self, period: Duration) -> Ticker {
        match &self.manual {
            None => {
                let mut interval = tokio::time::interval(period);
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                Ticker {
                    kind: TickerKind::System(interval),
                }
            }
            Some(m) => {
                let id = m.next_ticker.fetch_add(1, Ordering::Relaxed);
                let next = m.offset();
                m.tickers.send_modify(|t| {
                    t.insert(id, TickerState { next, busy: false });
                });
                Ticker {
                    kind: TickerKind::Manual {
                        clock: Arc::clone(m),
                        id,
                        period,
                        next,
                    },
                }
            }
        }
    }
}

/// See [`Clock::ticker`].
#[derive(Debug)]
pub struct Ticker {
    kind: TickerKind,
}

#[derive(Debug)]
enum TickerKind {
    System(tokio::time::Interval),
    Manual {
        clock: Arc<Manual>,
        id: u64,
        period: Duration,
        /// The next tick, as an offset of the manual clock.
        next: Duration,
    },
}

impl Ticker {
    /// Moves the next tick to `after` from now (then every period again).
    pub fn reset_after(&mut self, after: Duration) {
        match &mut self.kind {
            TickerKind::System(interval) => interval.reset_after(after),
            TickerKind::Manual { clock, next, .. } => *next = clock.offset() + after,
        }
    }

    /// Waits for the next tick. Calling it again marks the previous pass as finished.
    pub async fn tick(&mut self) {
        match &mut self.kind {
            TickerKind::System(interval) => {
                interval.tick().await;
            }
            TickerKind::Manual {
                clock,
                id,
                period,
                next,
            } => {
                let (id, due) = (*id, *next);
                clock.tickers.send_modify(|t| {
                    t.insert(
                        id,
                        TickerState {
                            next: due,
                            busy: false,
                        },
                    );
                });
                clock.wait_until(clock.base + due).await;
                clock.tickers.send_modify(|t| {
                    if let Some(s) = t.get_mut(&id) {
                        s.busy = true;
                    }
                });
                // On schedule, the next tick is a period after this one's due time; a tick
                // late by a period or more starts the schedule anew from now.
                let now = clock.offset();
                *next = if due + *period > now {
                    due + *period
                } else {
                    now + *period
                };
            }
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        if let TickerKind::Manual { clock, id, .. } = &self.kind {
            clock.tickers.send_modify(|t| {
                t.remove(id);
            });
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct TickerState {
    /// The offset of its next tick.
    next: Duration,
    /// Between a tick and the next call to [`Ticker::tick`]: its pass is running.
    busy: bool,
}

#[derive(Debug)]
struct Manual {
    base: Instant,
    /// Wall time at `base`, since the Unix epoch.
    base_unix: Duration,
    /// Time passed since `base`.
    now: watch::Sender<Duration>,
    tickers: watch::Sender<HashMap<u64, TickerState>>,
    next_ticker: AtomicU64,
}

impl Manual {
    fn offset(&self) -> Duration {
        *self.now.borrow()
    }

    async fn wait_until(&self, deadline: Instant) {
        let due = deadline.saturating_duration_since(self.base);
        let mut rx = self.now.subscribe();
        // `self` holds the sender, so the channel cannot close while this waits.
        let _ = rx.wait_for(|now| *now >= due).await;
    }
}

/// A clock that moves only when told to, for tests. Give [`ManualClock::clock`] to the node.
#[derive(Debug, Clone)]
pub struct ManualClock {
    inner: Arc<Manual>,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl ManualClock {
    /// Starts at the current system time.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Manual {
                base: Instant::now(),
                base_unix: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default(),
                now: watch::Sender::new(Duration::ZERO),
                tickers: watch::Sender::new(HashMap::new()),
                next_ticker: AtomicU64::new(0),
            }),
        }
    }

    /// The clock to hand to the node.
    pub fn clock(&self) -> Clock {
        Clock {
            manual: Some(Arc::clone(&self.inner)),
        }
    }

    /// Moves time forward by `by`: every wait whose deadline has come wakes. Returns once every
    /// periodic task due by then has run its pass and waits for a later tick.
    pub async fn advance(&self, by: Duration) {
        let mut now = Duration::ZERO;
        self.inner.now.send_modify(|t| {
            *t += by;
            now = *t;
        });
        let mut tickers = self.inner.tickers.subscribe();
        // The sender lives in `self`: the channel cannot close while this waits.
        let _ = tickers
            .wait_for(|t| t.values().all(|s| !s.busy && s.next > now))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::sync::atomic::{AtomicBool, AtomicUsize};

    use super::*;

    /// One poll of `fut` (with the calling task's waker): whether it is done now.
    async fn poll_once<F: Future + Unpin>(fut: &mut F) -> bool {
        std::future::poll_fn(|cx| std::task::Poll::Ready(Pin::new(&mut *fut).poll(cx).is_ready()))
            .await
    }

    #[tokio::test]
    async fn manual_time_moves_only_when_advanced() {
        let manual = ManualClock::new();
        let clock = manual.clock();
        let (t0, u0) = (clock.now(), clock.unix_ms());
        let deadline = t0 + Duration::from_secs(60);
        // A task asleep until the deadline: it says when it waits (the send and the sleep's
        // first poll are one poll of the task) and marks its wake.
        let woken = Arc::new(AtomicBool::new(false));
        let (waiting, is_waiting) = tokio::sync::oneshot::channel();
        let sleeper = tokio::spawn({
            let (clock, woken) = (clock.clone(), Arc::clone(&woken));
            async move {
                let _ = waiting.send(());
                clock.sleep_until(deadline).await;
                woken.store(true, Ordering::SeqCst);
            }
        });
        is_waiting.await.expect("the sleeper waits");
        // The same waits, polled here.
        let mut sleep = Box::pin(clock.sleep_until(deadline));
        let mut pending = Box::pin(clock.timeout_at(deadline, std::future::pending::<()>()));
        assert!(!poll_once(&mut sleep).await && !poll_once(&mut pending).await);

        manual.advance(Duration::from_secs(59)).await;
        assert_eq!(clock.now() - t0, Duration::from_secs(59));
        assert_eq!(clock.unix_ms() - u0, 59_000);
        assert!(!poll_once(&mut sleep).await, "a sleep not yet due");
        assert!(!poll_once(&mut pending).await, "a deadline not yet due");
        // The sleeper runs now if the advance woke it (on this one-thread runtime, the tasks
        // woken run before a task that yields is polled again).
        tokio::task::yield_now().await;
        assert!(!woken.load(Ordering::SeqCst), "the sleeper not yet woken");

        manual.advance(Duration::from_secs(1)).await;
        assert!(poll_once(&mut sleep).await, "a sleep due");
        sleeper.await.expect("woken at its deadline");
        assert!(woken.load(Ordering::SeqCst));
        assert_eq!(pending.await, Err(Elapsed));
        let ready = clock.timeout_at(deadline, async { 7 }).await;
        assert_eq!(ready, Ok(7), "a ready future wins even after the deadline");
    }

    #[tokio::test]
    async fn advance_returns_after_the_passes_it_made_due() {
        let manual = ManualClock::new();
        let clock = manual.clock();
        let passes = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let passes = Arc::clone(&passes);
            let mut ticker = clock.ticker(Duration::from_secs(10));
            async move {
                loop {
                    ticker.tick().await;
                    // A pass that takes a while in real time.
                    tokio::task::yield_now().await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    passes.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        // The first tick is immediate.
        manual.advance(Duration::ZERO).await;
        assert_eq!(passes.load(Ordering::SeqCst), 1);
        manual.advance(Duration::from_secs(9)).await;
        assert_eq!(passes.load(Ordering::SeqCst), 1, "not due yet");
        manual.advance(Duration::from_secs(1)).await;
        assert_eq!(passes.load(Ordering::SeqCst), 2, "due: the pass ran");
        manual.advance(Duration::from_secs(100)).await;
        assert_eq!(passes.load(Ordering::SeqCst), 3, "one pass for one jump");
        task.abort();
    }
}
