//! JWT / OIDC ID tokens as a [`TokenSource`]: one [`JwtSource`] per configured issuer
//! (`[[auth.jwt]]`).
//!
//! A token that is not a JWT, or whose (unverified) `iss` names another issuer, is
//! [`Verdict::NotMine`]. A token of this issuer is verified in full or refused
//! ([`Verdict::Invalid`]): the header `alg` must be one of the issuer's pinned algorithms (so
//! `none`, HMAC and algorithm-confusion attempts are refused before any key is used), the key is
//! the key set's key named by `kid` (without `kid`: the one key of the right type), then the
//! signature, `iss`, `aud`, `exp` and `nbf` (with `leeway_secs`) are checked. `jku`, `x5u` and
//! other key-carrying headers are ignored: keys come only from the configured set. A valid token
//! proves `user://<idp>/<sub>` until its `exp`.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, Validation};
use serde::{Deserialize, Serialize};

use super::fetch::JwksUrl;
use super::jwks::{JwksLocation, KeyCache, KeySet, Lookup, algorithm_name};
use super::{Identity, TokenSource, Verdict};

/// The algorithms an issuer may pin.
pub const SUPPORTED_ALGORITHMS: [Algorithm; 3] =
    [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];

fn default_leeway_secs() -> u64 {
    30
}

fn default_jwks_refresh_secs() -> u64 {
    3600
}

/// One `[[auth.jwt]]` entry as written by the operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwtIssuer {
    /// The exact `iss` of the tokens.
    #[serde(default)]
    pub issuer: String,
    /// Accepted audiences: a token's `aud` must contain one of them.
    #[serde(default)]
    pub audience: Vec<String>,
    /// The pinned signature algorithms (RS256, ES256, EdDSA).
    #[serde(default)]
    pub algorithms: Vec<String>,
    /// The key set as a file (exclusive with `jwks_url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<PathBuf>,
    /// The key set's URL (exclusive with `jwks_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// The identity provider's name in subjects (`user://<idp>/<sub>`); default: the issuer's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idp: Option<String>,
    #[serde(default = "default_leeway_secs")]
    pub leeway_secs: u64,
    #[serde(default = "default_jwks_refresh_secs")]
    pub jwks_refresh_secs: u64,
}

/// A validated issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtIssuer {
    pub issuer: String,
    pub audience: Vec<String>,
    pub algorithms: Vec<Algorithm>,
    pub jwks: JwksLocation,
    pub idp: String,
    pub leeway: Duration,
    pub jwks_refresh: Duration,
}

/// An `[[auth.jwt]]` setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("setting `auth.jwt[{index}].{setting}`: {problem}")]
pub struct JwtConfigError {
    pub index: usize,
    pub setting: &'static str,
    pub problem: String,
}

