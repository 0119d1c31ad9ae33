//! Authentication of runtimes: who is opening a session.
//!
//! The [`Authenticator`] asks its [`TokenSource`]s in turn for a bearer token (from the
//! `Authorization` header, the `access_token` query parameter or `body.token` of `open`): static
//! tokens from the configuration ([`StaticTokens`]), then JWT / OIDC ID tokens of the configured
//! issuers ([`jwt::JwtSource`], with key sets from [`jwks`]). Node-issued tokens (Matrix login)
//! plug in later as a further source. Without a token, a runtime is anonymous, which only the
//! operator's `auth.allow_anonymous` permits.
//!
//! [`Authenticator::start`] is the constructor the node uses: it loads every issuer's key set
//! (file or URL) and starts their refresh tasks. [`Authenticator::from_config`] builds the same
//! chain synchronously, without fetching URLs or refreshing.

pub mod fetch;
pub mod jwks;
pub mod jwt;
#[cfg(test)]
mod test_keys;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use jwks::{JwksError, JwksLocation, KeyCache, KeySet};

/// The validated `[auth]` settings (read by `crate::config`).
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub allow_anonymous: bool,
    pub tokens: Vec<StaticToken>,
    pub jwt: Vec<jwt::JwtIssuer>,
}

/// A bearer token accepted as is, from the configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StaticToken {
    pub token: String,
    /// The identity the token proves, e.g. `user://example.com/alice`.
    pub subject: String,
    /// If set, the token may only open a session for this runtime URL.
    #[serde(default)]
    pub runtime: Option<String>,
}

/// Who a session belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The proven identity (`user://idp/name`), or `None` for an anonymous runtime.
    pub subject: Option<String>,
    /// The runtime URL the credential is bound to, if any.
    #[serde(default)]
    pub runtime: Option<String>,
    /// When the credential expires (unix seconds), if it does: a JWT's `exp`.
    #[serde(default)]
    pub expires_at: Option<u64>,
}

impl Identity {
    /// An anonymous runtime.
    pub fn anonymous() -> Self {
        Self {
            subject: None,
            runtime: None,
            expires_at: None,
        }
    }

    /// Whether no credential was presented.
    pub fn is_anonymous(&self) -> bool {
        self.subject.is_none()
    }
}

/// Why a runtime was not let in. Each is a 401 at the edge, but [`AuthError::Unchecked`].
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the token is not valid")]
    InvalidToken,
    #[error("a token is required: anonymous runtimes are not allowed")]
    AnonymousRefused,
    #[error("the token is bound to another runtime")]
    WrongRuntime,
    /// The token could not be checked now, so it is neither accepted nor refused: a node token
    /// whose domain's keys could not be fetched, or a failure of this node's own. The edge
    /// answers the error's own code (`CrossDomainError::code`: 502, 504, 500 or 503; retry
    /// later) and its `public_description` (`ws::codec`).
    #[error("the token could not be checked now")]
    Unchecked(#[source] rethink_crossdomain::CrossDomainError),
}

/// Equal when of the same kind; tokens unchecked when their errors say the same (a
/// `CrossDomainError` has no equality of its own: its sources, I/O and JSON errors, have none).
impl PartialEq for AuthError {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Unchecked(a), Self::Unchecked(b)) => {
                a.code() == b.code() && a.to_string() == b.to_string()
            }
            (a, b) => std::mem::discriminant(a) == std::mem::discriminant(b),
        }
    }
}

/// What a token source says of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Valid: this is who it proves.
    Valid(Identity),
    /// The source recognises the token (its format or issuer) and refuses it.
    Invalid,
    /// Not this source's kind of token.
    NotMine,
}

/// One kind of credential (static tokens, JWT / OIDC; later node-issued tokens).
pub trait TokenSource: Send + Sync + std::fmt::Debug {
    fn verify(&self, token: &str) -> Verdict;
}

