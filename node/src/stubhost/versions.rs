//! Which version of its stub each instance runs: the gauge `rethink_stub_running{stub, source,
//! sha256, version}`, 1 for every version that has a live instance (two while an old one
//! drains after a replacement), and [`Version`], how logs name one.

use std::fmt;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// One version of what an instance runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct Version {
    /// The instance (`[stubs.run.<stub>]`).
    pub stub: String,
    /// The catalogue stub's name, or the component file.
    pub source: String,
    /// The component's sha256 (hex).
    pub sha256: String,
    /// The version its metadata gives (the catalogue's), empty for a component file.
    pub version: String,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let short = self.sha256.get(..12).unwrap_or(&self.sha256);
        write!(f, "{} {} (sha256 {short}…)", self.source, self.version)
    }
}

/// The gauge of running versions. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct RunningVersions {
    running: Family<Version, Gauge>,
}

impl RunningVersions {
    /// Registers the gauge in `registry` (as `stub_running`).
    pub fn new(registry: &mut Registry) -> Self {
        let v = Self::default();
        registry.register(
            "stub_running",
            "Stub versions with a live instance (1), by instance, source, sha256 and version",
            v.running.clone(),
        );
        v
    }

    pub(super) fn started(&self, version: &Version) {
        self.running.get_or_create(version).set(1);
    }

    pub(super) fn stopped(&self, version: &Version) {
        self.running.remove(version);
    }
}
