//! JSON Web Key Sets (RFC 7517) for the JWT token source: parsing, lookup by `kid`, and the
//! per-issuer [`KeyCache`] that holds the current set.
//!
//! A set comes from a file or an HTTPS URL ([`JwksLocation`]). It is loaded at start, reloaded
//! every `jwks_refresh_secs` by a background task ([`KeyCache::spawn_refresh`]) and, when a token
//! names a `kid` the set does not have, reloaded in the background at most once per
//! [`ON_DEMAND_MIN_INTERVAL`] ([`KeyCache::refresh_soon`]); that token is refused. Verification
//! only ever reads the cached set: nothing is fetched on the connection path. A reload that fails
//! keeps the previous set.
//!
//! Only public signature keys are kept: RSA (at least 2048 bits), EC P-256 and OKP Ed25519.
//! Symmetric (`oct`) keys, encryption keys (`use: enc`) and other curves are skipped.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::fetch::{self, JwksUrl};
use crate::clock::Clock;
use crate::locks::{lock, read, write};

/// The shortest time between two reloads caused by unknown `kid`s.
pub const ON_DEMAND_MIN_INTERVAL: Duration = Duration::from_secs(30);

/// After a failed periodic reload, the next try comes this soon (or at the refresh interval if
/// that is shorter).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

/// The smallest RSA modulus accepted, in bytes (2048 bits).
const MIN_RSA_MODULUS_BYTES: usize = 256;

/// Why a key set could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not a JSON Web Key Set: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("no usable signature key (RSA, EC P-256 or Ed25519) in the set")]
    NoUsableKey,
    #[error("fetching {url}: {source}")]
    Fetch {
        url: String,
        #[source]
        source: fetch::FetchError,
    },
}

/// Where an issuer's key set is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksLocation {
    File(PathBuf),
    Url(JwksUrl),
}

impl std::fmt::Display for JwksLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Url(url) => write!(f, "{url}"),
        }
    }
}

impl JwksLocation {
    /// Reads (file) or fetches (URL) and parses the key set.
    pub async fn load(&self) -> Result<KeySet, JwksError> {
        let bytes = match self {
            Self::File(path) => tokio::fs::read(path)
                .await
                .map_err(|source| JwksError::Read {
                    path: path.clone(),
                    source,
                })?,
            Self::Url(url) => fetch::get(url).await.map_err(|source| JwksError::Fetch {
                url: url.to_string(),
                source,
            })?,
        };
        KeySet::parse(&bytes)
    }
}

/// The kind of public key an algorithm needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa,
    P256,
    Ed25519,
}

impl KeyKind {
    /// The key kind for one of the supported algorithms (RS256, ES256, EdDSA).
    pub fn for_algorithm(alg: Algorithm) -> Option<Self> {
        match alg {
            Algorithm::RS256 => Some(Self::Rsa),
            Algorithm::ES256 => Some(Self::P256),
            Algorithm::EdDSA => Some(Self::Ed25519),
            _ => None,
        }
    }
}

/// One usable public key.
#[derive(Clone)]
pub struct Key {
    kid: Option<String>,
    kind: KeyKind,
    /// The JWK's own `alg`, if it pins one.
    alg: Option<String>,
    decoding: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("kind", &self.kind)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl Key {
    fn fits(&self, alg: Algorithm) -> bool {
        KeyKind::for_algorithm(alg) == Some(self.kind)
            && self.alg.as_deref().is_none_or(|a| a == algorithm_name(alg))
    }
}

/// The JOSE name of an algorithm (`RS256`, `ES256`, `EdDSA`, ...).
pub fn algorithm_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::EdDSA => "EdDSA",
        _ => "unknown",
    }
}

/// What [`KeySet::find`] found for a token.
#[derive(Debug)]
pub enum Lookup<'a> {
    /// The key to verify the token with.
    Found(&'a DecodingKey),
    /// The token names a `kid` the set does not have (maybe the issuer rotated its keys).
    UnknownKid,
    /// No key fits: the `kid`'s key is of another type, or without a `kid` there is not exactly
    /// one key of the right type.
    NoFit,
}

/// A parsed key set.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<Key>,
}

