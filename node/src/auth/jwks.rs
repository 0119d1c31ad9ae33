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
mod tests {
    use super::super::test_keys::{KEYS, TestKey, set_json};
    use super::*;

    #[test]
    fn rsa_ec_and_okp_keys_are_parsed_and_others_skipped() {
        let keys = &*KEYS;
        let json = set_json(&[
            keys.rsa.jwk("r1"),
            keys.ec.jwk("e1"),
            keys.ed.jwk("d1"),
            serde_json::json!({"kty": "oct", "kid": "h1", "k": "c2VjcmV0"}),
            serde_json::json!({"kty": "EC", "crv": "P-384", "kid": "e384", "x": "AA", "y": "AA"}),
            serde_json::json!({"kty": "RSA", "kid": "small", "n": "AQAB", "e": "AQAB"}),
            {
                let mut enc = keys.rsa.jwk("enc");
                enc["use"] = "enc".into();
                enc
            },
        ]);
        let set = KeySet::parse(&json).unwrap();
        assert_eq!(set.len(), 3);
        let kinds: Vec<_> = set
            .keys
            .iter()
            .map(|k| (k.kid.as_deref(), k.kind))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (Some("r1"), KeyKind::Rsa),
                (Some("e1"), KeyKind::P256),
                (Some("d1"), KeyKind::Ed25519)
            ]
        );
    }

    #[test]
    fn sets_without_usable_keys_or_not_json_are_errors() {
        assert!(matches!(
            KeySet::parse(br#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#),
            Err(JwksError::NoUsableKey)
        ));
        assert!(matches!(
            KeySet::parse(b"not json"),
            Err(JwksError::Parse(_))
        ));
        assert!(matches!(
            KeySet::parse(br#"{"nokeys": []}"#),
            Err(JwksError::Parse(_))
        ));
    }

    fn kid_of(set: &KeySet, found: Lookup<'_>) -> Option<String> {
        let Lookup::Found(key) = found else {
            return None;
        };
        set.keys
            .iter()
            .find(|k| std::ptr::eq(&k.decoding, key))
            .and_then(|k| k.kid.clone())
    }

    #[test]
    fn keys_are_found_by_kid_and_type() {
        let keys = &*KEYS;
        let other_rsa: &TestKey = &keys.rsa2;
        let set = KeySet::parse(&set_json(&[
            keys.rsa.jwk("a"),
            other_rsa.jwk("b"),
            keys.ec.jwk("c"),
            keys.ed.jwk("d"),
        ]))
        .unwrap();
        assert_eq!(
            kid_of(&set, set.find(Some("b"), Algorithm::RS256)).as_deref(),
            Some("b")
        );
        assert_eq!(
            kid_of(&set, set.find(Some("a"), Algorithm::RS256)).as_deref(),
            Some("a")
        );
        assert!(matches!(
            set.find(Some("zzz"), Algorithm::RS256),
            Lookup::UnknownKid
        ));
        // The kid exists but names a key of another type.
        assert!(matches!(
            set.find(Some("c"), Algorithm::RS256),
            Lookup::NoFit
        ));
        // Without a kid: exactly one key of the type is needed.
        assert_eq!(
            kid_of(&set, set.find(None, Algorithm::ES256)).as_deref(),
            Some("c")
        );
        assert_eq!(
            kid_of(&set, set.find(None, Algorithm::EdDSA)).as_deref(),
            Some("d")
        );
        assert!(matches!(set.find(None, Algorithm::RS256), Lookup::NoFit));
        // HMAC never finds a key.
        assert!(matches!(
            set.find(Some("a"), Algorithm::HS256),
            Lookup::NoFit
        ));
    }

    #[test]
    fn a_key_pinned_to_another_algorithm_does_not_fit() {
        let mut jwk = KEYS.rsa.jwk("a");
        jwk["alg"] = "RS512".into();
        let set = KeySet::parse(&set_json(&[jwk])).unwrap();
        assert!(matches!(
            set.find(Some("a"), Algorithm::RS256),
            Lookup::NoFit
        ));
    }

    /// A tiny HTTP server on 127.0.0.1:0: answers every GET with `status` and the current
    /// `body`, one request per connection, and counts the requests.
    struct JwksServer {
        url: String,
        body: Arc<Mutex<Vec<u8>>>,
        hits: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl JwksServer {
        async fn start(status: u16, body: Vec<u8>) -> Self {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!(
                "http://{}/.well-known/jwks.json",
                listener.local_addr().unwrap()
            );
            let body = Arc::new(Mutex::new(body));
            let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let (b, h) = (Arc::clone(&body), Arc::clone(&hits));
            tokio::spawn(async move {
                while let Ok((mut sock, _)) = listener.accept().await {
                    let mut req = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    assert!(req.starts_with(b"GET /.well-known/jwks.json HTTP/1.1\r\n"));
                    h.fetch_add(1, Ordering::SeqCst);
                    let body = lock(&b).clone();
                    let head = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = sock.write_all(head.as_bytes()).await;
                    let _ = sock.write_all(&body).await;
                    let _ = sock.shutdown().await;
                }
            });
            Self { url, body, hits }
        }

        fn hits(&self) -> usize {
            self.hits.load(Ordering::SeqCst)
        }

        fn serve(&self, body: Vec<u8>) {
            *lock(&self.body) = body;
        }
    }

    fn url_config(url: &str, refresh: Duration) -> crate::auth::AuthConfig {
        use super::super::test_keys::{AUD, ISS};
        let mut issuer = crate::auth::jwt::RawJwtIssuer {
            issuer: ISS.into(),
            audience: vec![AUD.into()],
            algorithms: vec!["RS256".into(), "ES256".into()],
            jwks_file: None,
            jwks_url: Some(url.into()),
            idp: None,
            leeway_secs: 30,
            jwks_refresh_secs: 3600,
        }
        .validate(0)
        .unwrap();
        issuer.jwks_refresh = refresh;
        crate::auth::AuthConfig {
            allow_anonymous: false,
            tokens: Vec::new(),
            jwt: vec![issuer],
        }
    }

    /// Waits until `cache` has finished `n` background loads (5 s at most).
    async fn loaded(cache: &KeyCache, n: u64) {
        let mut loads = cache.loads();
        tokio::time::timeout(Duration::from_secs(5), loads.wait_for(|done| *done >= n))
            .await
            .unwrap_or_else(|_| panic!("{n} background loads never finished"))
            .expect("the cache lives");
    }

    #[tokio::test]
    async fn a_jwks_url_is_fetched_at_start_and_again_for_an_unknown_kid() {
        use super::super::test_keys::{claims, now};
        use crate::auth::{AuthError, Authenticator};
        let k = &*KEYS;
        let server = JwksServer::start(200, set_json(&[k.rsa.jwk("k1")])).await;
        let shutdown = CancellationToken::new();
        let auth = Authenticator::start(
            &url_config(&server.url, Duration::from_secs(3600)),
            &shutdown,
            &Clock::system(),
        )
        .await
        .unwrap();
        let cache = Arc::clone(auth.key_cache(0));
        assert_eq!(server.hits(), 1, "fetched once at start");
        let exp = now() + 600;
        let id = auth
            .authenticate(Some(&k.rsa.sign(Some("k1"), &claims("alice", exp))))
            .unwrap();
        assert_eq!(id.subject.as_deref(), Some("user://idp.example.org/alice"));
        assert_eq!(id.expires_at, Some(exp));

        // The issuer rotates: a token names the new kid. Refused this time, and the set is
        // fetched again in the background.
        server.serve(set_json(&[k.rsa.jwk("k1"), k.ec.jwk("k2")]));
        let new = k.ec.sign(Some("k2"), &claims("bob", exp));
        assert_eq!(auth.authenticate(Some(&new)), Err(AuthError::InvalidToken));
        assert!(cache.is_loading(), "a reload started");
        loaded(&cache, 1).await;
        assert!(auth.authenticate(Some(&new)).is_ok());
        assert_eq!(server.hits(), 2);

        // Another unknown kid within 30 s: refused, and no reload starts (one would be under
        // way at once: the test's runtime has not run anything since).
        let unknown = k.ec.sign(Some("k3"), &claims("carol", exp));
        assert_eq!(
            auth.authenticate(Some(&unknown)),
            Err(AuthError::InvalidToken)
        );
        assert!(!cache.is_loading(), "at most one on-demand fetch per 30 s");
        assert_eq!(*cache.loads().borrow(), 1);
        shutdown.cancel();
    }

    #[tokio::test]
    async fn the_key_set_is_refreshed_periodically_until_shutdown() {
        const EVERY: Duration = Duration::from_secs(3600);
        let k = &*KEYS;
        let server = JwksServer::start(200, set_json(&[k.rsa.jwk("k1")])).await;
        let manual = crate::clock::ManualClock::new();
        let shutdown = CancellationToken::new();
        let config = url_config(&server.url, EVERY);
        let auth = crate::auth::Authenticator::start(&config, &shutdown, &manual.clock())
            .await
            .unwrap();
        let cache = Arc::clone(auth.key_cache(0));
        assert_eq!(server.hits(), 1, "fetched at start");
        // The refresh comes when the period has passed, not before.
        manual.advance(EVERY - Duration::from_millis(1)).await;
        assert_eq!(server.hits(), 1);
        manual.advance(Duration::from_millis(1)).await;
        loaded(&cache, 1).await;
        assert_eq!(server.hits(), 2);
        manual.advance(EVERY).await;
        loaded(&cache, 2).await;
        assert_eq!(server.hits(), 3);

        // A failed refresh keeps the previous keys, and the next one comes sooner.
        server.serve(b"not json".to_vec());
        manual.advance(EVERY).await;
        loaded(&cache, 3).await;
        assert_eq!(cache.keys().len(), 1);
        server.serve(set_json(&[k.rsa.jwk("k1"), k.ec.jwk("k2")]));
        manual.advance(RETRY_AFTER_FAILURE).await;
        loaded(&cache, 4).await;
        assert_eq!(
            cache.keys().len(),
            2,
            "retried after {RETRY_AFTER_FAILURE:?}"
        );

        // After shutdown the refresh task is gone: time passing fetches nothing.
        let task = Arc::clone(&cache).spawn_refresh(EVERY, shutdown.child_token(), &manual.clock());
        shutdown.cancel();
        task.await.expect("the refresh task ends at shutdown");
        let hits = server.hits();
        manual.advance(EVERY * 3).await;
        assert_eq!(server.hits(), hits, "no refresh after shutdown");
        assert!(!cache.is_loading());
    }

    #[tokio::test]
    async fn start_fails_when_the_key_set_cannot_be_fetched() {
        let server = JwksServer::start(404, b"no".to_vec()).await;
        let err = crate::auth::Authenticator::start(
            &url_config(&server.url, Duration::from_secs(3600)),
            &CancellationToken::new(),
            &Clock::system(),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                &err.source,
                JwksError::Fetch { source: fetch::FetchError::Status(s), .. } if s.as_u16() == 404
            ),
            "{err}"
        );
        assert!(err.to_string().contains(&server.url), "{err}");
    }
}
