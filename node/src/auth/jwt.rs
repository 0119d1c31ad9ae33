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
                JwksLocation::Url(JwksUrl::parse(&url).map_err(|e| err("jwks_url", e))?)
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
mod tests {
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::{Value, json};

    use super::super::test_keys::{AUD, ISS, KEYS, claims, now, set_json};
    use super::*;

    fn issuer(algorithms: &[Algorithm]) -> JwtIssuer {
        JwtIssuer {
            issuer: ISS.into(),
            audience: vec!["other-app".into(), AUD.into()],
            algorithms: algorithms.to_vec(),
            jwks: JwksLocation::File(PathBuf::from("unused.json")),
            idp: "idp.example.org".into(),
            leeway: Duration::from_secs(30),
            jwks_refresh: Duration::from_secs(3600),
        }
    }

    fn source_with(algorithms: &[Algorithm], jwks: &[Value]) -> JwtSource {
        let set = KeySet::parse(&set_json(jwks)).unwrap();
        let config = issuer(algorithms);
        let cache = Arc::new(KeyCache::new(ISS, config.jwks.clone(), set));
        JwtSource::new(&config, cache)
    }

    /// An issuer pinning all three algorithms, with one key of each type.
    fn source() -> JwtSource {
        let k = &*KEYS;
        source_with(
            &SUPPORTED_ALGORITHMS,
            &[k.rsa.jwk("rsa-1"), k.ec.jwk("ec-1"), k.ed.jwk("ed-1")],
        )
    }

    fn valid(verdict: Verdict) -> Identity {
        match verdict {
            Verdict::Valid(id) => id,
            other => panic!("expected a valid token, got {other:?}"),
        }
    }

    #[test]
    fn valid_rs256_es256_and_eddsa_tokens_prove_their_subject_until_exp() {
        let k = &*KEYS;
        let s = source();
        let exp = now() + 600;
        for (key, kid) in [(&k.rsa, "rsa-1"), (&k.ec, "ec-1"), (&k.ed, "ed-1")] {
            let id = valid(s.verify(&key.sign(Some(kid), &claims("alice", exp))));
            assert_eq!(id.subject.as_deref(), Some("user://idp.example.org/alice"));
            assert_eq!(id.runtime, None);
            assert_eq!(id.expires_at, Some(exp), "{kid}");
        }
    }

    #[test]
    fn subjects_are_escaped_into_one_path_segment() {
        let id = valid(
            source().verify(
                &KEYS
                    .ec
                    .sign(Some("ec-1"), &claims("auth0|a b/c%", now() + 60)),
            ),
        );
        assert_eq!(
            id.subject.as_deref(),
            Some("user://idp.example.org/auth0|a%20b%2Fc%25")
        );
    }

    #[test]
    fn wrong_audience_is_invalid() {
        let mut c = claims("alice", now() + 600);
        c["aud"] = "someone-else".into();
        assert_eq!(
            source().verify(&KEYS.rsa.sign(Some("rsa-1"), &c)),
            Verdict::Invalid
        );
        // An array containing one accepted audience is fine.
        c["aud"] = json!(["x", AUD]);
        valid(source().verify(&KEYS.rsa.sign(Some("rsa-1"), &c)));
        // No aud at all is refused.
        c.as_object_mut().unwrap().remove("aud");
        assert_eq!(
            source().verify(&KEYS.rsa.sign(Some("rsa-1"), &c)),
            Verdict::Invalid
        );
    }

    #[test]
    fn expiry_is_checked_with_the_leeway() {
        let s = source();
        let expired = KEYS.ec.sign(Some("ec-1"), &claims("alice", now() - 120));
        assert_eq!(s.verify(&expired), Verdict::Invalid);
        let within = now() - 10;
        let id = valid(s.verify(&KEYS.ec.sign(Some("ec-1"), &claims("alice", within))));
        assert_eq!(id.expires_at, Some(within));
        let mut no_exp = claims("alice", 0);
        no_exp.as_object_mut().unwrap().remove("exp");
        assert_eq!(
            s.verify(&KEYS.ec.sign(Some("ec-1"), &no_exp)),
            Verdict::Invalid
        );
    }

    #[test]
    fn not_before_in_the_future_is_invalid() {
        let s = source();
        let mut c = claims("alice", now() + 600);
        c["nbf"] = (now() + 300).into();
        assert_eq!(s.verify(&KEYS.ed.sign(Some("ed-1"), &c)), Verdict::Invalid);
        c["nbf"] = (now() + 5).into();
        valid(s.verify(&KEYS.ed.sign(Some("ed-1"), &c)));
    }

