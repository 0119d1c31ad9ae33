//! [`StubCache`]: another domain's `default` protocol stub, verified.
//!
//! [`StubCache::load`] fetches the domain's descriptor, checks its signature by the domain
//! ([`KeyCache`]), that it describes the domain it was fetched for, and its `sha256`; if the
//! memory (or the disk) already holds a component with that version and hash it is used, else
//! the component is fetched from `sourcePackageURL` and must hash to `sha256`. Verified stubs
//! are kept in memory and on disk (`<dir>/<domain>/<sha256>.wasm`, with the descriptor beside it
//! as `descriptor.json`), written atomically (a temporary file renamed).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use ruma::{CanonicalJsonObject, CanonicalJsonValue};
use sha2::{Digest, Sha256};

use crate::error::CrossDomainError;
use crate::fetch::Fetch;
use crate::keys::KeyCache;
use crate::peers::{PeerUrls, origin_of};

/// A domain's stub whose descriptor signature and component hash verified.
#[derive(Debug)]
pub struct VerifiedStub {
    pub domain: String,
    /// The descriptor's `version`.
    pub version: String,
    /// The component's lowercase hex sha256.
    pub sha256: String,
    pub bytes: Arc<[u8]>,
    /// The descriptor's `configuration.url`: the domain node's WebSocket URL.
    pub ws_url: String,
    /// The origins the stub may reach: the origin of `ws_url`.
    pub origins: Vec<String>,
    /// The descriptor's `configuration` entries that are strings (what `host.config` answers).
    pub configuration: Vec<(String, String)>,
}

/// Verified stubs by domain, in memory and on disk.
#[derive(Debug)]
pub struct StubCache {
    dir: Option<PathBuf>,
    memory: Mutex<HashMap<String, Arc<VerifiedStub>>>,
}

fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// A string field of the descriptor, or a `Malformed` error.
fn string<'a>(
    object: &'a CanonicalJsonObject,
    path: &[&str],
    domain: &str,
) -> Result<&'a str, CrossDomainError> {
    let mut value = object.get(path[0]);
    for key in &path[1..] {
        value = match value {
            Some(CanonicalJsonValue::Object(o)) => o.get(*key),
            _ => None,
        };
    }
    match value {
        Some(CanonicalJsonValue::String(s)) => Ok(s),
        _ => Err(CrossDomainError::Malformed {
            domain: domain.to_owned(),
            what: "the stub descriptor",
            problem: format!("no string `{}`", path.join(".")),
        }),
    }
}