/// Static bearer tokens from the configuration, compared in constant time.
#[derive(Debug)]
pub struct StaticTokens {
    tokens: Vec<StaticToken>,
}

impl StaticTokens {
    pub fn new(tokens: Vec<StaticToken>) -> Self {
        Self { tokens }
    }
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl TokenSource for StaticTokens {
    fn verify(&self, token: &str) -> Verdict {
        self.tokens
            .iter()
            .find(|t| constant_time_eq(t.token.as_bytes(), token.as_bytes()))
            .map_or(Verdict::NotMine, |t| {
                Verdict::Valid(Identity {
                    subject: Some(t.subject.clone()),
                    runtime: t.runtime.clone(),
                    expires_at: None,
                })
            })
    }
}

/// A key set that could not be loaded when the node started.
#[derive(Debug, thiserror::Error)]
#[error("JWT issuer {issuer:?}: cannot load its key set from {location}: {source}")]
pub struct AuthStartError {
    pub issuer: String,
    pub location: String,
    #[source]
    pub source: JwksError,
}

/// Reads a key set file now; a failure is logged and gives an empty set.
fn read_key_file(issuer: &str, path: &std::path::Path) -> KeySet {
    let loaded = std::fs::read(path)
        .map_err(|source| JwksError::Read {
            path: path.to_path_buf(),
            source,
        })
        .and_then(|bytes| KeySet::parse(&bytes));
    loaded.unwrap_or_else(|e| {
        tracing::error!(%issuer, error = %e, "cannot load the JWT key set");
        KeySet::default()
    })
}

/// The chain of token sources and the anonymous switch.
#[derive(Debug)]
pub struct Authenticator {
    sources: Vec<Box<dyn TokenSource>>,
    allow_anonymous: bool,
    /// Each JWT issuer's key cache and refresh interval.
    key_caches: Vec<(Arc<KeyCache>, Duration)>,
}

impl Authenticator {
    /// The sources named by the configuration, built without waiting: key set files are read
    /// now (one that fails is logged and its issuer's tokens are refused until it loads), key
    /// set URLs are fetched only when a token needs them, and nothing is refreshed
    /// periodically. The node uses [`Authenticator::start`].
    pub fn from_config(config: &AuthConfig) -> Self {
        Self::build(config, |issuer| match &issuer.jwks {
            JwksLocation::File(path) => read_key_file(&issuer.issuer, path),
            JwksLocation::Url(_) => KeySet::default(),
        })
    }

    /// The sources named by the configuration, with every JWT issuer's key set loaded (files
    /// read, URLs fetched: a failure stops the start) and refreshed every `jwks_refresh_secs`
    /// until `shutdown` is cancelled.
    pub async fn start(
        config: &AuthConfig,
        shutdown: &CancellationToken,
        clock: &Clock,
    ) -> Result<Self, AuthStartError> {
        let auth = Self::build(config, |_| KeySet::default());
        for ((cache, every), issuer) in auth.key_caches.iter().zip(&config.jwt) {
            let keys = cache.reload().await.map_err(|source| AuthStartError {
                issuer: issuer.issuer.clone(),
                location: cache.location().to_string(),
                source,
            })?;
            let from = cache.location();
            tracing::info!(issuer = %issuer.issuer, %from, keys, "JWT issuer ready");
            Arc::clone(cache).spawn_refresh(*every, shutdown.child_token(), clock);
        }
        Ok(auth)
    }

    /// The key cache of the `i`th JWT issuer.
    #[cfg(test)]
    pub(crate) fn key_cache(&self, i: usize) -> &Arc<KeyCache> {
        &self.key_caches[i].0
    }