/// The host of an issuer URL (`https://idp.example.com/realm` → `idp.example.com`).
fn issuer_host(issuer: &str) -> Option<String> {
    let uri: hyper::Uri = issuer.parse().ok()?;
    uri.scheme()?;
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

impl RawJwtIssuer {
    /// Checks this entry (the `index`-th of `auth.jwt`), reading and parsing a `jwks_file`.
    pub fn validate(self, index: usize) -> Result<JwtIssuer, JwtConfigError> {
        let err = |setting: &'static str, problem: String| JwtConfigError {
            index,
            setting,
            problem,
        };
        if self.issuer.trim().is_empty() {
            return Err(err(
                "issuer",
                "required: the exact `iss` of the tokens".into(),
            ));
        }
        if self.audience.is_empty() || self.audience.iter().any(|a| a.is_empty()) {
            return Err(err(
                "audience",
                "required: a non-empty list of non-empty audiences".into(),
            ));
        }
        if self.algorithms.is_empty() {
            return Err(err(
                "algorithms",
                "required: a non-empty list of RS256, ES256, EdDSA".into(),
            ));
        }
        let mut algorithms = Vec::with_capacity(self.algorithms.len());
        for name in &self.algorithms {
            let alg = SUPPORTED_ALGORITHMS
                .into_iter()
                .find(|a| algorithm_name(*a) == name)
                .ok_or_else(|| {
                    err(
                        "algorithms",
                        format!("{name:?} is not allowed (only RS256, ES256, EdDSA)"),
                    )
                })?;
            if !algorithms.contains(&alg) {
                algorithms.push(alg);
            }
        }
        let jwks = match (self.jwks_file, self.jwks_url) {
            (Some(path), None) => {
                let bytes = std::fs::read(&path).map_err(|e| {
                    err("jwks_file", format!("cannot read {}: {e}", path.display()))
                })?;
                KeySet::parse(&bytes)
                    .map_err(|e| err("jwks_file", format!("{}: {e}", path.display())))?;
                JwksLocation::File(path)
            }
            (None, Some(url)) => {
                JwksLocation::Url(JwksUrl::parse(&url).map_err(|e| err("jwks_url", e.to_string()))?)
            }
            (Some(_), Some(_)) => {
                return Err(err(
                    "jwks_file",
                    "give either jwks_file or jwks_url, not both".into(),
                ));
            }
            (None, None) => {
                return Err(err(
                    "jwks_url",
                    "required: jwks_url (or jwks_file), where the issuer's keys are".into(),
                ));
            }
        };
        let idp = match self.idp {
            Some(idp) => idp.trim().to_ascii_lowercase(),
            None => issuer_host(&self.issuer).ok_or_else(|| {
                err(
                    "idp",
                    format!(
                        "required: the issuer {:?} is not a URL with a host",
                        self.issuer
                    ),
                )
            })?,
        };
        let idp_ok = !idp.is_empty()
            && idp
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':'));
        if !idp_ok {
            return Err(err("idp", format!("{idp:?} is not a host name")));
        }
        if self.jwks_refresh_secs == 0 {
            return Err(err("jwks_refresh_secs", "must be greater than 0".into()));
        }
        if self.leeway_secs > 600 {
            return Err(err("leeway_secs", "must be at most 600".into()));
        }
        Ok(JwtIssuer {
            issuer: self.issuer,
            audience: self.audience,
            algorithms,
            jwks,
            idp,
            leeway: Duration::from_secs(self.leeway_secs),
            jwks_refresh: Duration::from_secs(self.jwks_refresh_secs),
        })
    }
}

/// Validates every `[[auth.jwt]]` entry; an issuer may appear only once.
pub fn validate_issuers(raw: Vec<RawJwtIssuer>) -> Result<Vec<JwtIssuer>, JwtConfigError> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for (index, r) in raw.into_iter().enumerate() {
        if !seen.insert(r.issuer.clone()) {
            return Err(JwtConfigError {
                index,
                setting: "issuer",
                problem: format!("{:?} is configured twice", r.issuer),
            });
        }
        out.push(r.validate(index)?);
    }
    Ok(out)
}

/// Why a token of this issuer was refused (logged, never sent).
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("header alg {0:?} is not pinned for this issuer")]
    Algorithm(String),
    #[error("malformed header: {0}")]
    Header(&'static str),
    #[error("no key in the set has kid {0:?}")]
    UnknownKid(String),
    #[error("no key of the right type (kid {0:?})")]
    NoKey(Option<String>),
    #[error(transparent)]
    Jwt(#[from] jsonwebtoken::errors::Error),
    #[error("sub is empty or too long for an address")]
    Subject,
}

/// What is read from a token before verification, to pick the source.
struct Peek {
    header: serde_json::Map<String, serde_json::Value>,
    issuer: Option<String>,
}

#[derive(Deserialize)]
struct PeekPayload {
    #[serde(default)]
    iss: Option<serde_json::Value>,
}

fn decode_json<T: serde::de::DeserializeOwned>(part: &str) -> Option<T> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Three base64url parts, a JSON object header and payload; `None` if not a JWT.
fn peek(token: &str) -> Option<Peek> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let b64url = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if header.is_empty() || payload.is_empty() || !b64url(signature) {
        return None;
    }
    let header: serde_json::Map<String, serde_json::Value> = decode_json(header)?;
    let payload: PeekPayload = decode_json(payload)?;
    Some(Peek {
        header,
        issuer: payload.iss.and_then(|v| v.as_str().map(str::to_owned)),
    })
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
}

