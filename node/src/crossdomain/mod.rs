//! Routing across domains (issue 13), the node's side of crate `rethink-crossdomain`:
//!
//! - [`CrossDomain`]: the cheap-clone handle on the peers map, the other domains' keys and
//!   stubs (resolved, fetched, verified and cached by the crate, over [`HttpFetch`]), the
//!   node-authentication challenges this node issues (`GET /_rethink/node/challenge`, see
//!   `http.rs`), the check of a node token presented at `open` (`ws::session`), and the proof
//!   this node presents to another (a challenge fetched from it, signed with our server key);
//! - `gateway.rs`: for each other domain a message is sent to, that domain's own `default` stub
//!   run in the stub host, fed from the domain's gateway session (`bus/gateways.rs`), opening
//!   a session on the other node with our proof; what it hands back enters the bus as
//!   [`crate::bus::Origin::Node`]. A domain whose stub is refused (hash, signature, fetch) has
//!   its messages answered 502 (504 for a timeout) naming the domain, and a log line says why;
//! - `held.rs` and `tap.rs`: how far the stub holds what the gateway hands it (its records'
//!   `g`, else what the other node confirms on the stub's socket), and the other node's
//!   refusals of our proof (a fresh one is fetched, `gateway.rs`);
//! - `waiting.rs`: the messages for a domain whose node is down before its stub could start.

mod gateway;
mod held;
mod http;
mod tap;
mod waiting;

pub use gateway::{GATEWAY_INSTANCES, start_gateways};
pub use http::routes;

use std::sync::Arc;

use rethink_crossdomain::proof::{self, Challenge, Challenges};
use rethink_crossdomain::{
    CrossDomainError, Fetch, FetchFailure, FetchFuture, KeyCache, PeerUrls, Peers, StubCache,
    VerifiedStub,
};
use ruma::CanonicalJsonObject;

use crate::auth::fetch::{FETCH_TIMEOUT, FetchError, JwksUrl};
use crate::auth::{AuthError, Identity};
use crate::bus::Bus;
use crate::clock::Clock;
use crate::config::{Config, CrossDomainConfig};
use crate::rooms::Rooms;

/// Our proof of this node's domain for another node (its `rethink-node-proof:` token), valid
/// until the challenge it answers expires (`cross_domain.proof_ttl_secs` of that node).
#[derive(Debug, Clone)]
pub(crate) struct Proof {
    pub(crate) token: String,
    /// When the other node stops accepting it, on our monotonic clock: timed on the other
    /// node's clock (the challenge's `now_ts`, when it sends one) from when we asked for the
    /// challenge, so that a difference between the two clocks does not matter.
    pub(crate) valid_until: tokio::time::Instant,
}

/// What the secret node challenges are authenticated with is derived for (from the server
/// key, `rooms::signing`): every node sharing the key (a cluster's, on one database) checks
/// the challenges any of them issued, and they survive a restart.
const CHALLENGE_SECRET_PURPOSE: &str = "node challenges";

/// [`Fetch`] over the node's minimal HTTP(S) client (`auth::fetch`: `https://`, or `http://` on
/// loopback; 10 s; 1 MiB).
#[derive(Debug, Default)]
pub struct HttpFetch;

impl Fetch for HttpFetch {
    fn get<'a>(&'a self, url: &'a str) -> FetchFuture<'a> {
        Box::pin(async move {
            let url = JwksUrl::parse(url).map_err(|e| FetchFailure::Failed(e.into()))?;
            crate::auth::fetch::get(&url).await.map_err(|e| match e {
                FetchError::Timeout => FetchFailure::Timeout(FETCH_TIMEOUT),
                e if is_down(&e) => FetchFailure::Unreachable(Box::new(e)),
                other => FetchFailure::Failed(Box::new(other)),
            })
        })
    }
}

