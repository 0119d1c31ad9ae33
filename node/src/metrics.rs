//! Metrics: the node's counters, gauges and histograms and their Prometheus text rendering for
//! `GET /metrics`. One [`Metrics`] per node (no global registry), shared through the `Node` handle.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The label of refused messages: the reTHINK response code sent back.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: u16,
}

/// The label of policy denials: the policy that denied (or `default-deny`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabel {
    pub policy: String,
}

/// The label of policy reloads.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

/// The label of application service metrics: the service's id.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabel {
    pub service: String,
}

/// Every metric the node exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// WebSocket connections with an open session.
    pub sessions_connected: Gauge,
    /// Sessions known to the node, connected or waiting in their resume window.
    pub sessions: Gauge,
    /// Messages delivered into a recipient's outbox (one per recipient).
    pub routed: Counter,
    /// Messages refused, by the response code sent to the sender.
    pub refused: Family<CodeLabel, Counter>,
    /// Messages held in outboxes (sent or not, not yet acknowledged), over all sessions.
    pub outbox_messages: Gauge,
    /// Time from a frame's arrival to the message being settled for every recipient (written to
    /// its socket or committed) and handed to the bridge, seconds.
    pub route_latency: Histogram,
    /// Messages denied by policy, by the policy that denied them.
    pub policy_denials: Family<PolicyLabel, Counter>,
    /// Policy reloads, by result (`ok`, `error`).
    pub policy_reloads: Family<ResultLabel, Counter>,
    /// Matrix `/sync` long-polls waiting for a change.
    pub matrix_syncs_waiting: Gauge,
    /// Transactions an application service acknowledged, by service.
    pub appservice_txns: Family<ServiceLabel, Counter>,
    /// Attempts to push a transaction that failed (unreachable, TLS refused, error status), by
    /// service; each is retried.
    pub appservice_txn_failures: Family<ServiceLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("rethink");
        let sessions_connected = Gauge::default();
        let sessions = Gauge::default();
        let routed = Counter::default();
        let refused = Family::<CodeLabel, Counter>::default();
        let outbox_messages = Gauge::default();
        // 5 µs .. ~80 ms, doubling.
        let route_latency = Histogram::new((0..15).map(|i| 5e-6 * f64::from(1u32 << i)));
        registry.register(
            "sessions_connected",
            "WebSocket connections with an open session",
            sessions_connected.clone(),
        );
        registry.register(
            "sessions",
            "Sessions known to the node, connected or inside their resume window",
            sessions.clone(),
        );
        registry.register(
            "messages_routed",
            "Messages delivered into a recipient outbox, one per recipient",
            routed.clone(),
        );
        registry.register(
            "messages_refused",
            "Messages refused, by the response code sent to the sender",
            refused.clone(),
        );
        registry.register(
            "outbox_messages",
            "Messages held in session outboxes, not yet acknowledged",
            outbox_messages.clone(),
        );
        let policy_denials = Family::<PolicyLabel, Counter>::default();
        let policy_reloads = Family::<ResultLabel, Counter>::default();
        registry.register(
            "policy_denials",
            "Messages denied by policy, by the policy that denied them",
            policy_denials.clone(),
        );
        registry.register(
            "policy_reloads",
            "Policy set reloads, by result",
            policy_reloads.clone(),
        );
        let matrix_syncs_waiting = Gauge::default();
        registry.register(
            "matrix_syncs_waiting",
            "Matrix /sync long-polls waiting for a change",
            matrix_syncs_waiting.clone(),
        );
        let appservice_txns = Family::<ServiceLabel, Counter>::default();
        let appservice_txn_failures = Family::<ServiceLabel, Counter>::default();
        registry.register(
            "appservice_txns",
            "Transactions acknowledged by an application service",
            appservice_txns.clone(),
        );
        registry.register(
            "appservice_txn_failures",
            "Failed attempts to push a transaction to an application service (each is retried)",
            appservice_txn_failures.clone(),
        );
        registry.register(
            "route_latency_seconds",
            "Time from frame arrival to the message being settled for every recipient (on its socket or committed)",
            route_latency.clone(),
        );
        Self {
            registry,
            sessions_connected,
            sessions,
            routed,
            refused,
            outbox_messages,
            route_latency,
            policy_denials,
            policy_reloads,
            matrix_syncs_waiting,
            appservice_txns,
            appservice_txn_failures,
        }
    }

    /// Counts a policy denial.
    pub fn policy_denial(&self, policy: &str) {
        self.policy_denials
            .get_or_create(&PolicyLabel {
                policy: policy.to_owned(),
            })
            .inc();
    }

    /// Counts a policy reload.
    pub fn policy_reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.policy_reloads
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// Counts a refusal with the code sent back.
    pub fn refuse(&self, code: u16) {
        self.refused.get_or_create(&CodeLabel { code }).inc();
    }

    /// The Prometheus text exposition of every metric.
    /// The registry, for parts that register their own families before the node starts
    /// (the stub host's `rethink_stub_*`).
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_labels() {
        let m = Metrics::new();
        m.routed.inc_by(3);
        m.refuse(403);
        m.route_latency.observe(0.00001);
        let text = m.render();
        assert!(text.contains("rethink_messages_routed_total 3"), "{text}");
        assert!(
            text.contains("rethink_messages_refused_total{code=\"403\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("rethink_route_latency_seconds_count 1"),
            "{text}"
        );
    }
}