#[derive(Deserialize)]
struct RawSet {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default, rename = "use")]
    use_: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
}

fn b64_len(s: &str) -> Option<usize> {
    URL_SAFE_NO_PAD.decode(s).ok().map(|b| b.len())
}

impl RawJwk {
    /// The usable key, or why this entry is skipped.
    fn into_key(self) -> Result<Key, String> {
        if self.use_.as_deref().is_some_and(|u| u != "sig") {
            return Err(format!("`use` is {:?}, not \"sig\"", self.use_));
        }
        let (kind, decoding) = match (self.kty.as_str(), self.crv.as_deref()) {
            ("RSA", _) => {
                let (Some(n), Some(e)) = (&self.n, &self.e) else {
                    return Err("RSA key without `n` and `e`".into());
                };
                let modulus = URL_SAFE_NO_PAD
                    .decode(n)
                    .map_err(|e| format!("`n` is not base64url: {e}"))?;
                let significant = modulus.iter().skip_while(|b| **b == 0).count();
                if significant < MIN_RSA_MODULUS_BYTES {
                    return Err(format!("RSA key of {} bits", significant * 8));
                }
                let key = DecodingKey::from_rsa_components(n, e).map_err(|e| e.to_string())?;
                (KeyKind::Rsa, key)
            }
            ("EC", Some("P-256")) => {
                let (Some(x), Some(y)) = (&self.x, &self.y) else {
                    return Err("EC key without `x` and `y`".into());
                };
                if b64_len(x) != Some(32) || b64_len(y) != Some(32) {
                    return Err("P-256 coordinates are not 32 bytes of base64url".into());
                }
                let key = DecodingKey::from_ec_components(x, y).map_err(|e| e.to_string())?;
                (KeyKind::P256, key)
            }
            ("OKP", Some("Ed25519")) => {
                let Some(x) = &self.x else {
                    return Err("OKP key without `x`".into());
                };
                if b64_len(x) != Some(32) {
                    return Err("Ed25519 key is not 32 bytes of base64url".into());
                }
                let key = DecodingKey::from_ed_components(x).map_err(|e| e.to_string())?;
                (KeyKind::Ed25519, key)
            }
            (kty, crv) => {
                return Err(format!("unsupported key type {kty:?} (curve {crv:?})"));
            }
        };
        Ok(Key {
            kid: self.kid,
            kind,
            alg: self.alg,
            decoding,
        })
    }
}

impl KeySet {
    /// Parses `{"keys": [...]}`, keeping the usable signature keys; the others are skipped (and
    /// logged). A set without any usable key is an error.
    pub fn parse(json: &[u8]) -> Result<Self, JwksError> {
        let raw: RawSet = serde_json::from_slice(json)?;
        let mut keys = Vec::with_capacity(raw.keys.len());
        for (i, value) in raw.keys.into_iter().enumerate() {
            let parsed = serde_json::from_value::<RawJwk>(value)
                .map_err(|e| e.to_string())
                .and_then(RawJwk::into_key);
            match parsed {
                Ok(key) => keys.push(key),
                Err(why) => tracing::debug!(index = i, %why, "JWKS entry skipped"),
            }
        }
        if keys.is_empty() {
            return Err(JwksError::NoUsableKey);
        }
        Ok(Self { keys })
    }

    /// How many usable keys the set has.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key for a token signed with `alg`, named by `kid` if it has one.
    pub fn find(&self, kid: Option<&str>, alg: Algorithm) -> Lookup<'_> {
        match kid {
            Some(kid) => {
                let mut named = self.keys.iter().filter(|k| k.kid.as_deref() == Some(kid));
                let Some(first) = named.next() else {
                    return Lookup::UnknownKid;
                };
                std::iter::once(first)
                    .chain(named)
                    .find(|k| k.fits(alg))
                    .map_or(Lookup::NoFit, |k| Lookup::Found(&k.decoding))
            }
            None => {
                let mut fitting = self.keys.iter().filter(|k| k.fits(alg));
                match (fitting.next(), fitting.next()) {
                    (Some(only), None) => Lookup::Found(&only.decoding),
                    _ => Lookup::NoFit,
                }
            }
        }
    }
}