impl StubCache {
    /// A cache that also keeps stubs under `dir` (created when needed), or only in memory.
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self {
            dir,
            memory: Mutex::new(HashMap::new()),
        }
    }

    /// The verified stub in memory for `domain`, if any.
    pub fn cached(&self, domain: &str) -> Option<Arc<VerifiedStub>> {
        self.memory
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(domain)
            .cloned()
    }

    /// Fetches `peer`'s descriptor and returns its verified stub (see the module docs).
    pub async fn load(
        &self,
        fetch: &dyn Fetch,
        keys: &KeyCache,
        peer: &PeerUrls,
    ) -> Result<Arc<VerifiedStub>, CrossDomainError> {
        let domain = peer.domain.as_str();
        let what = "the stub descriptor";
        let fetched = |url: &str, source| CrossDomainError::Fetch {
            domain: domain.to_owned(),
            url: url.to_owned(),
            source,
        };
        let body = fetch
            .get(&peer.descriptor_url)
            .await
            .map_err(|e| fetched(&peer.descriptor_url, e))?;
        let descriptor: CanonicalJsonObject =
            serde_json::from_slice(&body).map_err(|source| CrossDomainError::NotJson {
                domain: domain.to_owned(),
                what,
                source,
            })?;
        keys.verify(fetch, peer, what, &descriptor).await?;
        let malformed = |problem: String| CrossDomainError::Malformed {
            domain: domain.to_owned(),
            what,
            problem,
        };
        let named = string(&descriptor, &["configuration", "domain"], domain)?;
        if !named.eq_ignore_ascii_case(domain) {
            return Err(malformed(format!("it describes domain {named:?}")));
        }
        let version = string(&descriptor, &["version"], domain)?.to_owned();
        let sha256 = string(&descriptor, &["sha256"], domain)?.to_ascii_lowercase();
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(malformed(format!("sha256 {sha256:?} is not a sha256")));
        }
        let ws_url = string(&descriptor, &["configuration", "url"], domain)?.to_owned();
        let origin = origin_of(&ws_url)
            .filter(|o| o.starts_with("ws://") || o.starts_with("wss://"))
            .ok_or_else(|| malformed(format!("configuration.url {ws_url:?} is not a ws: URL")))?;
        if let Some(hit) = self.cached(domain)
            && hit.version == version
            && hit.sha256 == sha256
            && hit.ws_url == ws_url
        {
            return Ok(hit);
        }
        let bytes = match self.read_disk(domain, &sha256).await {
            Some(bytes) => bytes,
            None => {
                let url = string(&descriptor, &["sourcePackageURL"], domain)?;
                let bytes = fetch.get(url).await.map_err(|e| fetched(url, e))?;
                let actual = sha256_hex(&bytes);
                if actual != sha256 {
                    return Err(CrossDomainError::HashMismatch {
                        domain: domain.to_owned(),
                        expected: sha256,
                        actual,
                    });
                }
                self.write_disk(domain, &sha256, &bytes, &body).await?;
                bytes
            }
        };
        let configuration = match descriptor.get("configuration") {
            Some(CanonicalJsonValue::Object(c)) => c
                .iter()
                .filter_map(|(k, v)| match v {
                    CanonicalJsonValue::String(s) => Some((k.clone(), s.clone())),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        let stub = Arc::new(VerifiedStub {
            domain: domain.to_owned(),
            version,
            sha256,
            bytes: bytes.into(),
            ws_url,
            origins: vec![origin],
            configuration,
        });
        self.memory
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(domain.to_owned(), Arc::clone(&stub));
        Ok(stub)
    }

    fn domain_dir(&self, domain: &str) -> Option<PathBuf> {
        // A domain name never contains `/`; refuse anything that could leave the directory.
        if domain.is_empty() || domain.contains(['/', '\\']) || domain.starts_with('.') {
            return None;
        }
        self.dir.as_ref().map(|d| d.join(domain))
    }

    /// The component with this hash from disk, if it is there and still hashes right.
    async fn read_disk(&self, domain: &str, sha256: &str) -> Option<Vec<u8>> {
        let path = self.domain_dir(domain)?.join(format!("{sha256}.wasm"));
        let bytes = tokio::fs::read(&path).await.ok()?;
        if sha256_hex(&bytes) == sha256 {
            Some(bytes)
        } else {
            tracing::warn!(path = %path.display(), "a cached stub does not match its hash; fetching it again");
            None
        }
    }

    async fn write_disk(
        &self,
        domain: &str,
        sha256: &str,
        bytes: &[u8],
        descriptor: &[u8],
    ) -> Result<(), CrossDomainError> {
        let Some(dir) = self.domain_dir(domain) else {
            return Ok(());
        };
        let failed = |path: &Path, source| CrossDomainError::Cache {
            domain: domain.to_owned(),
            path: path.display().to_string(),
            source,
        };
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| failed(&dir, e))?;
        for (name, data) in [
            (format!("{sha256}.wasm"), bytes),
            ("descriptor.json".to_owned(), descriptor),
        ] {
            let path = dir.join(&name);
            let tmp = dir.join(format!(".{name}.tmp"));
            tokio::fs::write(&tmp, data)
                .await
                .map_err(|e| failed(&tmp, e))?;
            tokio::fs::rename(&tmp, &path)
                .await
                .map_err(|e| failed(&path, e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
