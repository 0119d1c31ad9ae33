//! One running stub: an actor task that owns the stub's single live instance and calls one
//! export at a time, fed by a bounded mailbox (messages) and the instance's own events (timers,
//! network). Its supervisor part: a call that traps, runs past its deadline or exhausts memory
//! ends the instance; the message it was handling is reported lost ([`BusPort::lost`]); the
//! instance is restarted after an exponential backoff, and after `breaker_threshold`
//! consecutive failures the breaker opens: messages are refused (503) until it half-opens.
//!
//! A message is taken from the mailbox only once the port is ready ([`BusPort::ready`]: room
//! for the answers in the embedder's outgoing queue); meanwhile it waits there, and timers,
//! network and Matrix events are still called.
//!
//! A connector's Matrix events are not lost that way: the event whose `on-event` call ended
//! the instance is the next instance's first call, at most [`MAX_EVENT_TRIES`] times in all,
//! then it is skipped (an error logged, `rethink_stub_events_skipped` counted). Each event
//! handled or skipped is acknowledged to the embedder ([`MatrixPort::handled`]) before the
//! next call. A stub stopped with Matrix events not handled (the one whose call ended its last
//! instance while the next waited its backoff, and any still queued) hands them back
//! ([`StubHandle::stop_handing_over`]) for its successor (a replacing version) to take.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use rethink_proto::Envelope;
use tokio::sync::{Notify, mpsc};
use wasmtime::Store;

use crate::appservice::{EventOutcome, MAX_EVENT_TRIES, MatrixEvent, MatrixEvents};
use crate::bindings::protocol_stub::rethink::stub::net_events::NetEvent;
use crate::bindings::{connector, protocol_stub};
use crate::envelope::to_wit;
use crate::error::{LostReason, Refused, StoreUnavailable};
use crate::host::{Pre, RuntimeOwner, Shared};
use crate::metrics::{BreakerState, FailureLabel, Reason, StubLabel};
use crate::port::BusPort;
use crate::state::{Event, State, StubCtx};

/// Network events waiting for the stub: the actor's queue, shared by its instances.
const NET_EVENTS: usize = 256;

/// The handle of a running stub.
#[derive(Debug)]
pub struct StubHandle {
    name: String,
    mailbox: Mailbox,
    /// Matrix events for `on-event` (a connector's; a protocol stub's instance ignores them).
    matrix_events: MatrixEvents,
    stop: Arc<Notify>,
    task: tokio::task::JoinHandle<Vec<MatrixEvent>>,
    /// The write-behind writer (`writebehind.rs`), which ends once it has committed what the
    /// stopped actor wrote.
    writer: Option<tokio::task::JoinHandle<()>>,
    /// Becomes true once the first instance's init has returned or failed.
    started: tokio::sync::watch::Receiver<bool>,
    /// The stubs' runtime lives while a stub does.
    _runtime: Arc<RuntimeOwner>,
}

/// A running stub's mailbox: cheap to clone, for whoever delivers to it.
#[derive(Debug, Clone)]
pub struct Mailbox {
    tx: mpsc::Sender<Envelope>,
    breaker: Arc<AtomicU8>,
}

impl Mailbox {
    /// Puts `message` in the mailbox, or gives it back with the reason it was refused.
    #[allow(clippy::result_large_err)]
    pub fn deliver(&self, message: Envelope) -> Result<(), (Refused, Envelope)> {
        if self.breaker.load(Ordering::Acquire) == BreakerState::Open as u8 {
            return Err((Refused::BreakerOpen, message));
        }
        self.tx.try_send(message).map_err(|e| match e {
            mpsc::error::TrySendError::Full(m) => (Refused::MailboxFull, m),
            mpsc::error::TrySendError::Closed(m) => (Refused::Stopped, m),
        })
    }

    /// The breaker's state.
    pub fn breaker(&self) -> BreakerState {
        match self.breaker.load(Ordering::Acquire) {
            1 => BreakerState::Open,
            2 => BreakerState::HalfOpen,
            _ => BreakerState::Closed,
        }
    }
}

impl StubHandle {
    /// The stub's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Puts `message` in the stub's mailbox. Refused (503 at the edge) when the mailbox is
    /// full, the breaker is open, or the stub stopped; nothing is dropped silently: a message
    /// taken is handled or reported lost.
    pub fn deliver(&self, message: Envelope) -> Result<(), Refused> {
        self.mailbox.deliver(message).map_err(|(r, _)| r)
    }

