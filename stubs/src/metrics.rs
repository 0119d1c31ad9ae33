//! Per-stub metrics (`stub_*` under the registry's prefix: `rethink_stub_*` in the node; label
//! `stub`), registered in a registry the embedder
//! passes: calls, call latency, failures by reason, restarts, breaker state, memory, events
//! waiting.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The label of every stub metric.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct StubLabel {
    pub stub: String,
}

/// A stub and a failure reason.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct FailureLabel {
    pub stub: String,
    pub reason: Reason,
}

/// Why an instance ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Reason {
    trap,
    deadline,
    memory,
    init,
    /// The key-value store could not answer a call (its database unreachable).
    store,
}

/// Breaker states, as the gauge's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
}

fn latency_histogram() -> Histogram {
    // 1 µs .. ~4 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        1e-6, 4.0, 12,
    ))
}

/// The stub host's metric families.
#[derive(Debug, Clone)]
pub struct StubMetrics {
    /// Export calls made (init, on-message, on-timer, on-network).
    pub calls: Family<StubLabel, Counter>,
    /// Duration of export calls, seconds.
    pub call_latency: Family<StubLabel, Histogram, fn() -> Histogram>,
    /// Instances ended by a failure, by reason.
    pub failures: Family<FailureLabel, Counter>,
    /// Instances restarted after a failure.
    pub restarts: Family<StubLabel, Counter>,
    /// Breaker state: 0 closed, 1 open, 2 half-open.
    pub breaker: Family<StubLabel, Gauge>,
    /// Linear memory of the live instance, bytes.
    pub memory: Family<StubLabel, Gauge>,
    /// Matrix events a connector skipped: their `on-event` ended every instance it was given
    /// to (`MAX_EVENT_TRIES`).
    pub events_skipped: Family<StubLabel, Counter>,
    /// Timer and network events waiting for the live instance, after its last call (bounded:
    /// by `max_timers` and the network queue).
    pub events_queued: Family<StubLabel, Gauge>,
}

impl StubMetrics {
    /// Creates the families and registers them in `registry` (as `stub_*`).
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self::unregistered();
        let r = registry.sub_registry_with_prefix("stub");
        r.register("calls", "Export calls made to stubs", m.calls.clone());
        r.register(
            "call_latency_seconds",
            "Duration of export calls to stubs",
            m.call_latency.clone(),
        );
        r.register(
            "failures",
            "Stub instances ended by a failure (trap, deadline, memory, init)",
            m.failures.clone(),
        );
        r.register(
            "restarts",
            "Stub instances restarted after a failure",
            m.restarts.clone(),
        );
        r.register(
            "breaker_state",
            "Stub breaker state: 0 closed, 1 open, 2 half-open",
            m.breaker.clone(),
        );
        r.register(
            "memory_bytes",
            "Linear memory of the live stub instance",
            m.memory.clone(),
        );
        r.register(
            "events_skipped",
            "Matrix events a connector skipped after their on-event ended every instance tried",
            m.events_skipped.clone(),
        );
        r.register(
            "events_queued",
            "Timer and network events waiting for the live stub instance after its last call",
            m.events_queued.clone(),
        );
        m
    }

    /// Families registered nowhere (for hosts nobody scrapes).
    pub fn unregistered() -> Self {
        Self {
            calls: Family::default(),
            call_latency: Family::new_with_constructor(latency_histogram),
            failures: Family::default(),
            restarts: Family::default(),
            breaker: Family::default(),
            memory: Family::default(),
            events_skipped: Family::default(),
            events_queued: Family::default(),
        }
    }
}