/// Percent-encodes what cannot stand in an address path segment (and `%` itself).
fn encode_subject(sub: &str) -> String {
    let mut out = String::with_capacity(sub.len());
    for b in sub.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~@:+|!$&'()*,;=".contains(&b) {
            out.push(char::from(b));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Tokens of one issuer.
#[derive(Debug)]
pub struct JwtSource {
    issuer: String,
    idp: String,
    /// One validation per pinned algorithm.
    validations: Vec<(Algorithm, Validation)>,
    keys: Arc<KeyCache>,
}

impl JwtSource {
    pub fn new(config: &JwtIssuer, keys: Arc<KeyCache>) -> Self {
        let validations = config
            .algorithms
            .iter()
            .map(|&alg| {
                let mut v = Validation::new(alg);
                v.leeway = config.leeway.as_secs();
                v.validate_exp = true;
                v.validate_nbf = true;
                v.validate_aud = true;
                v.set_issuer(&[&config.issuer]);
                v.set_audience(&config.audience);
                v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
                (alg, v)
            })
            .collect();
        Self {
            issuer: config.issuer.clone(),
            idp: config.idp.clone(),
            validations,
            keys,
        }
    }

    /// The issuer's key cache.
    pub fn keys(&self) -> &Arc<KeyCache> {
        &self.keys
    }

    fn check(
        &self,
        token: &str,
        header: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Identity, Refusal> {
        let alg_name = header
            .get("alg")
            .and_then(|v| v.as_str())
            .ok_or(Refusal::Header("no alg"))?;
        let (alg, validation) = self
            .validations
            .iter()
            .find(|(a, _)| algorithm_name(*a) == alg_name)
            .ok_or_else(|| Refusal::Algorithm(alg_name.to_owned()))?;
        // No extension is understood, so a critical one cannot be honoured (RFC 7515 4.1.11).
        if header.contains_key("crit") {
            return Err(Refusal::Header("crit"));
        }
        let kid = match header.get("kid") {
            None => None,
            Some(serde_json::Value::String(k)) => Some(k.as_str()),
            Some(_) => return Err(Refusal::Header("kid is not a string")),
        };
        let set = self.keys.keys();
        let key = match set.find(kid, *alg) {
            Lookup::Found(key) => key,
            Lookup::UnknownKid => {
                if self.keys.refresh_soon() {
                    let issuer = &self.issuer;
                    tracing::info!(%issuer, ?kid, "unknown kid: reloading the key set");
                }
                return Err(Refusal::UnknownKid(kid.unwrap_or_default().to_owned()));
            }
            Lookup::NoFit => {
                if set.is_empty() {
                    self.keys.refresh_soon();
                }
                return Err(Refusal::NoKey(kid.map(str::to_owned)));
            }
        };
        let claims = jsonwebtoken::decode::<Claims>(token, key, validation)?.claims;
        if claims.sub.is_empty() {
            return Err(Refusal::Subject);
        }
        let subject = format!("user://{}/{}", self.idp, encode_subject(&claims.sub));
        if rethink_proto::AddressRef::parse(&subject).is_err() {
            return Err(Refusal::Subject);
        }
        Ok(Identity {
            subject: Some(subject),
            runtime: None,
            expires_at: Some(claims.exp),
        })
    }
}

impl TokenSource for JwtSource {
    fn verify(&self, token: &str) -> Verdict {
        let Some(peek) = peek(token) else {
            return Verdict::NotMine;
        };
        if peek.issuer.as_deref() != Some(self.issuer.as_str()) {
            return Verdict::NotMine;
        }
        match self.check(token, &peek.header) {
            Ok(identity) => Verdict::Valid(identity),
            Err(why) => {
                tracing::debug!(issuer = %self.issuer, %why, "JWT refused");
                Verdict::Invalid
            }
        }
    }
}

#[cfg(test)]
mod tests;