    /// Resolves once the first instance has run its `init` (successfully or not).
    pub async fn started(&self) {
        let mut rx = self.started.clone();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// A clone of the mailbox.
    pub fn mailbox(&self) -> Mailbox {
        self.mailbox.clone()
    }

    /// The breaker's state.
    pub fn breaker(&self) -> BreakerState {
        self.mailbox.breaker()
    }

    /// The queue of Matrix events for the connector's `on-event`.
    pub fn matrix_events(&self) -> MatrixEvents {
        self.matrix_events.clone()
    }

    /// Stops the stub: new messages are refused, those in the mailbox are handled, then the
    /// instance ends. Returns when it has, and its key-value writes are committed. Matrix
    /// events it did not handle are logged: the embedder feeds them again at its next start
    /// (they were not acknowledged).
    pub async fn stop(self) {
        let name = self.name.clone();
        for event in self.stop_handing_over().await {
            tracing::warn!(stub = %name, position = event.position,
                "stopped before a Matrix event was handled: it is given again at the next start");
        }
    }

    /// [`Self::stop`], returning the Matrix events the stub did not handle, in their order (the
    /// one whose call ended its last instance first, then those still queued): a successor
    /// (a new version of the same connector) should take them.
    pub async fn stop_handing_over(self) -> Vec<MatrixEvent> {
        self.stop.notify_one();
        let left = match self.task.await {
            Ok(left) => left,
            Err(e) => {
                if e.is_panic() {
                    tracing::error!(stub = %self.name, "the stub's actor panicked");
                }
                Vec::new()
            }
        };
        if let Some(writer) = self.writer
            && let Err(e) = writer.await
            && e.is_panic()
        {
            tracing::error!(stub = %self.name, "the stub's key-value writer panicked");
        }
        left
    }
}

pub(crate) fn spawn(
    shared: Arc<Shared>,
    runtime: Arc<RuntimeOwner>,
    pre: Pre,
    ctx: Arc<StubCtx>,
    writer: Option<tokio::task::JoinHandle<()>>,
) -> StubHandle {
    let (tx, rx) = mpsc::channel(ctx.spec.mailbox.max(1));
    let (events_tx, events_rx) = mpsc::channel(ctx.spec.mailbox.max(1));
    let breaker = Arc::new(AtomicU8::new(BreakerState::Closed as u8));
    let stop = Arc::new(Notify::new());
    let name = ctx.spec.name.clone();
    let handle = shared.runtime.clone();
    let (started_tx, started) = tokio::sync::watch::channel(false);
    let actor = Actor::new(shared, pre, ctx, Arc::clone(&breaker));
    let task = handle.spawn(actor.run(rx, events_rx, Arc::clone(&stop), started_tx));
    StubHandle {
        name,
        mailbox: Mailbox { tx, breaker },
        matrix_events: MatrixEvents { tx: events_tx },
        stop,
        task,
        writer,
        started,
        _runtime: runtime,
    }
}

pub(crate) enum Instance {
    Stub(protocol_stub::ProtocolStub),
    Connector(connector::Connector),
}

pub(crate) struct Live {
    store: Store<State>,
    instance: Instance,
}

/// What a call was for.
pub(crate) enum Call {
    Message(Envelope),
    /// Timer `id` fired (its setting's token, see `State::take_fired`; `None`: called directly,
    /// [`crate::DirectStub::on_timer`]).
    Timer(u64, Option<u64>),
    Net(NetEvent),
    /// A Matrix event for `on-event`.
    Matrix(MatrixEvent),
}

struct Instruments {
    calls: Counter,
    latency: Histogram,
    restarts: Counter,
    breaker: Gauge,
    memory: Gauge,
    skipped: Counter,
    queued: Gauge,
}

pub(crate) struct Actor {
    shared: Arc<Shared>,
    pre: Pre,
    ctx: Arc<StubCtx>,
    breaker: Arc<AtomicU8>,
    m: Instruments,
    generation: u64,
    failures: u32,
    events: (mpsc::Sender<Event>, mpsc::Receiver<Event>),
    net: (mpsc::Sender<Event>, mpsc::Receiver<Event>),
    /// The Matrix event whose call ended the last instance: the next instance's first call.
    retry: Option<MatrixEvent>,
    /// How many instances the current Matrix event has ended.
    event_tries: u32,
}

impl Actor {
    pub(crate) fn new(
        shared: Arc<Shared>,
        pre: Pre,
        ctx: Arc<StubCtx>,
        breaker: Arc<AtomicU8>,
    ) -> Self {
        let label = StubLabel {
            stub: ctx.spec.name.clone(),
        };
        let metrics = &shared.metrics;
        let m = Instruments {
            calls: metrics.calls.get_or_create(&label).clone(),
            latency: metrics.call_latency.get_or_create(&label).clone(),
            restarts: metrics.restarts.get_or_create(&label).clone(),
            breaker: metrics.breaker.get_or_create(&label).clone(),
            memory: metrics.memory.get_or_create(&label).clone(),
            skipped: metrics.events_skipped.get_or_create(&label).clone(),
            queued: metrics.events_queued.get_or_create(&label).clone(),
        };
        // A fired timer waits here until its `on-timer` call, and counts as set until then
        // (`State::set_timer`): at most `max_timers` of them.
        let events = mpsc::channel(ctx.spec.max_timers.max(1));
        Self {
            shared,
            pre,
            ctx,
            breaker,
            m,
            generation: 0,
            failures: 0,
            events,
            net: mpsc::channel(NET_EVENTS),
            retry: None,
            event_tries: 0,
        }
    }