    #[test]
    fn hs256_signed_with_the_rsa_public_key_is_invalid() {
        let k = &*KEYS;
        let s = source_with(&[Algorithm::RS256], &[k.rsa.jwk("rsa-1")]);
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("rsa-1".into());
        let token = jsonwebtoken::encode(
            &header,
            &claims("mallory", now() + 600),
            &EncodingKey::from_secret(&k.rsa.public_der),
        )
        .unwrap();
        assert_eq!(s.verify(&token), Verdict::Invalid);
        // Also with the JWK's `n` as the secret, and without kid.
        let n = k.rsa.public["n"].as_str().unwrap().as_bytes().to_vec();
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims("mallory", now() + 600),
            &EncodingKey::from_secret(&n),
        )
        .unwrap();
        assert_eq!(s.verify(&token), Verdict::Invalid);
    }

    #[test]
    fn an_algorithm_not_pinned_is_invalid_even_with_a_good_signature() {
        let k = &*KEYS;
        let s = source_with(&[Algorithm::RS256], &[k.rsa.jwk("rsa-1"), k.ec.jwk("ec-1")]);
        let token = k.ec.sign(Some("ec-1"), &claims("alice", now() + 600));
        assert_eq!(s.verify(&token), Verdict::Invalid);
    }

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    #[test]
    fn alg_none_is_invalid() {
        let body = b64(&claims("mallory", now() + 600));
        for header in [
            json!({"alg": "none", "typ": "JWT"}),
            json!({"alg": "None"}),
            json!({"typ": "JWT"}),
        ] {
            let token = format!("{}.{body}.", b64(&header));
            assert_eq!(source().verify(&token), Verdict::Invalid, "{header}");
        }
    }

    #[test]
    fn a_signature_by_another_key_with_the_same_kid_is_invalid() {
        let k = &*KEYS;
        let forged = k.rsa2.sign(Some("rsa-1"), &claims("mallory", now() + 600));
        assert_eq!(source().verify(&forged), Verdict::Invalid);
        // A tampered payload under a good signature, too.
        let good = k.rsa.sign(Some("rsa-1"), &claims("alice", now() + 600));
        let parts: Vec<&str> = good.split('.').collect();
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            b64(&claims("mallory", now() + 600)),
            parts[2]
        );
        assert_eq!(source().verify(&tampered), Verdict::Invalid);
    }

    #[test]
    fn other_issuers_and_garbage_are_not_mine() {
        let s = source();
        let mut c = claims("alice", now() + 600);
        c["iss"] = "https://other.example.org".into();
        assert_eq!(
            s.verify(&KEYS.rsa.sign(Some("rsa-1"), &c)),
            Verdict::NotMine
        );
        c.as_object_mut().unwrap().remove("iss");
        assert_eq!(
            s.verify(&KEYS.rsa.sign(Some("rsa-1"), &c)),
            Verdict::NotMine
        );
        for garbage in [
            "",
            "secret-token-for-alice",
            "a.b.c",
            "eyJ.x.y",
            "a.b.c.d",
            "..",
            &format!("{}.{}", b64(&json!({"alg": "RS256"})), b64(&claims("a", 1))),
            &format!(
                "{}.{}.sig.extra",
                b64(&json!({"alg": "RS256"})),
                b64(&claims("a", 1))
            ),
            &format!(
                "{}.{}.s",
                b64(&json!(["not", "an", "object"])),
                b64(&claims("a", 1))
            ),
        ] {
            assert_eq!(s.verify(garbage), Verdict::NotMine, "{garbage}");
        }
    }

    #[test]
    fn the_kid_selects_among_several_keys() {
        let k = &*KEYS;
        let s = source_with(&[Algorithm::RS256], &[k.rsa2.jwk("old"), k.rsa.jwk("new")]);
        valid(s.verify(&k.rsa.sign(Some("new"), &claims("a", now() + 60))));
        valid(s.verify(&k.rsa2.sign(Some("old"), &claims("a", now() + 60))));
        assert_eq!(
            s.verify(&k.rsa.sign(Some("old"), &claims("a", now() + 60))),
            Verdict::Invalid
        );
        // Without kid, two RSA keys are ambiguous: refused.
        assert_eq!(
            s.verify(&k.rsa.sign(None, &claims("a", now() + 60))),
            Verdict::Invalid
        );
        // Without kid and exactly one key of the type: that key.
        let one = source_with(&[Algorithm::RS256], &[k.rsa.jwk("only"), k.ec.jwk("ec")]);
        valid(one.verify(&k.rsa.sign(None, &claims("a", now() + 60))));
        // An unknown kid is refused (no runtime here, so nothing is fetched).
        assert_eq!(
            s.verify(&k.rsa.sign(Some("nope"), &claims("a", now() + 60))),
            Verdict::Invalid
        );
    }

    #[test]
    fn critical_headers_are_refused() {
        let k = &*KEYS;
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("rsa-1".into());
        header.crit = Some(vec!["exp".into()]);
        let token =
            jsonwebtoken::encode(&header, &claims("a", now() + 60), &k.rsa.encoding).unwrap();
        assert_eq!(source().verify(&token), Verdict::Invalid);
    }

    fn raw(file: &std::path::Path) -> RawJwtIssuer {
        RawJwtIssuer {
            issuer: ISS.into(),
            audience: vec![AUD.into()],
            algorithms: vec!["RS256".into(), "EdDSA".into()],
            jwks_file: Some(file.to_path_buf()),
            jwks_url: None,
            idp: None,
            leeway_secs: default_leeway_secs(),
            jwks_refresh_secs: default_jwks_refresh_secs(),
        }
    }

    #[test]
    fn issuer_settings_are_validated_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("jwks.json");
        std::fs::write(&file, set_json(&[KEYS.ed.jwk("ed-1")])).unwrap();
        let ok = raw(&file).validate(0).unwrap();
        assert_eq!(ok.idp, "idp.example.org");
        assert_eq!(ok.algorithms, vec![Algorithm::RS256, Algorithm::EdDSA]);
        assert_eq!(ok.leeway, Duration::from_secs(30));
        assert_eq!(ok.jwks_refresh, Duration::from_secs(3600));

        let cases: Vec<(RawJwtIssuer, &str)> = vec![
            (
                RawJwtIssuer {
                    algorithms: vec!["HS256".into()],
                    ..raw(&file)
                },
                "setting `auth.jwt[2].algorithms`: \"HS256\" is not allowed",
            ),
            (
                RawJwtIssuer {
                    algorithms: vec!["none".into()],
                    ..raw(&file)
                },
                "setting `auth.jwt[2].algorithms`",
            ),
            (
                RawJwtIssuer {
                    algorithms: vec![],
                    ..raw(&file)
                },
                "setting `auth.jwt[2].algorithms`: required",
            ),
            (
                RawJwtIssuer {
                    audience: vec![],
                    ..raw(&file)
                },
                "setting `auth.jwt[2].audience`",
            ),
            (
                RawJwtIssuer {
                    issuer: String::new(),
                    ..raw(&file)
                },
                "setting `auth.jwt[2].issuer`",
            ),
            (
                RawJwtIssuer {
                    jwks_url: Some("https://idp.example.org/k".into()),
                    ..raw(&file)
                },
                "setting `auth.jwt[2].jwks_file`: give either",
            ),
            (
                RawJwtIssuer {
                    jwks_file: None,
                    ..raw(&file)
                },
                "setting `auth.jwt[2].jwks_url`: required",
            ),
            (
                RawJwtIssuer {
                    jwks_file: None,
                    jwks_url: Some("http://idp.example.org/k".into()),
                    ..raw(&file)
                },
                "setting `auth.jwt[2].jwks_url`: \"http://idp.example.org/k\": must be https://",
            ),
            (
                RawJwtIssuer {
                    jwks_file: Some(dir.path().join("missing.json")),
                    ..raw(&file)
                },
                "setting `auth.jwt[2].jwks_file`: cannot read",
            ),
            (
                RawJwtIssuer {
                    issuer: "not-a-url".into(),
                    ..raw(&file)
                },
                "setting `auth.jwt[2].idp`: required",
            ),
            (
                RawJwtIssuer {
                    idp: Some("bad idp/x".into()),
                    ..raw(&file)
                },
                "setting `auth.jwt[2].idp`",
            ),
            (
                RawJwtIssuer {
                    jwks_refresh_secs: 0,
                    ..raw(&file)
                },
                "setting `auth.jwt[2].jwks_refresh_secs`",
            ),
        ];
        for (r, want) in cases {
            let e = r.validate(2).expect_err(want).to_string();
            assert!(e.starts_with(want), "{e} / {want}");
        }
        let bad_set = dir.path().join("bad.json");
        std::fs::write(&bad_set, b"{\"keys\": []}").unwrap();
        let e = RawJwtIssuer {
            jwks_file: Some(bad_set),
            ..raw(&file)
        }
        .validate(0)
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("auth.jwt[0].jwks_file") && e.contains("no usable"),
            "{e}"
        );
        let e = validate_issuers(vec![raw(&file), raw(&file)])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("auth.jwt[1].issuer") && e.contains("twice"),
            "{e}"
        );
    }

    #[test]
    fn issuers_are_read_from_the_configuration_file() {
        use figment::providers::{Format, Serialized, Toml};
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("jwks.json");
        std::fs::write(&file, set_json(&[KEYS.ec.jwk("ec-1")])).unwrap();
        let load = |algorithms: &str| {
            let toml = format!(
                "[auth]\nallow_anonymous = false\n[[auth.jwt]]\nissuer = \"{ISS}\"\n\
                 audience = [\"{AUD}\"]\nalgorithms = {algorithms}\njwks_file = {:?}\n",
                file.display().to_string()
            );
            figment::Figment::from(Serialized::defaults(crate::RawConfig::default()))
                .merge(Toml::string(&toml))
                .extract::<crate::RawConfig>()
                .unwrap()
                .validate()
        };
        let config = load("[\"ES256\"]").unwrap();
        let jwt = &config.auth.jwt[0];
        assert_eq!(jwt.issuer, ISS);
        assert_eq!(jwt.idp, "idp.example.org");
        assert_eq!(jwt.leeway, Duration::from_secs(30));
        assert_eq!(jwt.jwks, JwksLocation::File(file.clone()));
        let err = load("[\"ES256\", \"HS256\"]").unwrap_err().to_string();
        assert!(
            err.starts_with("setting `auth.jwt[0].algorithms`: \"HS256\" is not allowed"),
            "{err}"
        );
    }
}
