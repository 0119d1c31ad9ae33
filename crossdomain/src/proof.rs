//! Node authentication: how a node proves its domain to another domain's node.
//!
//! 1. The connecting node (A) asks the receiving node (B) for a challenge (B's
//!    [`Challenges::issue`]: 16 random bytes, `expires_ts` and a MAC of both under B's secret,
//!    in hex: B keeps nothing, so a challenge stays valid across a restart of B, as long as B
//!    keeps its secret).
//! 2. A builds the proof object ([`proof_object`]):
//!    `{"type":"rethink.node_auth","origin":"a.test","destination":"b.test","challenge":"…",
//!    "expires_ts":…}`, signs it with its server key exactly as Matrix signs JSON
//!    (`signatures.a.test.ed25519:<id>`), and presents [`token`] of it (`rethink-node-proof:`
//!    followed by the JSON text) as its session token.
//! 3. B ([`verify`]) checks the destination is itself, the challenge is one it issued and has
//!    not expired, and the signature against the keys A publishes ([`KeyCache`], A resolved
//!    through [`Peers`]). The session is then a node session for domain `origin`.
//!
//! A challenge may be presented more than once until it expires (a re-open of the same
//! session presents it again); it is bound to the destination, and its lifetime is B's choice.

use std::time::Duration;

use sha2::{Digest, Sha256};

use ruma::{CanonicalJsonObject, CanonicalJsonValue};

use crate::error::CrossDomainError;
use crate::fetch::Fetch;
use crate::keys::KeyCache;
use crate::peers::Peers;

/// What a node token starts with.
pub const TOKEN_PREFIX: &str = "rethink-node-proof:";

/// The `type` of a proof object.
pub const PROOF_TYPE: &str = "rethink.node_auth";

/// A challenge a receiving node issued.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Challenge {
    pub challenge: String,
    /// Unix milliseconds.
    pub expires_ts: u64,
    /// The issuing node's clock when it issued the challenge (unix milliseconds), so that the
    /// node answering it can time its renewal on the issuer's clock (`expires_ts - now_ts` is
    /// the challenge's life, whatever the difference between the two clocks). Absent from a
    /// node that does not send it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub now_ts: Option<u64>,
}

/// The challenges a receiving node issues: self-verifying (a MAC under the node's secret), so
/// nothing is kept per challenge and a restart with the same secret still knows them.
#[derive(Debug)]
pub struct Challenges {
    ttl: Duration,
    secret: [u8; 32],
}

/// Bytes of a challenge: random, expiry (big-endian unix ms), MAC.
const RANDOM: usize = 16;
const MAC: usize = 16;
const CHALLENGE_BYTES: usize = RANDOM + 8 + MAC;

impl Challenges {
    /// Challenges valid for `ttl`, authenticated with `secret`.
    pub fn new(ttl: Duration, secret: [u8; 32]) -> Self {
        Self { ttl, secret }
    }

    fn mac(&self, body: &[u8]) -> [u8; MAC] {
        // Keyed SHA-256 over a fixed-length body (no length extension can give another valid
        // body of that length).
        let digest = Sha256::new()
            .chain_update(self.secret)
            .chain_update(body)
            .finalize();
        let mut mac = [0u8; MAC];
        mac.copy_from_slice(&digest[..MAC]);
        mac
    }

    /// A fresh challenge at `now_ms` (unix milliseconds).
    pub fn issue(&self, now_ms: u64) -> Result<Challenge, CrossDomainError> {
        let mut bytes = [0u8; CHALLENGE_BYTES];
        getrandom::fill(&mut bytes[..RANDOM]).map_err(|e| CrossDomainError::Internal {
            what: "a node challenge",
            problem: format!("no randomness: {e}"),
        })?;
        let expires_ts =
            now_ms.saturating_add(u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX));
        bytes[RANDOM..RANDOM + 8].copy_from_slice(&expires_ts.to_be_bytes());
        let mac = self.mac(&bytes[..RANDOM + 8]);
        bytes[RANDOM + 8..].copy_from_slice(&mac);
        let challenge: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Challenge {
            challenge,
            expires_ts,
            now_ts: Some(now_ms),
        })
    }

    /// The expiry of `challenge` if it was issued here and is still valid at `now_ms`.
    fn valid(&self, challenge: &str, now_ms: u64) -> Option<u64> {
        if challenge.len() != CHALLENGE_BYTES * 2 || !challenge.is_ascii() {
            return None;
        }
        let mut bytes = [0u8; CHALLENGE_BYTES];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = u8::from_str_radix(&challenge[2 * i..2 * i + 2], 16).ok()?;
        }
        let mac = self.mac(&bytes[..RANDOM + 8]);
        let differs = mac
            .iter()
            .zip(&bytes[RANDOM + 8..])
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if differs != 0 {
            return None;
        }
        let mut exp = [0u8; 8];
        exp.copy_from_slice(&bytes[RANDOM..RANDOM + 8]);
        Some(u64::from_be_bytes(exp)).filter(|exp| *exp > now_ms)
    }
}