/// Whether a failed fetch says the other node is down or unreachable for now: no listener
/// (refused), a lost connection, no route to its host, or a gateway in front of it answering
/// 502, 503 or 504. A name that does not resolve is not (that domain may not exist).
fn is_down(e: &FetchError) -> bool {
    use std::io::ErrorKind as K;
    match e {
        FetchError::Connect(io) => matches!(
            io.kind(),
            K::ConnectionRefused
                | K::ConnectionReset
                | K::ConnectionAborted
                | K::NotConnected
                | K::HostUnreachable
                | K::NetworkUnreachable
                | K::NetworkDown
                | K::TimedOut
        ),
        FetchError::Http(h) => h.is_incomplete_message() || h.is_closed(),
        FetchError::Status(s) => matches!(s.as_u16(), 502..=504),
        _ => false,
    }
}

/// How long `challenge` lives on the clock of the node that issued it (`expires_ts - now_ts`),
/// our clock (`ours_ms`) standing in for its when it does not say its time.
fn life_of(challenge: &Challenge, ours_ms: u64) -> std::time::Duration {
    let theirs = challenge.now_ts.unwrap_or(ours_ms);
    std::time::Duration::from_millis(challenge.expires_ts.saturating_sub(theirs))
}

#[derive(Debug)]
struct Inner {
    domain: String,
    config: CrossDomainConfig,
    peers: Peers,
    keys: KeyCache,
    stubs: StubCache,
    challenges: Challenges,
    fetch: HttpFetch,
    rooms: Rooms,
    clock: Clock,
}

/// The node's cross-domain handle.
#[derive(Debug, Clone)]
pub struct CrossDomain {
    inner: Arc<Inner>,
}

impl CrossDomain {
    /// From the configuration; `rooms` holds the server key proofs are signed with.
    pub fn new(config: &Config, rooms: Rooms) -> Self {
        let cd = &config.cross_domain;
        Self {
            inner: Arc::new(Inner {
                domain: config.domain.clone(),
                peers: Peers::new(cd.peers.iter().cloned()),
                keys: KeyCache::new(),
                stubs: StubCache::new(Some(cd.cache_dir.clone())),
                challenges: Challenges::new(
                    cd.proof_ttl,
                    rooms.server_key().derived_secret(CHALLENGE_SECRET_PURPOSE),
                ),
                fetch: HttpFetch,
                config: cd.clone(),
                rooms,
                clock: config.clock.clone(),
            }),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.inner.clock.unix_ms()).unwrap_or(0)
    }

    /// The settings.
    pub fn config(&self) -> &CrossDomainConfig {
        &self.inner.config
    }

    /// Where `domain`'s node is.
    pub fn resolve(&self, domain: &str) -> PeerUrls {
        self.inner.peers.resolve(domain)
    }

    /// A challenge for a node that wants to prove its domain to us.
    pub fn issue_challenge(&self) -> Result<Challenge, CrossDomainError> {
        self.inner.challenges.issue(self.now_ms())
    }

    /// The identity a node token proves: `node://<domain>`, bound to that domain's node runtime
    /// URL here. A refused proof ([`CrossDomainError::Proof`]) is logged with its reason and is a
    /// plain 401 for the connection; a token that could not be checked (the domain's keys not
    /// fetched, a failure of ours: any other error) is [`AuthError::Unchecked`], keeping the
    /// error, which `ws::codec` answers with its code (5xx: retry later).
    pub async fn verify_node_token(&self, bus: &Bus, token: &str) -> Result<Identity, AuthError> {
        let i = &self.inner;
        if !i.config.enabled {
            tracing::warn!("a node token was refused: cross_domain.enabled is off");
            return Err(AuthError::InvalidToken);
        }
        // A node whose clock is behind ours renews its proof late: its challenge may have
        // expired here by up to `proof_leeway`.
        let leeway = u64::try_from(i.config.proof_leeway.as_millis()).unwrap_or(u64::MAX);
        match proof::verify(
            token,
            &i.domain,
            self.now_ms().saturating_sub(leeway),
            &i.challenges,
            &i.peers,
            &i.keys,
            &i.fetch,
        )
        .await
        {
            Ok(p) => {
                let runtime = bus.node_runtime_url(&p.domain);
                Ok(Bus::node_identity(&p.domain, runtime))
            }
            // A refused proof; else it could not be checked (the other domain's keys not
            // fetched in time or at all, or a failure of ours): its node is told to retry
            // (5xx), not that its proof is refused, which would have it fetch a new one.
            Err(e @ CrossDomainError::Proof(_)) => {
                tracing::warn!(error = %e, "a node token was refused");
                Err(AuthError::InvalidToken)
            }
            Err(e) => {
                tracing::warn!(error = %e, code = e.code(), "a node token could not be checked");
                Err(AuthError::Unchecked(e))
            }
        }
    }

