//! Authentication of runtimes: who is opening a session.
//!
//! The [`Authenticator`] asks its [`TokenSource`]s in turn for a bearer token (from the
//! `Authorization` header, the `access_token` query parameter or `body.token` of `open`). This
//! issue's sources are static tokens from the configuration; node-issued tokens (Matrix login)
//! and JWT / OIDC ID tokens plug in later as further sources. Without a token, a runtime is
//! anonymous, which only the operator's `auth.allow_anonymous` permits.

use serde::{Deserialize, Serialize};

use crate::config::{AuthConfig, StaticToken};

/// Who a session belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The proven identity (`user://idp/name`), or `None` for an anonymous runtime.
    pub subject: Option<String>,
    /// The runtime URL the credential is bound to, if any.
    #[serde(default)]
    pub runtime: Option<String>,
}

impl Identity {
    /// An anonymous runtime.
    pub fn anonymous() -> Self {
        Self {
            subject: None,
            runtime: None,
        }
    }

    /// Whether no credential was presented.
    pub fn is_anonymous(&self) -> bool {
        self.subject.is_none()
    }
}

/// Why a runtime was not let in. Each is a 401 at the edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the token is not valid")]
    InvalidToken,
    #[error("a token is required: anonymous runtimes are not allowed")]
    AnonymousRefused,
    #[error("the token is bound to another runtime")]
    WrongRuntime,
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

/// One kind of credential (static tokens; later node-issued tokens and JWT / OIDC).
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

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
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
                })
            })
    }
}

/// The chain of token sources and the anonymous switch.
#[derive(Debug)]
pub struct Authenticator {
    sources: Vec<Box<dyn TokenSource>>,
    allow_anonymous: bool,
}

impl Authenticator {
    /// The sources named by the configuration.
    pub fn from_config(config: &AuthConfig) -> Self {
        Self {
            sources: vec![Box::new(StaticTokens::new(config.tokens.clone()))],
            allow_anonymous: config.allow_anonymous,
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

    #[derive(Debug)]
    struct Refuser;
    impl TokenSource for Refuser {
        fn verify(&self, token: &str) -> Verdict {
            if token.starts_with("ey") {
                Verdict::Invalid
            } else {
                Verdict::NotMine
            }
        }
    }

    #[test]
    fn later_sources_are_asked_in_turn() {
        let a = auth(false).with_source(Box::new(Refuser));
        assert_eq!(
            a.authenticate(Some("eyJ.x.y")),
            Err(AuthError::InvalidToken)
        );
        assert!(a.authenticate(Some("0123456789abcdef-alice")).is_ok());
    }
}
