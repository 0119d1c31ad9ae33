//! [`KeyCache`]: the server keys other domains publish (`GET /_matrix/key/v2/server`, the Matrix
//! server-key format: `server_name`, `verify_keys` of `ed25519:<id>` → unpadded base64, the
//! document signed by itself), and the check of a JSON object signed by a domain.
//!
//! Keys are fetched on first use and again when an object names a key id the cache does not
//! know (a rotated key), at most once per [`KeyCache::MIN_REFRESH`] per domain, so a stream of
//! objects signed with unknown keys costs one fetch, not one each.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ruma::CanonicalJsonObject;
use ruma::CanonicalJsonValue;
use ruma::serde::Base64;
use ruma::signatures::{PublicKeyMap, PublicKeySet, verify_json};

use crate::error::CrossDomainError;
use crate::fetch::Fetch;
use crate::peers::PeerUrls;

#[derive(Debug)]
struct DomainKeys {
    keys: PublicKeySet,
    fetched: Instant,
}

/// Every domain's published keys, in memory.
#[derive(Debug)]
pub struct KeyCache {
    domains: Mutex<HashMap<String, Arc<DomainKeys>>>,
    min_refresh: Duration,
}

impl Default for KeyCache {
    fn default() -> Self {
        Self::with_min_refresh(Self::MIN_REFRESH)
    }
}

/// The key ids under `signatures.<domain>` of `object`.
fn key_ids(object: &CanonicalJsonObject, domain: &str) -> Vec<String> {
    match object.get("signatures") {
        Some(CanonicalJsonValue::Object(s)) => match s.get(domain) {
            Some(CanonicalJsonValue::Object(ids)) => ids.keys().cloned().collect(),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// `object` with only `domain`'s signatures (others are not ours to check).
fn only_signed_by(object: &CanonicalJsonObject, domain: &str) -> CanonicalJsonObject {
    let mut copy = object.clone();
    if let Some(CanonicalJsonValue::Object(s)) = copy.get_mut("signatures") {
        s.retain(|k, _| k == domain);
    }
    copy
}

impl KeyCache {
    /// The shortest time between two fetches of one domain's keys.
    pub const MIN_REFRESH: Duration = Duration::from_secs(10);

    pub fn new() -> Self {
        Self::default()
    }

    /// A cache that refetches a domain's keys for an unknown key id at most every `min_refresh`.
    pub fn with_min_refresh(min_refresh: Duration) -> Self {
        Self {
            domains: Mutex::new(HashMap::new()),
            min_refresh,
        }
    }

    fn cached(&self, domain: &str) -> Option<Arc<DomainKeys>> {
        self.domains
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(domain)
            .cloned()
    }

    /// Checks that `object` is signed by `peer.domain` with a key it publishes. `what` names the
    /// object in errors ("the stub descriptor").
    pub async fn verify(
        &self,
        fetch: &dyn Fetch,
        peer: &PeerUrls,
        what: &'static str,
        object: &CanonicalJsonObject,
    ) -> Result<(), CrossDomainError> {
        let domain = peer.domain.as_str();
        let ids = key_ids(object, domain);
        if ids.is_empty() {
            return Err(CrossDomainError::NotSigned {
                domain: domain.to_owned(),
                what,
            });
        }
        let known = |keys: &DomainKeys| ids.iter().any(|id| keys.keys.contains_key(id));
        let keys = match self.cached(domain) {
            Some(k) if known(&k) => k,
            Some(k) if k.fetched.elapsed() < self.min_refresh => {
                return Err(CrossDomainError::UnknownKey {
                    domain: domain.to_owned(),
                    what,
                    key_ids: ids,
                });
            }
            _ => {
                let fresh = Arc::new(fetch_keys(fetch, peer).await?);
                self.domains
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(domain.to_owned(), Arc::clone(&fresh));
                if !known(&fresh) {
                    return Err(CrossDomainError::UnknownKey {
                        domain: domain.to_owned(),
                        what,
                        key_ids: ids,
                    });
                }
                fresh
            }
        };
        let map: PublicKeyMap = [(domain.to_owned(), keys.keys.clone())].into();
        verify_json(&map, &only_signed_by(object, domain)).map_err(|source| {
            CrossDomainError::BadSignature {
                domain: domain.to_owned(),
                what,
                source,
            }
        })
    }
}

/// Fetches and checks `peer`'s key document.
async fn fetch_keys(fetch: &dyn Fetch, peer: &PeerUrls) -> Result<DomainKeys, CrossDomainError> {
    let domain = peer.domain.as_str();
    let what = "the server key document";
    let body = fetch
        .get(&peer.keys_url)
        .await
        .map_err(|source| CrossDomainError::Fetch {
            domain: domain.to_owned(),
            url: peer.keys_url.clone(),
            source,
        })?;
    let object: CanonicalJsonObject =
        serde_json::from_slice(&body).map_err(|source| CrossDomainError::NotJson {
            domain: domain.to_owned(),
            what,
            source,
        })?;
    let malformed = |problem: String| CrossDomainError::Malformed {
        domain: domain.to_owned(),
        what,
        problem,
    };
    match object.get("server_name") {
        Some(CanonicalJsonValue::String(s)) if s.eq_ignore_ascii_case(domain) => {}
        other => {
            return Err(malformed(format!(
                "server_name is {other:?}, expected {domain:?}"
            )));
        }
    }
    let Some(CanonicalJsonValue::Object(verify_keys)) = object.get("verify_keys") else {
        return Err(malformed("no verify_keys object".into()));
    };
    let mut keys = BTreeMap::new();
    for (id, entry) in verify_keys {
        let key = match entry {
            CanonicalJsonValue::Object(e) => match e.get("key") {
                Some(CanonicalJsonValue::String(k)) => k,
                _ => return Err(malformed(format!("verify_keys.{id} has no key"))),
            },
            _ => return Err(malformed(format!("verify_keys.{id} is not an object"))),
        };
        let parsed = Base64::parse(key).map_err(|e| malformed(format!("verify_keys.{id}: {e}")))?;
        keys.insert(id.clone(), parsed);
    }
    if keys.is_empty() {
        return Err(malformed("verify_keys is empty".into()));
    }
    // The document is signed with the keys it publishes.
    let map: PublicKeyMap = [(domain.to_owned(), keys.clone())].into();
    if key_ids(&object, domain).is_empty() {
        return Err(CrossDomainError::NotSigned {
            domain: domain.to_owned(),
            what,
        });
    }
    verify_json(&map, &only_signed_by(&object, domain)).map_err(|source| {
        CrossDomainError::BadSignature {
            domain: domain.to_owned(),
            what,
            source,
        }
    })?;
    Ok(DomainKeys {
        keys,
        fetched: Instant::now(),
    })
}
