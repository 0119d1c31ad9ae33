//! `[cluster]`: several nodes serving one domain. Clustering is on when `cluster.nats_url` is
//! set; it needs the bus's store in PostgreSQL (`store.url`), which every node shares. The node's
//! name `cluster.node_id` defaults to one generated at first start and kept in
//! `<data_dir>/node_id` (`ClusterConfig::resolve_node_id`).

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, StoreBackend, invalid};

/// `[cluster]` as written by the operator.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCluster {
    /// `nats://host:port`; absent: this node is alone.
    pub nats_url: Option<String>,
    /// This node's name in the cluster; absent: generated once, kept in `data_dir`.
    pub node_id: Option<String>,
    /// A node whose heartbeat is older than this is gone: its sessions may re-open elsewhere.
    pub membership_timeout_ms: u64,
    /// Tests only (`tests/it/cluster_arrival.rs`): an adoption here, its session's row taken,
    /// waits for a hand-over request to reach this node (at most `HANDOVER_TIMEOUT`) before it
    /// restores the session, so that a request for a session still arriving is deterministic.
    pub test_hold_arrivals: bool,
    /// Tests only (`tests/it/cluster_handover.rs`): a node releasing a session to another waits
    /// this long (ms) before it gives the row, so that the asking node has given up by then.
    pub test_release_delay_ms: u64,
}

impl Default for RawCluster {
    fn default() -> Self {
        Self {
            nats_url: None,
            node_id: None,
            membership_timeout_ms: 10_000,
            test_hold_arrivals: false,
            test_release_delay_ms: 0,
        }
    }
}

/// The validated `[cluster]` (present only when clustering is on).
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub nats_url: String,
    /// `None`: generated at first start (see [`ClusterConfig::resolve_node_id`]).
    pub node_id: Option<String>,
    pub membership_timeout: Duration,
    /// `cluster.test_hold_arrivals` (tests only).
    pub test_hold_arrivals: bool,
    /// `cluster.test_release_delay_ms` (tests only).
    pub test_release_delay: Duration,
}

/// A node id: what a NATS subject token and a log line can carry.
fn valid_node_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl RawCluster {
    /// Checks `cluster.*` against the store backend; `None` when clustering is off.
    pub fn validate(&self, store: &StoreBackend) -> Result<Option<ClusterConfig>, ConfigError> {
        let Some(url) = self
            .nats_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
        else {
            return Ok(None);
        };
        if !(url.starts_with("nats://") || url.starts_with("tls://")) {
            return Err(invalid(
                "cluster.nats_url",
                "must be a nats://host:port (or tls://host:port) URL",
            ));
        }
        if matches!(store, StoreBackend::Sqlite) {
            return Err(invalid(
                "cluster.nats_url",
                "clustering needs the bus's store in PostgreSQL, shared by every node: \
                 set `store.url` to a postgres:// URL",
            ));
        }
        if let Some(id) = &self.node_id
            && !valid_node_id(id)
        {
            return Err(invalid(
                "cluster.node_id",
                "must be 1 to 64 ASCII letters, digits, '-' or '_'",
            ));
        }
        if self.membership_timeout_ms < 300 {
            return Err(invalid(
                "cluster.membership_timeout_ms",
                "must be at least 300 (heartbeats go every third of it)",
            ));
        }
        Ok(Some(ClusterConfig {
            nats_url: url.to_owned(),
            node_id: self.node_id.clone(),
            membership_timeout: Duration::from_millis(self.membership_timeout_ms),
            test_hold_arrivals: self.test_hold_arrivals,
            test_release_delay: Duration::from_millis(self.test_release_delay_ms),
        }))
    }
}

impl ClusterConfig {
    /// The node id: `cluster.node_id`, else the one kept in `<data_dir>/node_id`, else a new
    /// one written there (first start).
    pub fn resolve_node_id(&self, data_dir: &Path) -> Result<String, ConfigError> {
        if let Some(id) = &self.node_id {
            return Ok(id.clone());
        }
        let file = data_dir.join("node_id");
        let problem = |what: &str, e: std::io::Error| {
            invalid(
                "cluster.node_id",
                format!("not set, and {what} {}: {e}", file.display()),
            )
        };
        match std::fs::read_to_string(&file) {
            Ok(id) if valid_node_id(id.trim()) => return Ok(id.trim().to_owned()),
            Ok(_) => {
                return Err(invalid(
                    "cluster.node_id",
                    format!("not set, and {} holds no valid node id", file.display()),
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(problem("cannot read", e)),
        }
        let id = format!("node-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        std::fs::create_dir_all(data_dir)
            .map_err(|e| problem("cannot create the directory of", e))?;
        std::fs::write(&file, format!("{id}\n")).map_err(|e| problem("cannot write", e))?;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg() -> StoreBackend {
        StoreBackend::Postgres(Box::default())
    }

    #[test]
    fn off_without_a_url() {
        assert!(matches!(RawCluster::default().validate(&pg()), Ok(None)));
    }

    #[test]
    fn sqlite_is_refused_naming_both_settings() {
        let raw = RawCluster {
            nats_url: Some("nats://127.0.0.1:4222".into()),
            ..RawCluster::default()
        };
        let e = raw
            .validate(&StoreBackend::Sqlite)
            .map(|_| ())
            .map_err(|e| e.to_string());
        let Err(e) = e else { panic!("accepted") };
        assert!(e.starts_with("setting `cluster.nats_url`: "), "{e}");
        assert!(e.contains("`store.url`"), "{e}");
    }

    #[test]
    fn bad_node_id_is_refused() {
        let raw = RawCluster {
            nats_url: Some("nats://127.0.0.1:4222".into()),
            node_id: Some("a.b".into()),
            ..RawCluster::default()
        };
        let e = raw.validate(&pg()).map(|_| ()).map_err(|e| e.to_string());
        assert!(
            matches!(&e, Err(m) if m.starts_with("setting `cluster.node_id`")),
            "{e:?}"
        );
    }

    #[test]
    fn generated_node_id_is_kept() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let cfg = RawCluster {
            nats_url: Some("nats://127.0.0.1:4222".into()),
            ..RawCluster::default()
        }
        .validate(&pg())?
        .ok_or("off")?;
        let first = cfg.resolve_node_id(dir.path())?;
        assert!(valid_node_id(&first), "{first}");
        assert_eq!(cfg.resolve_node_id(dir.path())?, first);
        Ok(())
    }
}