    fn name(&self) -> &str {
        &self.ctx.spec.name
    }

    fn port(&self) -> &Arc<dyn BusPort> {
        &self.ctx.port
    }

    fn set_breaker(&self, state: BreakerState) {
        self.breaker.store(state as u8, Ordering::Release);
        self.m.breaker.set(state as i64);
    }

    fn failed(&mut self, reason: Reason) {
        self.failures += 1;
        self.shared
            .metrics
            .failures
            .get_or_create(&FailureLabel {
                stub: self.ctx.spec.name.clone(),
                reason,
            })
            .inc();
    }

    async fn run(
        mut self,
        mut mailbox: mpsc::Receiver<Envelope>,
        mut matrix: mpsc::Receiver<MatrixEvent>,
        stop: Arc<Notify>,
        started: tokio::sync::watch::Sender<bool>,
    ) -> Vec<MatrixEvent> {
        let mut live: Option<Live> = None;
        let mut stopping = false;
        loop {
            if live.is_none() {
                if self.failures > 0 && !self.wait_before_restart(&mut mailbox, &stop).await {
                    break;
                }
                live = self.instantiate().await;
                started.send_replace(true);
                if live.is_none() {
                    continue;
                }
            }
            let Some(l) = live.as_mut() else { continue };
            // A message is taken only once the port has room for its answers (`BusPort::ready`):
            // meanwhile messages wait in the mailbox, and timers, network and Matrix events
            // still run.
            let ctx = &self.ctx;
            let call = if let Some(event) = self.retry.take() {
                Call::Matrix(event)
            } else {
                tokio::select! {
                    biased;
                    () = stop.notified(), if !stopping => {
                        stopping = true;
                        mailbox.close();
                        // Matrix events already queued are still handled (before the mailbox
                        // ends); the feeder's next send fails and goes to the next instance.
                        matrix.close();
                        continue;
                    }
                    Some(Event::Timer { generation, id, token }) = self.events.1.recv() => {
                        if generation != self.generation { continue; }
                        Call::Timer(id, Some(token))
                    }
                    Some(Event::Net { generation, event }) = self.net.1.recv() => {
                        if generation != self.generation { continue; }
                        Call::Net(event)
                    }
                    Some(event) = matrix.recv() => {
                        self.event_tries = 0;
                        Call::Matrix(event)
                    }
                    message = async {
                        ctx.port.ready(&ctx.spec.name).await;
                        mailbox.recv().await
                    } => match message {
                        Some(m) => Call::Message(m),
                        None => break,
                    },
                }
            };
            let event = match &call {
                Call::Matrix(e) => Some(e.clone()),
                _ => None,
            };
            let result = self.call(l, call).await;
            if let Some(event) = event {
                self.event_ended(event, result.as_ref().err().map(|(r, _)| *r))
                    .await;
            }
            if let Err((reason, lost)) = result {
                live = None;
                self.failed(match reason {
                    LostReason::Deadline => Reason::deadline,
                    LostReason::Memory => Reason::memory,
                    LostReason::Unavailable => Reason::store,
                    _ => Reason::trap,
                });
                tracing::warn!(stub = %self.name(), %reason, failures = self.failures, "stub instance ended");
                if let Some(m) = lost {
                    self.port().lost(self.name(), m, reason);
                }
            } else if self.failures > 0 {
                self.failures = 0;
                self.set_breaker(BreakerState::Closed);
            }
        }
        // What was not handled goes back to the caller of `stop`, in order.
        let mut left: Vec<MatrixEvent> = self.retry.take().into_iter().collect();
        matrix.close();
        while let Ok(event) = matrix.try_recv() {
            left.push(event);
        }
        if let Some(wb) = &self.ctx.wb {
            wb.close();
        }
        self.m.memory.set(0);
        left
    }

