//! `rethink_cluster_*`: what this node hands to and takes from the other nodes.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The node a message was handed to.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabel {
    pub node: String,
}

/// The directory a reload notice is about (`policy`, `stubs`, `appservices`), or where a
/// lookup's answer came from (`cache`, `database`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

impl From<&str> for KindLabel {
    fn from(kind: &str) -> Self {
        Self {
            kind: kind.to_owned(),
        }
    }
}

/// The cluster's counters, registered in the node's registry before it starts.
#[derive(Debug, Clone)]
pub struct ClusterMetrics {
    /// Messages stored for a session of another node, by that node.
    pub forwarded: Family<NodeLabel, Counter>,
    /// Messages moved from the shared queue into the outbox of a session held here.
    pub received: Counter,
    /// Messages refused on arrival (the sender did not own `from`, or policy).
    pub refused_on_arrival: Counter,
    /// Sessions taken over from nodes that are gone.
    pub adopted: Counter,
    /// Of those, the sessions a live node released to this one (`handover.rs`).
    pub handed_over: Counter,
    /// NATS notices to other nodes: from the publish until the client has written it to the
    /// server (its `flush`; no PING/PONG).
    pub nats_round_trip: Histogram,
    /// Reload notices this node published (its copy of a directory changed).
    pub reload_notices_sent: Family<KindLabel, Counter>,
    /// Reload notices received from other nodes.
    pub reload_notices_received: Family<KindLabel, Counter>,
    /// Reloads after another node's notice that left this node's copy different from theirs.
    pub reload_mismatches: Family<KindLabel, Counter>,
    /// Lookups of the other nodes' holders, by where the answer came from (`cache`,
    /// `database`).
    pub lookups: Family<KindLabel, Counter>,
    /// Forward targets that held their recipient no more (a stale answer), looked up again.
    pub stale_targets: Counter,
}

impl ClusterMetrics {
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self {
            forwarded: Family::default(),
            received: Counter::default(),
            refused_on_arrival: Counter::default(),
            adopted: Counter::default(),
            handed_over: Counter::default(),
            // 25 µs .. ~400 ms, doubling.
            nats_round_trip: Histogram::new((0..15).map(|i| 25e-6 * f64::from(1u32 << i))),
            reload_notices_sent: Family::default(),
            reload_notices_received: Family::default(),
            reload_mismatches: Family::default(),
            lookups: Family::default(),
            stale_targets: Counter::default(),
        };
        registry.register(
            "cluster_forwarded",
            "Messages stored for a session held by another node and handed to it, by node",
            m.forwarded.clone(),
        );
        registry.register(
            "cluster_received",
            "Messages from other nodes moved into the outbox of a session held here",
            m.received.clone(),
        );
        registry.register(
            "cluster_refused_on_arrival",
            "Messages from other nodes refused here (sender not owning `from`, or policy)",
            m.refused_on_arrival.clone(),
        );
        registry.register(
            "cluster_adopted_sessions",
            "Sessions taken over from other nodes (gone, or releasing them)",
            m.adopted.clone(),
        );
        registry.register(
            "cluster_handed_over_sessions",
            "Sessions taken over from live nodes that released them on request",
            m.handed_over.clone(),
        );
        registry.register(
            "cluster_nats_round_trip_seconds",
            "NATS notices to other nodes: from the publish until the client has written it to the server (flush)",
            m.nats_round_trip.clone(),
        );
        registry.register(
            "cluster_reload_notices_sent",
            "Reload notices published: this node's copy of a directory changed, by directory",
            m.reload_notices_sent.clone(),
        );
        registry.register(
            "cluster_reload_notices_received",
            "Reload notices received from other nodes, by directory",
            m.reload_notices_received.clone(),
        );
        registry.register(
            "cluster_reload_mismatches",
            "Reloads after another node's notice that left this node's copy different from theirs",
            m.reload_mismatches.clone(),
        );
        registry.register(
            "cluster_lookups",
            "Lookups of the holders on other nodes, by source (cache or database)",
            m.lookups.clone(),
        );
        registry.register(
            "cluster_stale_targets",
            "Forward targets that held their recipient no more, looked up again in the database",
            m.stale_targets.clone(),
        );
        m
    }
}