    fn build(config: &AuthConfig, initial: impl Fn(&jwt::JwtIssuer) -> KeySet) -> Self {
        let mut sources: Vec<Box<dyn TokenSource>> =
            vec![Box::new(StaticTokens::new(config.tokens.clone()))];
        let mut key_caches = Vec::with_capacity(config.jwt.len());
        for issuer in &config.jwt {
            let cache = Arc::new(KeyCache::new(
                issuer.issuer.clone(),
                issuer.jwks.clone(),
                initial(issuer),
            ));
            sources.push(Box::new(jwt::JwtSource::new(issuer, Arc::clone(&cache))));
            key_caches.push((cache, issuer.jwks_refresh));
        }
        Self {
            sources,
            allow_anonymous: config.allow_anonymous,
            key_caches,
        }
    }

    /// Adds a token source, asked after the existing ones.
    pub fn with_source(mut self, source: Box<dyn TokenSource>) -> Self {
        self.sources.push(source);
        self
    }

    /// Checks a presented token (or its absence).
    pub fn authenticate(&self, token: Option<&str>) -> Result<Identity, AuthError> {
        let Some(token) = token else {
            return if self.allow_anonymous {
                Ok(Identity::anonymous())
            } else {
                Err(AuthError::AnonymousRefused)
            };
        };
        for source in &self.sources {
            match source.verify(token) {
                Verdict::Valid(identity) => return Ok(identity),
                Verdict::Invalid => return Err(AuthError::InvalidToken),
                Verdict::NotMine => {}
            }
        }
        Err(AuthError::InvalidToken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(allow_anonymous: bool) -> Authenticator {
        Authenticator::from_config(&AuthConfig {
            allow_anonymous,
            tokens: vec![StaticToken {
                token: "0123456789abcdef-alice".into(),
                subject: "user://example.com/alice".into(),
                runtime: None,
            }],
            jwt: Vec::new(),
        })
    }

    #[test]
    fn static_token_proves_its_subject() {
        let id = auth(false)
            .authenticate(Some("0123456789abcdef-alice"))
            .unwrap();
        assert_eq!(id.subject.as_deref(), Some("user://example.com/alice"));
        assert_eq!(
            auth(true).authenticate(Some("0123456789abcdef-alicX")),
            Err(AuthError::InvalidToken)
        );
    }

    #[test]
    fn anonymous_only_when_allowed() {
        assert!(auth(true).authenticate(None).unwrap().is_anonymous());
        assert_eq!(
            auth(false).authenticate(None),
            Err(AuthError::AnonymousRefused)
        );
    }

    /// A source after the static tokens: refuses tokens starting with `ey`, accepts those
    /// starting with `later-`, and records every token it is asked about.
    #[derive(Debug, Default)]
    struct Later {
        asked: Arc<std::sync::Mutex<Vec<String>>>,
    }

    impl TokenSource for Later {
        fn verify(&self, token: &str) -> Verdict {
            crate::locks::lock(&self.asked).push(token.to_owned());
            if token.starts_with("ey") {
                Verdict::Invalid
            } else if let Some(name) = token.strip_prefix("later-") {
                Verdict::Valid(Identity {
                    subject: Some(format!("user://example.com/{name}")),
                    runtime: None,
                    expires_at: None,
                })
            } else {
                Verdict::NotMine
            }
        }
    }

    #[test]
    fn later_sources_are_asked_in_turn() {
        let later = Later::default();
        let asked = Arc::clone(&later.asked);
        let a = auth(false).with_source(Box::new(later));
        // Only the later source knows this token: it proves its subject.
        let id = a.authenticate(Some("later-bob-0123456789")).unwrap();
        assert_eq!(
            id.subject.as_deref(),
            Some("user://example.com/bob-0123456789")
        );
        assert_eq!(
            a.authenticate(Some("eyJ.x.y")),
            Err(AuthError::InvalidToken)
        );
        // A token the first source decides is not passed on.
        assert!(a.authenticate(Some("0123456789abcdef-alice")).is_ok());
        assert_eq!(
            *crate::locks::lock(&asked),
            ["later-bob-0123456789", "eyJ.x.y"]
        );
    }
}