/// The unsigned proof object node `origin` signs to answer `challenge` from `destination`.
pub fn proof_object(origin: &str, destination: &str, challenge: &Challenge) -> CanonicalJsonObject {
    let s = |v: &str| CanonicalJsonValue::String(v.to_owned());
    [
        ("type".to_owned(), s(PROOF_TYPE)),
        ("origin".to_owned(), s(origin)),
        ("destination".to_owned(), s(destination)),
        ("challenge".to_owned(), s(&challenge.challenge)),
        (
            "expires_ts".to_owned(),
            CanonicalJsonValue::Integer(ruma::Int::new_saturating(
                i64::try_from(challenge.expires_ts).unwrap_or(i64::MAX),
            )),
        ),
    ]
    .into_iter()
    .collect()
}

/// The session token carrying a signed proof object.
pub fn token(signed: &CanonicalJsonObject) -> String {
    let json = serde_json::to_string(signed).unwrap_or_default();
    format!("{TOKEN_PREFIX}{json}")
}

/// Whether `token` is a node token (and not a runtime's credential).
pub fn is_node_token(token: &str) -> bool {
    token.starts_with(TOKEN_PREFIX)
}

/// A verified node proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeProof {
    /// The domain the connecting node proved it speaks for.
    pub domain: String,
    /// When the challenge expires (unix milliseconds).
    pub expires_ts: u64,
}

fn refused(why: impl Into<String>) -> CrossDomainError {
    CrossDomainError::Proof(why.into())
}

