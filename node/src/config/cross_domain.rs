//! `[cross_domain]`: routing to other domains through their own protocol stubs
//! (`crate::crossdomain`): `enabled` (off by default: messages to other domains get 404 "no
//! route to domain", and node tokens are refused), `peers` (domain → base URL of that domain's node; any other domain
//! is reached at `https://<domain>`), `proof_ttl_secs` (how long a node-authentication challenge
//! this node issues stays valid), `retry_secs` (how long a domain whose stub was refused
//! is answered 502 before the node tries again; the longest wait between tries for a domain
//! whose node is down, whose messages wait meanwhile), `delivery_timeout_secs` (a message not
//! delivered to its domain's node within it is answered 504), `queue_limit` (messages waiting
//! for one domain; 503 beyond), `proof_leeway_secs` (how long after its challenge expired another
//! node's proof is still accepted here: clock skew between the nodes). The verified stubs are kept under `<data_dir>/crossdomain`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid, positive};

/// `[cross_domain]` as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCrossDomain {
    pub enabled: bool,
    /// Domain → base URL of its node (`"b.example" = "https://node.b.example"`).
    pub peers: BTreeMap<String, String>,
    pub proof_ttl_secs: u64,
    pub retry_secs: u64,
    pub delivery_timeout_secs: u64,
    pub queue_limit: usize,
    pub proof_leeway_secs: u64,
}

impl Default for RawCrossDomain {
    fn default() -> Self {
        Self {
            enabled: false,
            peers: BTreeMap::new(),
            proof_ttl_secs: 3600,
            retry_secs: 30,
            delivery_timeout_secs: 60,
            queue_limit: 1024,
            proof_leeway_secs: 30,
        }
    }
}

/// The validated `[cross_domain]` settings.
#[derive(Debug, Clone)]
pub struct CrossDomainConfig {
    /// Whether messages to other domains are routed and node tokens accepted.
    pub enabled: bool,
    /// Domain (lowercase) → base URL without a trailing slash.
    pub peers: Vec<(String, String)>,
    pub proof_ttl: Duration,
    pub retry: Duration,
    /// A message not delivered to its domain's node within it is answered 504.
    pub delivery_timeout: Duration,
    /// Messages waiting for one domain (503 beyond).
    pub queue_limit: usize,
    /// How long after its challenge expired a node's proof is still accepted here (for a
    /// node whose clock is behind ours: it renews its proof late).
    pub proof_leeway: Duration,
    /// Where verified stubs of other domains are kept.
    pub cache_dir: PathBuf,
}

impl RawCrossDomain {
    pub(super) fn validate(
        self,
        data_dir: &Path,
        domain: &str,
    ) -> Result<CrossDomainConfig, ConfigError> {
        positive("cross_domain.proof_ttl_secs", self.proof_ttl_secs)?;
        positive("cross_domain.retry_secs", self.retry_secs)?;
        positive(
            "cross_domain.delivery_timeout_secs",
            self.delivery_timeout_secs,
        )?;
        positive("cross_domain.queue_limit", self.queue_limit as u64)?;
        let mut peers = Vec::new();
        for (name, url) in self.peers {
            let name = name.to_ascii_lowercase();
            let ok_name = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b':');
            if !ok_name || name == domain {
                return Err(invalid(
                    "cross_domain.peers",
                    format!("{name:?} is not another domain's name"),
                ));
            }
            let url = url.trim().trim_end_matches('/').to_owned();
            let host = url
                .strip_prefix("https://")
                .or_else(|| url.strip_prefix("http://"))
                .map(|r| r.split('/').next().unwrap_or(""));
            if !host.is_some_and(|h| !h.is_empty() && !h.contains('@')) || url.contains(['?', '#'])
            {
                return Err(invalid(
                    "cross_domain.peers",
                    format!("{name}: {url:?} is not an http:// or https:// base URL"),
                ));
            }
            peers.push((name, url));
        }
        Ok(CrossDomainConfig {
            enabled: self.enabled,
            peers,
            proof_ttl: Duration::from_secs(self.proof_ttl_secs),
            retry: Duration::from_secs(self.retry_secs),
            delivery_timeout: Duration::from_secs(self.delivery_timeout_secs),
            queue_limit: self.queue_limit,
            proof_leeway: Duration::from_secs(self.proof_leeway_secs),
            cache_dir: data_dir.join("crossdomain"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_other_domains_with_http_urls() {
        let raw = |name: &str, url: &str| RawCrossDomain {
            peers: [(name.to_owned(), url.to_owned())].into(),
            ..RawCrossDomain::default()
        };
        let ok = raw("B.test", "http://127.0.0.1:9/")
            .validate(Path::new("/d"), "a.test")
            .expect("valid");
        assert_eq!(
            ok.peers,
            vec![("b.test".to_owned(), "http://127.0.0.1:9".to_owned())]
        );
        assert_eq!(ok.cache_dir, Path::new("/d/crossdomain"));
        for (name, url) in [
            ("a.test", "https://x"),
            ("b test", "https://x"),
            ("b.test", "wss://x"),
            ("b.test", "https://"),
            ("b.test", "https://u@x"),
        ] {
            let e = raw(name, url)
                .validate(Path::new("/d"), "a.test")
                .expect_err(name);
            assert!(
                e.to_string().starts_with("setting `cross_domain.peers`"),
                "{e}"
            );
        }
    }

    #[test]
    fn static_tokens_may_not_claim_a_node_identity() {
        let mut raw = super::super::RawConfig::default();
        raw.auth.tokens = vec![crate::auth::StaticToken {
            token: "0123456789abcdef0".into(),
            subject: "node://b.example".into(),
            runtime: None,
        }];
        let e = raw.validate().expect_err("reserved");
        assert!(e.to_string().contains("reserved for nodes"), "{e}");
    }

    #[test]
    // figment's Jail returns its own large error type.
    #[allow(clippy::result_large_err)]
    fn peers_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("RETHINK_CROSS_DOMAIN__ENABLED", "true");
            jail.set_env(
                "RETHINK_CROSS_DOMAIN__PEERS",
                "{\"b.example\"=\"https://node.b.example\"}",
            );
            let cfg = super::super::RawConfig::load(None)
                .map_err(|e| e.to_string())?
                .validate()
                .map_err(|e| e.to_string())?;
            assert!(cfg.cross_domain.enabled);
            assert_eq!(
                cfg.cross_domain.peers,
                vec![("b.example".into(), "https://node.b.example".into())]
            );
            Ok(())
        });
    }
}
