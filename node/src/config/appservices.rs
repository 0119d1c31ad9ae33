//! Settings of the Matrix application services (`[appservices]`: the directory of Synapse-format
//! registration files, how often it is read, the transaction backoff and size, the extra trust
//! roots of `https://` service URLs), checked here into [`AppservicesConfig`] for
//! `crate::appservice`.

use std::path::PathBuf;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid, positive};

/// `[appservices]`: Matrix application services (registration files in Synapse's format).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAppservices {
    pub dir: Option<PathBuf>,
    pub watch_interval_ms: u64,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    pub max_events_per_txn: usize,
    /// PEM certificates trusted for `https://` service URLs besides the web PKI roots.
    pub ca_file: Option<PathBuf>,
}

impl Default for RawAppservices {
    fn default() -> Self {
        Self {
            dir: None,
            watch_interval_ms: 1000,
            initial_backoff_ms: 250,
            max_backoff_ms: 60_000,
            max_events_per_txn: 100,
            ca_file: None,
        }
    }
}

/// Matrix application services (`crate::appservice`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppservicesConfig {
    /// The directory of registration files (`*.yaml`, `*.yml`); `None`: no service.
    pub dir: Option<PathBuf>,
    /// How often the directory is checked for changes.
    pub watch_interval: Duration,
    /// The first wait after a failed transaction; it doubles up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Most room events in one transaction (more wait for the next).
    pub max_events_per_txn: usize,
    /// `appservices.ca_file`, and the certificates read from it: trusted for `https://`
    /// service URLs besides the web PKI roots.
    pub ca_file: Option<PathBuf>,
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// The Matrix sides of WebAssembly connectors (`[connectors.<name>.matrix]`), services
    /// beside those of `dir`, kept across its reloads.
    pub connectors: Vec<super::connectors::ConnectorMatrix>,
}

pub(super) fn validate_appservices(a: &RawAppservices) -> Result<AppservicesConfig, ConfigError> {
    if let Some(dir) = &a.dir
        && !dir.is_dir()
    {
        return Err(invalid(
            "appservices.dir",
            format!("{} is not a directory", dir.display()),
        ));
    }
    positive("appservices.watch_interval_ms", a.watch_interval_ms)?;
    positive("appservices.initial_backoff_ms", a.initial_backoff_ms)?;
    if a.max_backoff_ms < a.initial_backoff_ms {
        return Err(invalid(
            "appservices.max_backoff_ms",
            "must be at least appservices.initial_backoff_ms",
        ));
    }
    if !(1..=1000).contains(&a.max_events_per_txn) {
        return Err(invalid(
            "appservices.max_events_per_txn",
            "must be between 1 and 1000",
        ));
    }
    let extra_roots = match &a.ca_file {
        Some(path) => rethink_stubs::tls::load_roots(path)
            .map_err(|e| invalid("appservices.ca_file", e.to_string()))?,
        None => Vec::new(),
    };
    Ok(AppservicesConfig {
        dir: a.dir.clone(),
        watch_interval: Duration::from_millis(a.watch_interval_ms),
        initial_backoff: Duration::from_millis(a.initial_backoff_ms),
        max_backoff: Duration::from_millis(a.max_backoff_ms),
        max_events_per_txn: a.max_events_per_txn,
        ca_file: a.ca_file.clone(),
        extra_roots,
        connectors: Vec::new(),
    })
}