    /// How long from now until `proof` expires (zero once it has).
    pub(crate) fn valid_for(proof: &Proof) -> std::time::Duration {
        proof
            .valid_until
            .saturating_duration_since(tokio::time::Instant::now())
    }

    /// Our proof for `peer`'s node: a challenge fetched from it, signed with our server key,
    /// as a node token.
    pub(crate) async fn proof_for(&self, peer: &PeerUrls) -> Result<Proof, CrossDomainError> {
        let url = format!("{}{}", peer.base_url, http::CHALLENGE_PATH);
        let asked = tokio::time::Instant::now();
        let body = self
            .inner
            .fetch
            .get(&url)
            .await
            .map_err(|source| CrossDomainError::Fetch {
                domain: peer.domain.clone(),
                url: url.clone(),
                source,
            })?;
        let challenge: Challenge =
            serde_json::from_slice(&body).map_err(|source| CrossDomainError::NotJson {
                domain: peer.domain.clone(),
                what: "the node challenge",
                source,
            })?;
        let mut object: CanonicalJsonObject =
            proof::proof_object(&self.inner.domain, &peer.domain, &challenge);
        self.inner
            .rooms
            .server_key()
            .sign_json(&mut object)
            .map_err(|e| CrossDomainError::Internal {
                what: "signing our node proof",
                problem: e.to_string(),
            })?;
        // Its life on the other node's clock, from when we asked (it issued the challenge
        // after that: the proof is thought to expire a little early, never late). A node that
        // does not say its time: our clock stands in for its.
        let ours = self.now_ms();
        let life = life_of(&challenge, ours);
        let skew_ms = i128::from(challenge.now_ts.unwrap_or(ours)) - i128::from(ours);
        if challenge.now_ts.is_some()
            && skew_ms.unsigned_abs() > self.inner.config.proof_leeway.as_millis() / 2
        {
            tracing::warn!(
                domain = %peer.domain,
                their_clock_ahead_ms = i64::try_from(skew_ms).unwrap_or(i64::MAX),
                "the clock of another domain's node differs from ours: our proofs for it are timed on its clock"
            );
        }
        Ok(Proof {
            token: proof::token(&object),
            valid_until: asked + life,
        })
    }

    /// `domain`'s stub, verified (fetched again only when its version or hash changed).
    pub(crate) async fn load_stub(
        &self,
        domain: &str,
    ) -> Result<Arc<VerifiedStub>, CrossDomainError> {
        let i = &self.inner;
        i.stubs
            .load(&i.fetch, &i.keys, &i.peers.resolve(domain))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_lives_on_the_issuers_clock_whatever_ours_says() {
        let c = |now_ts| Challenge {
            challenge: String::new(),
            expires_ts: 1_000_000 + 60_000,
            now_ts,
        };
        let minute = std::time::Duration::from_secs(60);
        // Its clock 10 min ahead of ours, or 10 min behind: a minute all the same.
        assert_eq!(life_of(&c(Some(1_000_000)), 1_000_000 - 600_000), minute);
        assert_eq!(life_of(&c(Some(1_000_000)), 1_000_000 + 600_000), minute);
        // A node that does not say its time shares ours.
        assert_eq!(life_of(&c(None), 1_000_000 + 30_000), minute / 2);
        assert_eq!(
            life_of(&c(None), 1_000_000 + 600_000),
            std::time::Duration::ZERO
        );
    }
}
