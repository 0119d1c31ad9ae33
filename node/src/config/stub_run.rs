//! `[stubs.run.<instance>]`: the protocol stubs the node runs itself (`crate::stubhost`), each
//! with what it runs (a `component` file, or a `stub` of the catalogue by name, followed when
//! `stubs.dir` replaces it), its addresses, its allowed origins and its limits.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

/// `[stubs.run.<instance>]` as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStubRun {
    /// The component (`.wasm`) to run, loaded once at start. Exactly one of `component` and
    /// `stub`.
    pub component: Option<PathBuf>,
    /// The catalogue's stub to run, by name (the built-in `default` or one of `stubs.dir`): a
    /// replacement in `stubs.dir` is started and the old instance drains.
    pub stub: Option<String>,
    /// The addresses of this domain the stub owns (it may send from them and gets their
    /// messages).
    pub addresses: Vec<String>,
    /// Origins (`wss://host:port`, `https://host`) it may connect to; none by default.
    pub allow: Vec<String>,
    /// What `host.config` answers.
    pub config: BTreeMap<String, String>,
    pub memory_mb: u32,
    pub call_timeout_ms: u64,
    pub mailbox: usize,
}

impl Default for RawStubRun {
    fn default() -> Self {
        Self {
            component: None,
            stub: None,
            addresses: Vec::new(),
            allow: Vec::new(),
            config: Default::default(),
            memory_mb: 16,
            call_timeout_ms: 1000,
            mailbox: 256,
        }
    }
}

/// What an instance runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StubSource {
    /// A component file, read once at start.
    Component(PathBuf),
    /// The catalogue's stub of this name, followed across replacements.
    Catalogue(String),
    /// A connector built into the node (`rethink_stubs::builtin_connector`), by name.
    Builtin(String),
}

/// One running stub instance.
#[derive(Debug, Clone)]
pub struct StubRunConfig {
    pub name: String,
    pub source: StubSource,
    pub addresses: Vec<String>,
    /// Address patterns it claims exclusively (a connector's `namespaces` with `*`): routed to
    /// it by the bus's claims, as an application service's `rethink_namespaces` are.
    pub patterns: Vec<rethink_proto::AddressPattern>,
    pub allow: Vec<String>,
    pub config: Vec<(String, String)>,
    pub memory_bytes: usize,
    pub call_timeout: Duration,
    pub mailbox: usize,
    /// A connector (`[connectors.<name>]`): the operator's code serving the domain, so its
    /// session is not held to `session.rate_per_second` (its callers are). A `[stubs.run]`
    /// instance is, like any runtime.
    pub connector: bool,
}

/// Checks `[stubs.run.*]`.
pub(super) fn validate_run(
    raw: &BTreeMap<String, RawStubRun>,
    domain: &str,
) -> Result<Vec<StubRunConfig>, ConfigError> {
    let setting = "stubs.run";
    let mut run = Vec::new();
    for (name, r) in raw {
        let bad = |problem: String| invalid(setting, format!("instance {name:?}: {problem}"));
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(bad("the name may use only letters, digits, - and _".into()));
        }
        let source = match (&r.component, &r.stub) {
            (Some(path), None) if !path.as_os_str().is_empty() => {
                StubSource::Component(path.clone())
            }
            (None, Some(stub)) if rethink_stubs::catalogue::valid_name(stub) => {
                StubSource::Catalogue(stub.clone())
            }
            (None, Some(stub)) => {
                return Err(bad(format!(
                    "`stub` {stub:?} is not a stub name (1 to 64 of A-Z a-z 0-9 _ -)"
                )));
            }
            (Some(_), Some(_)) => {
                return Err(bad(
                    "give either `component` (a .wasm file) or `stub` (a catalogue name), not both"
                        .into(),
                ));
            }
            _ => {
                return Err(bad(
                    "`component` (a .wasm file) or `stub` (a catalogue name) is required".into(),
                ));
            }
        };
        if !(1..=1024).contains(&r.memory_mb) {
            return Err(bad("`memory_mb` must be between 1 and 1024".into()));
        }
        if r.call_timeout_ms == 0 || r.mailbox == 0 {
            return Err(bad(
                "`call_timeout_ms` and `mailbox` must be greater than 0".into(),
            ));
        }
        for a in &r.addresses {
            let parsed = rethink_proto::AddressRef::parse(a)
                .map_err(|e| bad(format!("address {a:?}: {e}")))?;
            if !parsed.is_in_domain(domain) {
                return Err(bad(format!("address {a} is not in domain {domain}")));
            }
        }
        for o in &r.allow {
            let ok = ["ws://", "wss://", "http://", "https://"].iter().any(|p| {
                o.strip_prefix(p)
                    .is_some_and(|h| !h.is_empty() && !h.contains('/'))
            });
            if !ok {
                return Err(bad(format!(
                    "allowed origin {o:?} must be scheme://host[:port] (ws, wss, http, https)"
                )));
            }
        }
        run.push(StubRunConfig {
            name: name.clone(),
            source,
            addresses: r.addresses.clone(),
            patterns: Vec::new(),
            allow: r.allow.clone(),
            config: r
                .config
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            memory_bytes: r.memory_mb as usize * (1 << 20),
            call_timeout: Duration::from_millis(r.call_timeout_ms),
            mailbox: r.mailbox,
            connector: false,
        });
    }
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(r: RawStubRun) -> Result<Vec<StubRunConfig>, ConfigError> {
        validate_run(&BTreeMap::from([("x".to_owned(), r)]), "example.com")
    }

    #[test]
    fn an_instance_runs_a_component_or_a_catalogue_stub_not_both() {
        let c = one(RawStubRun {
            stub: Some("chat".into()),
            ..RawStubRun::default()
        })
        .expect("stub by name");
        assert_eq!(c[0].source, StubSource::Catalogue("chat".into()));
        let c = one(RawStubRun {
            component: Some("a.wasm".into()),
            ..RawStubRun::default()
        })
        .expect("component");
        assert_eq!(c[0].source, StubSource::Component("a.wasm".into()));
        for (raw, says) in [
            (RawStubRun::default(), "is required"),
            (
                RawStubRun {
                    stub: Some("chat".into()),
                    component: Some("a.wasm".into()),
                    ..RawStubRun::default()
                },
                "not both",
            ),
            (
                RawStubRun {
                    stub: Some("a/b".into()),
                    ..RawStubRun::default()
                },
                "not a stub name",
            ),
        ] {
            let e = one(raw).expect_err(says).to_string();
            assert!(
                e.starts_with("setting `stubs.run`") && e.contains(says),
                "{e}"
            );
        }
    }
}