/// Verifies a node token presented to the node of `my_domain` at `now_ms` (see the module docs).
/// A refused proof is a [`CrossDomainError::Proof`] (401); a proof that could not be checked
/// because the origin's keys could not be fetched or read keeps the error of that fetch
/// ([`CrossDomainError::Fetch`], 502 or 504; `NotJson` or `Malformed` of its key document,
/// 502), so that its node tries again later rather than take its proof for refused.
pub async fn verify(
    token: &str,
    my_domain: &str,
    now_ms: u64,
    challenges: &Challenges,
    peers: &Peers,
    keys: &KeyCache,
    fetch: &dyn Fetch,
) -> Result<NodeProof, CrossDomainError> {
    let json = token
        .strip_prefix(TOKEN_PREFIX)
        .ok_or_else(|| refused("not a node token"))?;
    let object: CanonicalJsonObject =
        serde_json::from_str(json).map_err(|e| refused(format!("not canonical JSON: {e}")))?;
    let field = |name: &str| match object.get(name) {
        Some(CanonicalJsonValue::String(s)) => Ok(s.as_str()),
        _ => Err(refused(format!("no string `{name}`"))),
    };
    if field("type")? != PROOF_TYPE {
        return Err(refused(format!("`type` is not {PROOF_TYPE}")));
    }
    let destination = field("destination")?;
    if !destination.eq_ignore_ascii_case(my_domain) {
        return Err(refused(format!("meant for {destination}, not {my_domain}")));
    }
    let origin = field("origin")?.to_ascii_lowercase();
    if origin.is_empty()
        || origin.eq_ignore_ascii_case(my_domain)
        || !origin
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b':')
    {
        return Err(refused(format!("origin {origin:?} is not another domain")));
    }
    let expires_ts = challenges
        .valid(field("challenge")?, now_ms)
        .ok_or_else(|| refused("unknown or expired challenge"))?;
    let peer = peers.resolve(&origin);
    keys.verify(fetch, &peer, "the node proof", &object)
        .await
        .map_err(|e| match e {
            // The proof is not signed by a key `origin` publishes: refused.
            CrossDomainError::NotSigned { .. }
            | CrossDomainError::UnknownKey { .. }
            | CrossDomainError::BadSignature { .. } => refused(e.to_string()),
            // `origin`'s keys could not be had (its node unreachable, slow, or serving no
            // valid key document), or this node failed: the proof is not checked, not
            // refused, and its `code` is not 401 (retry later).
            other => other,
        })?;
    Ok(NodeProof {
        domain: origin,
        expires_ts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Domain, Table};

    struct World {
        table: Table,
        peers: Peers,
        a: Domain,
        challenges: Challenges,
    }

    fn world() -> World {
        let peers = Peers::new([("a.test".to_owned(), "http://127.0.0.1:5".to_owned())]);
        let w = World {
            table: Table::default(),
            a: Domain::new("a.test", "n1"),
            challenges: Challenges::new(Duration::from_secs(60), [7; 32]),
            peers,
        };
        w.table
            .put(&w.peers.resolve("a.test").keys_url, w.a.key_document());
        w
    }

    impl World {
        fn token(&self, origin: &str, destination: &str, c: &Challenge) -> String {
            let mut o = proof_object(origin, destination, c);
            self.a.sign(&mut o);
            token(&o)
        }

        async fn verify(&self, token: &str, now: u64) -> Result<NodeProof, CrossDomainError> {
            verify(
                token,
                "b.test",
                now,
                &self.challenges,
                &self.peers,
                &KeyCache::new(),
                &self.table,
            )
            .await
        }
    }

    #[tokio::test]
    async fn a_signed_answer_to_our_challenge_proves_the_domain() {
        let w = world();
        let c = w.challenges.issue(1_000).unwrap();
        assert_eq!(c.expires_ts, 61_000);
        let t = w.token("a.test", "b.test", &c);
        assert!(is_node_token(&t));
        let proof = w.verify(&t, 2_000).await.expect("valid");
        assert_eq!(proof.domain, "a.test");
        assert_eq!(proof.expires_ts, 61_000);
        // Again (a re-open), until it expires.
        assert!(w.verify(&t, 60_999).await.is_ok());
        let e = w.verify(&t, 61_000).await.unwrap_err();
        assert!(e.to_string().contains("expired"), "{e}");
        assert_eq!(e.code(), 401);
    }

    #[tokio::test]
    async fn refusals() {
        let w = world();
        let c = w.challenges.issue(1_000).unwrap();
        // For another destination.
        let e = w
            .verify(&w.token("a.test", "c.test", &c), 2_000)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("meant for c.test"), "{e}");
        // A challenge we never issued.
        let made_up = Challenge {
            challenge: "00".repeat(32),
            expires_ts: 99_000,
            now_ts: None,
        };
        let e = w
            .verify(&w.token("a.test", "b.test", &made_up), 2_000)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("unknown or expired"), "{e}");
        // Signed by a.test's key but claiming to be c.test: c.test's keys are not a.test's.
        let e = w
            .verify(&w.token("c.test", "b.test", &c), 2_000)
            .await
            .unwrap_err();
        assert_eq!(e.code(), 401);
        // Changed after signing.
        let t = w
            .token("a.test", "b.test", &c)
            .replace("a.test\"", "a.tesT\"");
        assert!(w.verify(&t, 2_000).await.is_err());
        // Not JSON, not a node token.
        assert!(w.verify("rethink-node-proof:{", 2_000).await.is_err());
        assert!(w.verify("Bearer x", 2_000).await.is_err());
    }

    #[tokio::test]
    async fn a_proof_whose_keys_cannot_be_fetched_is_not_refused() {
        let w = world();
        let c = w.challenges.issue(1_000).unwrap();
        let d = Domain::new("d.test", "n1");
        let mut object = proof_object("d.test", "b.test", &c);
        d.sign(&mut object);
        let t = token(&object);
        // d.test's key document cannot be fetched (the table answers 404): not checked, so
        // not a refusal of the proof (401) but the fetch's failure (502).
        let e = w.verify(&t, 2_000).await.unwrap_err();
        assert!(matches!(e, CrossDomainError::Fetch { .. }), "{e:?}");
        assert_eq!(e.code(), 502);
        // A key document that is not JSON: not checked either.
        let keys_url = w.peers.resolve("d.test").keys_url;
        w.table.put(&keys_url, b"{".to_vec());
        let e = w.verify(&t, 2_000).await.unwrap_err();
        assert!(matches!(e, CrossDomainError::NotJson { .. }), "{e:?}");
        assert_ne!(e.code(), 401);
        // Once they can be had, the same proof is checked: accepted.
        w.table.put(&keys_url, d.key_document());
        assert_eq!(w.verify(&t, 2_000).await.expect("valid").domain, "d.test");
        // Signed with another key than d.test publishes: refused.
        let other = Domain::new("d.test", "n1");
        let mut forged = proof_object("d.test", "b.test", &c);
        other.sign(&mut forged);
        let e = w.verify(&token(&forged), 2_000).await.unwrap_err();
        assert!(matches!(e, CrossDomainError::Proof(_)), "{e:?}");
        assert_eq!(e.code(), 401);
    }

    #[test]
    fn challenges_verify_with_the_same_secret_only() {
        let c = Challenges::new(Duration::from_millis(10), [1; 32]);
        let issued = c.issue(0).unwrap();
        assert_eq!(issued.challenge.len(), 80);
        // Another instance with the same secret (a restart) knows it; another secret does not.
        let again = Challenges::new(Duration::from_millis(10), [1; 32]);
        assert_eq!(again.valid(&issued.challenge, 5), Some(10));
        assert_eq!(again.valid(&issued.challenge, 10), None, "expired");
        let other = Challenges::new(Duration::from_millis(10), [2; 32]);
        assert_eq!(other.valid(&issued.challenge, 5), None);
        // A changed expiry breaks the MAC.
        let mut forged = issued.challenge.clone();
        forged.replace_range(32..48, "00000000ffffffff");
        assert_eq!(again.valid(&forged, 5), None);
    }
}