    /// After the `on-event` call of `event`: acknowledged if it returned; else kept for the
    /// next instance, or skipped once it ended [`MAX_EVENT_TRIES`] instances.
    async fn event_ended(&mut self, event: MatrixEvent, failure: Option<LostReason>) {
        let outcome = match failure {
            None => EventOutcome::Handled,
            Some(reason) => {
                // The store failing is not the event's fault: it is given again (the
                // restarts paced by the backoff and the breaker) however often, never skipped.
                if reason != LostReason::Unavailable {
                    self.event_tries += 1;
                }
                if self.event_tries < MAX_EVENT_TRIES {
                    tracing::warn!(stub = %self.name(), position = event.position, %reason, tries = self.event_tries, "a Matrix event ended the instance: given again to the next one");
                    self.retry = Some(event);
                    return;
                }
                tracing::error!(stub = %self.name(), position = event.position, %reason, tries = self.event_tries, "a Matrix event ended the instance every time: skipped");
                self.m.skipped.inc();
                EventOutcome::Skipped
            }
        };
        self.event_tries = 0;
        if let Some(matrix) = &self.ctx.matrix {
            matrix
                .handled(&self.ctx.spec.name, event.position, outcome)
                .await;
        }
    }

    /// Waits the backoff (or, with the breaker open, the cooldown, refusing what waits in the
    /// mailbox). `false` if the stub was stopped meanwhile.
    async fn wait_before_restart(
        &mut self,
        mailbox: &mut mpsc::Receiver<Envelope>,
        stop: &Notify,
    ) -> bool {
        let c = &self.shared.config;
        let delay = if self.failures >= c.breaker_threshold {
            self.set_breaker(BreakerState::Open);
            tracing::warn!(stub = %self.name(), failures = self.failures, "stub breaker open");
            while let Ok(m) = mailbox.try_recv() {
                self.port().lost(self.name(), m, LostReason::Unavailable);
            }
            c.breaker_cooldown
        } else {
            let exp = self.failures.saturating_sub(1).min(20);
            c.restart_backoff
                .saturating_mul(1 << exp)
                .min(c.restart_backoff_max)
        };
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop.notified() => {
                mailbox.close();
                while let Ok(m) = mailbox.try_recv() {
                    self.port().lost(self.name(), m, LostReason::Unavailable);
                }
                return false;
            }
        }
        if self.failures >= c.breaker_threshold {
            self.set_breaker(BreakerState::HalfOpen);
        }
        self.m.restarts.inc();
        true
    }

    /// Arms the deadline of the next call.
    fn arm(&self, store: &mut Store<State>) {
        store.data_mut().deadline = Some(Instant::now() + self.ctx.spec.call_timeout);
        store.set_epoch_deadline(1);
    }