/// One issuer's current key set, shared by its token source and its refresh tasks.
#[derive(Debug)]
pub struct KeyCache {
    /// The issuer (for logs).
    issuer: String,
    location: JwksLocation,
    keys: RwLock<Arc<KeySet>>,
    /// When the last reload caused by an unknown `kid` started.
    last_on_demand: Mutex<Option<Instant>>,
    /// A reload is under way (periodic or on demand).
    loading: AtomicBool,
    /// Background reloads (periodic or on demand) finished so far, whatever their result.
    loads: tokio::sync::watch::Sender<u64>,
}

impl KeyCache {
    pub fn new(issuer: impl Into<String>, location: JwksLocation, initial: KeySet) -> Self {
        Self {
            issuer: issuer.into(),
            location,
            keys: RwLock::new(Arc::new(initial)),
            last_on_demand: Mutex::new(None),
            loading: AtomicBool::new(false),
            loads: tokio::sync::watch::Sender::new(0),
        }
    }

    pub fn location(&self) -> &JwksLocation {
        &self.location
    }

    /// Counts the background reloads (periodic or on demand) as they finish, whatever their
    /// result.
    pub fn loads(&self) -> tokio::sync::watch::Receiver<u64> {
        self.loads.subscribe()
    }

    /// Whether a background reload is under way.
    pub fn is_loading(&self) -> bool {
        self.loading.load(Ordering::Acquire)
    }

    /// A background reload's end: not loading any more, one more load counted.
    fn loaded(&self) {
        self.loading.store(false, Ordering::Release);
        self.loads.send_modify(|n| *n += 1);
    }

    /// The current key set (a cheap clone).
    pub fn keys(&self) -> Arc<KeySet> {
        Arc::clone(&read(&self.keys))
    }

    /// Loads the set again and, if that works, replaces the current one. Returns the number of
    /// usable keys.
    pub async fn reload(&self) -> Result<usize, JwksError> {
        let set = self.location.load().await?;
        let n = set.len();
        *write(&self.keys) = Arc::new(set);
        tracing::debug!(issuer = %self.issuer, from = %self.location, keys = n, "JWKS loaded");
        Ok(n)
    }

    /// Starts a background reload after a token named an unknown `kid`, unless one ran less
    /// than [`ON_DEMAND_MIN_INTERVAL`] ago or one is under way. Needs a tokio runtime; without
    /// one (or when rate-limited) it does nothing. Returns whether a reload was started.
    pub fn refresh_soon(self: &Arc<Self>) -> bool {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        {
            let mut last = lock(&self.last_on_demand);
            if last.is_some_and(|t| t.elapsed() < ON_DEMAND_MIN_INTERVAL) {
                return false;
            }
            if self.loading.swap(true, Ordering::AcqRel) {
                return false;
            }
            *last = Some(Instant::now());
        }
        let cache = Arc::clone(self);
        runtime.spawn(async move {
            if let Err(e) = cache.reload().await {
                let issuer = &cache.issuer;
                tracing::warn!(%issuer, error = %e, "JWKS reload (unknown kid) failed; keeping the keys");
            }
            cache.loaded();
        });
        true
    }

    /// Reloads the set every `every` (of `clock`) until `shutdown` is cancelled; after a
    /// failure, tries again sooner (30 s at most).
    pub fn spawn_refresh(
        self: Arc<Self>,
        every: Duration,
        shutdown: CancellationToken,
        clock: &Clock,
    ) -> tokio::task::JoinHandle<()> {
        let mut tick = clock.ticker(every);
        tokio::spawn(async move {
            // The first tick is at once: the set was just loaded.
            tick.tick().await;
            loop {
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return,
                    () = tick.tick() => {}
                }
                self.loading.store(true, Ordering::Release);
                let result = self.reload().await;
                self.loaded();
                if let Err(e) = result {
                    let issuer = &self.issuer;
                    tracing::warn!(%issuer, error = %e, "JWKS refresh failed; keeping the keys");
                    tick.reset_after(every.min(RETRY_AFTER_FAILURE));
                }
            }
        })
    }
}

#[cfg(test)]
mod tests;
