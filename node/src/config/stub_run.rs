//! `[stubs.run.<instance>]`: the protocol stubs the node runs itself (`crate::stubhost`), each
//! with its component, its addresses, its allowed origins and its limits.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

/// `[stubs.run.<instance>]` as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStubRun {
    /// The component (`.wasm`) to run.
    pub component: PathBuf,
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
            component: PathBuf::new(),
            addresses: Vec::new(),
            allow: Vec::new(),
            config: Default::default(),
            memory_mb: 16,
            call_timeout_ms: 1000,
            mailbox: 256,
        }
    }
}

/// One running stub instance.
#[derive(Debug, Clone)]
pub struct StubRunConfig {
    pub name: String,
    pub component: PathBuf,
    pub addresses: Vec<String>,
    pub allow: Vec<String>,
    pub config: Vec<(String, String)>,
    pub memory_bytes: usize,
    pub call_timeout: Duration,
    pub mailbox: usize,
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
        if r.component.as_os_str().is_empty() {
            return Err(bad("`component` (a .wasm file) is required".into()));
        }
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
            component: r.component.clone(),
            addresses: r.addresses.clone(),
            allow: r.allow.clone(),
            config: r
                .config
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            memory_bytes: r.memory_mb as usize * (1 << 20),
            call_timeout: Duration::from_millis(r.call_timeout_ms),
            mailbox: r.mailbox,
        });
    }
    Ok(run)
}