    /// A new instance, `init` called. `None` after a failure (counted).
    pub(crate) async fn instantiate(&mut self) -> Option<Live> {
        self.generation += 1;
        if let Some(wb) = &self.ctx.wb {
            // Starts from what was committed (`init` reads it), once the writes of the
            // instances before are.
            wb.reset().await;
        }
        let mut state = State::new(
            Arc::clone(&self.ctx),
            self.generation,
            self.events.0.clone(),
        );
        state.net.events = Some(self.net.0.clone());
        let mut store = Store::new(&self.shared.engine, state);
        store.limiter(|s| &mut s.limiter);
        // At every epoch tick a running guest yields its thread (other stubs run), and traps
        // once its call is past the deadline.
        store.epoch_deadline_callback(|mut ctx| {
            let s = ctx.data_mut();
            match s.deadline {
                Some(d) if Instant::now() >= d => {
                    s.timed_out = true;
                    Err(wasmtime::format_err!("the call ran past its deadline"))
                }
                _ => Ok(wasmtime::UpdateDeadline::Yield(1)),
            }
        });
        self.arm(&mut store);
        let instance = match &self.pre {
            Pre::Stub(p) => p.instantiate_async(&mut store).await.map(Instance::Stub),
            Pre::Connector(p) => p
                .instantiate_async(&mut store)
                .await
                .map(Instance::Connector),
        };
        let instance = match instance {
            Ok(i) => i,
            Err(e) => {
                let reason = classify(&e, &store);
                tracing::warn!(stub = %self.name(), error = %format!("{e:#}"), "stub instantiation failed");
                self.failed(match reason {
                    LostReason::Memory => Reason::memory,
                    _ => Reason::init,
                });
                return None;
            }
        };
        let mut live = Live { store, instance };
        let started = Instant::now();
        self.arm(&mut live.store);
        let result = match &live.instance {
            Instance::Stub(i) => i.call_init(&mut live.store).await,
            Instance::Connector(i) => i.call_init(&mut live.store).await,
        };
        self.observe(&live, started.elapsed());
        match result {
            Ok(Ok(())) => Some(live),
            Ok(Err(text)) => {
                tracing::warn!(stub = %self.name(), error = %text, "stub init refused to start");
                self.failed(Reason::init);
                None
            }
            Err(e) => {
                let reason = classify(&e, &live.store);
                tracing::warn!(stub = %self.name(), %reason, error = %format!("{e:#}"), "stub init failed");
                self.failed(match reason {
                    LostReason::Deadline => Reason::deadline,
                    LostReason::Memory => Reason::memory,
                    LostReason::Unavailable => Reason::store,
                    _ => Reason::init,
                });
                None
            }
        }
    }

    fn observe(&self, live: &Live, elapsed: Duration) {
        self.m.calls.inc();
        self.m.latency.observe(elapsed.as_secs_f64());
        self.m.memory.set(live.store.data().limiter.peak as i64);
        let queued = self.events.1.len() + self.net.1.len();
        self.m.queued.set(i64::try_from(queued).unwrap_or(i64::MAX));
    }

    /// One export call. On failure: why, and the message that was lost with the instance.
    pub(crate) async fn call(
        &self,
        live: &mut Live,
        call: Call,
    ) -> Result<(), (LostReason, Option<Envelope>)> {
        if let Call::Timer(id, Some(token)) = call
            && !live.store.data_mut().take_fired(id, token)
        {
            // Replaced or cancelled after it fired: not delivered.
            return Ok(());
        }
        self.arm(&mut live.store);
        let started = Instant::now();
        let store = &mut live.store;
        let (result, message) = match (&live.instance, call) {
            (Instance::Stub(i), Call::Message(m)) => {
                (i.call_on_message(&mut *store, &to_wit(&m)).await, Some(m))
            }
            (Instance::Connector(i), Call::Message(m)) => {
                (i.call_on_message(&mut *store, &to_wit(&m)).await, Some(m))
            }
            (Instance::Stub(i), Call::Timer(id, _)) => {
                (i.call_on_timer(&mut *store, id).await, None)
            }
            (Instance::Connector(i), Call::Timer(id, _)) => {
                (i.call_on_timer(&mut *store, id).await, None)
            }
            (Instance::Stub(i), Call::Net(e)) => (i.call_on_network(&mut *store, &e).await, None),
            (Instance::Connector(i), Call::Net(e)) => {
                (i.call_on_network(&mut *store, &e).await, None)
            }
            (Instance::Connector(i), Call::Matrix(e)) => {
                (i.call_on_event(&mut *store, &e.json).await, None)
            }
            // A protocol stub has no `on-event`: nothing is fed to it (the node feeds
            // connectors only).
            (Instance::Stub(_), Call::Matrix(_)) => (Ok(()), None),
        };
        self.observe(live, started.elapsed());
        result.map_err(|e| {
            tracing::debug!(stub = %self.name(), error = %format!("{e:#}"), "stub call failed");
            (classify(&e, &live.store), message)
        })
    }
}

/// Why a call failed: memory when the limiter refused a growth, deadline when the epoch
/// callback found the call past its deadline, unavailable when the key-value store could not
/// answer (a read, or the commit of a write-behind write), a trap otherwise.
fn classify(e: &wasmtime::Error, store: &Store<State>) -> LostReason {
    if store.data().limiter.exhausted {
        LostReason::Memory
    } else if store.data().timed_out
        || e.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt)
    {
        LostReason::Deadline
    } else if e.downcast_ref::<StoreUnavailable>().is_some()
        || e.downcast_ref::<crate::writebehind::Lost>().is_some()
    {
        LostReason::Unavailable
    } else {
        LostReason::Trap
    }
}
