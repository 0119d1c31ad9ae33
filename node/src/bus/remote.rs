//! The bus's narrow handle on the other nodes of a cluster ([`Remote`], implemented by
//! `crate::cluster`): who on other nodes holds an address, handing messages to them, and taking
//! over a session from another node (released by it, or whose node is gone: `handover.rs`).
//! Without clustering the bus has no `Remote` and none of this runs.
//!
//! Routing with a `Remote`: the local address book is asked first as always; the remote one
//! (PostgreSQL) is asked too for an address of this domain that no node endpoint or application
//! service serves. Subscribers on every node get a publication; without subscribers anywhere, a
//! local owner is preferred, else the remote owner. A message for remote sessions is handed over
//! by [`Remote::forward`], which returns only once it is durable, after the store writes of the
//! route's local frames are submitted and before those frames are settled.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use rethink_proto::AddressRef;

use super::{Bus, Pending, RouteError, RouteFailure, RuntimeStatus, Session};
use crate::locks::{read, write};
use crate::store::PersistedSession;

/// A session held by another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSession {
    pub session: String,
    pub node: String,
}

/// The holders of one address on other nodes.
#[derive(Debug, Clone, Default)]
pub struct RemoteHolders {
    pub subscribers: Vec<RemoteSession>,
    /// The owner of the address or of the closest address above it.
    pub owner: Option<RemoteSession>,
    /// For an address of another domain: the runtime URL `owner` (that domain's gateway, or
    /// its node's session) was found by (`bus/gateways.rs`).
    pub via: Option<String>,
}

/// One message for one remote session, for the recipient `to` of the routed message.
#[derive(Debug, Clone)]
pub struct RemoteTarget {
    pub to: String,
    pub target: RemoteSession,
    /// For `to` in another domain: the runtime URL of that domain's gateway (or node) session
    /// `target` was looked up by (`bus/gateways.rs`), which holds every address of the domain.
    pub gateway: Option<String>,
}

/// A message handed to other nodes.
#[derive(Debug, Clone, Copy)]
pub struct Forwarded<'a> {
    pub json: &'a Arc<str>,
    /// Its `from`.
    pub from: &'a str,
    /// The session it came from (`None`: made by this node).
    pub sender: Option<&'a str>,
    /// Where it entered the node (`context.transport`).
    pub transport: &'a str,
}

/// The transport (`context.transport`) of the messages a node makes for sessions on other
/// nodes (status notices, refusals on arrival): delivered there without a policy decision, as
/// the node's own notices are on one node.
pub const NODE_NOTICE: &str = "cluster";

/// A message another node queued for a session held here, as the arrival check sees it.
#[derive(Debug, Clone, Copy)]
pub struct Arrival<'a> {
    pub json: &'a str,
    /// The address it was routed for.
    pub recipient: &'a str,
    /// The sending session's runtime URL and user, when it still exists.
    pub sender_runtime: Option<&'a str>,
    pub sender_user: Option<&'a str>,
    pub transport: &'a str,
}

/// A session taken over from another node (released by it, or gone): its persisted image, and
/// a fresh start counter, so that its new `seq`s are above anything the old node can have sent.
#[derive(Debug)]
pub struct Adopted {
    pub session: PersistedSession,
    pub epoch: u64,
    /// Held until the session is restored: meanwhile this node owns its row without holding
    /// it, and must not give the row on to a third node (`crate::cluster::handover`).
    pub arriving: Option<tokio::sync::OwnedMutexGuard<()>>,
}

/// What the bus asks of the other nodes (`crate::cluster::Link`).
pub trait Remote: Send + Sync + std::fmt::Debug + 'static {
    /// The sessions of other nodes that hold `address` (its subscribers, its owner).
    fn lookup<'a>(&'a self, address: &'a str) -> BoxFuture<'a, Result<RemoteHolders, RouteError>>;
    /// Makes `json` durable for each target (in its session's queue), then tells their nodes.
    /// Returns the targets that could not be served.
    /// `sender`: the session the message came from, if any; `from`: its sender address.
    fn forward<'a>(
        &'a self,
        message: Forwarded<'a>,
        targets: Vec<RemoteTarget>,
    ) -> BoxFuture<'a, Vec<RouteFailure>>;
    /// Tells the other nodes that this node's address book grew (committed already), and
    /// returns once they forgot what they kept of it (`crate::cluster`'s lookup cache).
    fn announce(&self) -> BoxFuture<'_, ()>;
    /// Takes over the session whose resume secret hashes to `token_hash` (`Ok(None)`: no such
    /// session): its node releases it first when alive (`crate::cluster::handover`); a node
    /// that does not answer in time is a [`RouteError::Cluster`].
    fn adopt(&self, token_hash: [u8; 32]) -> BoxFuture<'_, Result<Option<Adopted>, RouteError>>;
    /// The runtime URL and identity (JSON) of the session whose resume secret hashes to
    /// `token_hash`, wherever it is held (`Ok(None)`: no such session); nothing is disturbed.
    fn find_by_token(
        &self,
        token_hash: [u8; 32],
    ) -> BoxFuture<'_, Result<Option<(String, String)>, RouteError>>;
    /// The status of those of `runtimes` whose session another node holds, as that node sees
    /// it (a gone node's: `disconnected`, they wait to be resumed elsewhere); a runtime no
    /// session holds is left out.
    fn runtime_status<'a>(
        &'a self,
        runtimes: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<(String, RuntimeStatus)>, RouteError>>;
    /// Forgets the answers kept of earlier lookups (a session arrived or left this node).
    fn forget_lookups(&self);
    /// Moves the messages other nodes queued for `session` (now held here) into its outbox.
    fn drain<'a>(&'a self, session: &'a Arc<Session>) -> BoxFuture<'a, ()>;
    /// Writes the row of a session being opened here, unless a session anywhere holds its
    /// runtime URL already (atomic in the shared database: of two nodes opening one runtime URL
    /// at once, one wins).
    fn claim_runtime<'a>(
        &'a self,
        claim: RuntimeClaim<'a>,
    ) -> BoxFuture<'a, Result<Claimed, RouteError>>;
}

/// A session being opened, for [`Remote::claim_runtime`].
#[derive(Debug, Clone, Copy)]
pub struct RuntimeClaim<'a> {
    pub id: &'a str,
    pub runtime_url: &'a str,
    pub token_hash: &'a [u8; 32],
    pub identity_json: &'a str,
}

/// The outcome of [`Remote::claim_runtime`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claimed {
    /// The session's row is written: the runtime URL is this session's.
    Yes,
    /// A session of another node holds the runtime URL.
    Elsewhere,
    /// A session of this node holds it in the database: one that ended here and whose deletion
    /// the store writer has not committed yet (a live one, the address book refused already).
    Here,
}

impl Bus {
    /// Connects the bus to the other nodes of its cluster (once, at start).
    pub fn set_remote(&self, remote: Arc<dyn Remote>) {
        *write(&self.inner.remote) = Some(remote);
    }

    /// Disconnects the bus from the other nodes (at shutdown).
    pub fn clear_remote(&self) {
        *write(&self.inner.remote) = None;
    }

    pub(super) fn remote(&self) -> Option<Arc<dyn Remote>> {
        read(&self.inner.remote).clone()
    }

    /// The live session `key`, if this node holds it.
    pub fn session(&self, key: &str) -> Option<Arc<Session>> {
        read(&self.inner.sessions).get(key).cloned()
    }

    /// The keys of every session this node holds.
    pub fn session_keys(&self) -> Vec<crate::store::SessionKey> {
        read(&self.inner.sessions).keys().cloned().collect()
    }

    /// Whether other nodes may hold `to`: an address of this domain that neither a node
    /// endpoint nor an application service serves.
    pub(super) fn remote_candidate(&self, to: &str) -> bool {
        self.inner.endpoints.classify(to).is_none()
            && self.claimed_route(to).is_none()
            && AddressRef::parse(to).is_ok_and(|a| a.is_in_domain(&self.inner.domain))
    }

    /// With clustering, writes the row of `session` (being opened) in the shared database,
    /// unless a session anywhere holds its runtime URL: a [`RouteError::Conflict`] then, as
    /// for a local duplicate. A row of this node's is one that ended here, whose deletion is
    /// still in the store writer: committed first, then the claim is tried once more.
    pub(super) async fn claim_remote(
        &self,
        session: &Session,
        identity_json: &str,
    ) -> Result<(), RouteError> {
        let Some(remote) = self.remote() else {
            return Ok(());
        };
        let claim = RuntimeClaim {
            id: session.key(),
            runtime_url: session.runtime_url(),
            token_hash: session.token_hash(),
            identity_json,
        };
        let mut claimed = remote.claim_runtime(claim).await?;
        if claimed == Claimed::Here {
            self.store_barrier().await;
            claimed = remote.claim_runtime(claim).await?;
        }
        match claimed {
            Claimed::Yes => Ok(()),
            Claimed::Elsewhere | Claimed::Here => Err(RouteError::Conflict(format!(
                "runtime URL {} has a session on another node; re-open it with its \
                 runtimeToken",
                session.runtime_url()
            ))),
        }
    }

    /// The remote holders of each recipient of a route from `origin` (`None`: local only). An
    /// address of another domain is held by that domain's gateway on another node, as
    /// `Bus::open_gateways` found it (`elsewhere`); a publication of a domain's node, by the
    /// subscribers to it anywhere.
    pub(super) async fn remote_holders(
        &self,
        recipients: impl Iterator<Item = &str>,
        origin: &super::Origin,
        elsewhere: &super::gateways::Elsewhere,
    ) -> Vec<Option<Result<RemoteHolders, RouteError>>> {
        let Some(remote) = self.remote() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for to in recipients {
            if self.remote_candidate(to) {
                out.push(Some(remote.lookup(to).await));
                continue;
            }
            let foreign = match AddressRef::parse(to) {
                Ok(a) if !a.is_in_domain(&self.inner.domain) => a,
                _ => {
                    out.push(None);
                    continue;
                }
            };
            if self.inner.endpoints.classify(to).is_some() || self.claimed_route(to).is_some() {
                out.push(None);
                continue;
            }
            let domain = super::gateways::remote_domain(foreign.authority());
            out.push(match origin {
                super::Origin::Node { domain: from, .. } if foreign.is_in_domain(from) => {
                    Some(remote.lookup(to).await)
                }
                _ => elsewhere
                    .iter()
                    .find(|(d, _)| d == domain)
                    .map(|(_, found)| {
                        found.clone().map(|found| match found {
                            Some((owner, via)) => RemoteHolders {
                                owner: Some(owner),
                                via: Some(via),
                                ..RemoteHolders::default()
                            },
                            None => RemoteHolders::default(),
                        })
                    }),
            });
        }
        out
    }

    /// Waits until everything submitted is committed when `directory` (a new session, address
    /// or subscription): its runtime hears of it only once it is durable, so it survives a
    /// crash of this node (a resumed runtime still owns what it was given), and other nodes,
    /// which read the address book from the store, see it (and forgot what they kept of it:
    /// [`Remote::announce`]).
    pub(super) async fn directory_barrier(&self, directory: bool) {
        if directory {
            self.store_barrier().await;
            if let Some(remote) = self.remote() {
                remote.announce().await;
            }
        }
    }

    /// Waits until everything submitted is committed (a session ended: its runtime URL is free
    /// on every node once this returns). Nothing is announced: an answer another node kept
    /// that names the ended session is found stale by its next forward.
    pub(super) async fn store_barrier(&self) {
        let (done, committed) = tokio::sync::oneshot::channel();
        self.submit(crate::store::StoreOp::Flush { done }).await;
        // An error means the writer stopped; it has logged why.
        let _ = committed.await;
    }

    /// Hands the route's messages for remote sessions over; their failures join `failures`.
    pub(super) async fn forward_remote(
        &self,
        message: Forwarded<'_>,
        targets: Vec<RemoteTarget>,
        failures: &mut Vec<RouteFailure>,
    ) {
        // A session that arrived here since the lookup was served locally (`handover.rs`).
        let mut targets = targets;
        targets.retain(|t| !self.holds_live(&t.target.session));
        if let (Some(remote), false) = (self.remote(), targets.is_empty()) {
            let via_gateway: Vec<String> = targets
                .iter()
                .filter(|t| t.gateway.is_some())
                .map(|t| t.to.clone())
                .collect();
            for mut f in remote.forward(message, targets).await {
                // A full gateway on another node is its domain's full queue.
                if via_gateway.contains(&f.recipient)
                    && let Ok(a) = AddressRef::parse(&f.recipient)
                {
                    let domain = super::gateways::remote_domain(a.authority());
                    f.error = super::gateways::queue_full(domain, f.error);
                }
                failures.push(f);
            }
        }
    }

    /// The runtime URL and identity of the session of another node whose resume secret is
    /// `token` (to check a `re-open` before its node is asked to release it).
    pub async fn find_elsewhere(
        &self,
        token: &str,
    ) -> Result<Option<(String, crate::auth::Identity)>, RouteError> {
        let Some(remote) = self.remote() else {
            return Ok(None);
        };
        Ok(remote
            .find_by_token(super::hash_token(token))
            .await?
            .map(|(runtime, identity)| {
                let identity = serde_json::from_str(&identity)
                    .unwrap_or_else(|_| crate::auth::Identity::anonymous());
                (runtime, identity)
            }))
    }

    /// The policies again, on the node holding the recipient (the sender's node decided
    /// without knowing the recipient's owner). The sender's rate and allocation count are not
    /// known here: they count as 0.
    pub fn admit_arrival(
        &self,
        arrival: &Arrival<'_>,
        recipient: &Arc<Session>,
    ) -> Result<(), super::Denied> {
        use crate::policy::facts::{Message, Sender, Target};
        let Some(engine) = self.inner.policy.engine() else {
            return Ok(());
        };
        let Ok(env) = rethink_proto::Envelope::parse(arrival.json) else {
            return Err(super::Denied::Policy {
                policies: vec!["(not a message)".into()],
            });
        };
        let sender = Sender {
            address: env.from(),
            runtime: arrival.sender_runtime,
            user: arrival.sender_user,
            transport: arrival.transport,
            rate_per_minute: 0,
            allocations: 0,
        };
        let now = self.inner.policy.clock().now();
        let message = Message::new(env.kind().as_str(), env.json().len(), &sender, now);
        // An address of another domain has no owner here: so the sender's node decided, and
        // so the gateway holding it here decides again.
        let owner = self.node_domain(recipient).is_none().then_some(recipient);
        let decision = engine.decide(&message.query(&Target {
            address: arrival.recipient,
            node_endpoint: false,
            owner_user: owner.and_then(|o| o.identity().subject.as_deref()),
            owner_runtime: owner.map(|o| &**o.runtime_url()),
        }));
        if decision.allowed {
            return Ok(());
        }
        let first = decision
            .policies
            .first()
            .map_or("default-deny", String::as_str);
        self.inner.metrics.policy_denial(first);
        Err(super::Denied::Policy {
            policies: decision.policies,
        })
    }

    /// Forgets a session another node has taken over, without deleting it from the store.
    pub fn forget_taken(&self, session: &Arc<Session>) {
        let (allocations, subscriptions, attachment) = {
            let mut st = crate::locks::lock(&session.state);
            if st.ended {
                return;
            }
            st.ended = true;
            (
                std::mem::take(&mut st.allocations),
                std::mem::take(&mut st.subscriptions),
                st.attachment.take(),
            )
        };
        if let Some(a) = attachment {
            a.cancel.cancel();
            self.inner.metrics.sessions_connected.dec();
        }
        session.wake_waiters();
        self.unregister(session, &allocations, &subscriptions);
        self.inner.metrics.sessions.dec();
        tracing::warn!(session = %session.key(), "session taken over by another node: forgotten here");
    }
}

/// Whether `ops` add to the address book (addresses or subscriptions).
pub(super) fn changes_directory(ops: &[crate::store::StoreOp]) -> bool {
    use crate::store::StoreOp;
    ops.iter().any(|op| {
        matches!(
            op,
            StoreOp::AddAddresses { .. } | StoreOp::AddSubscriptions { .. }
        )
    })
}

/// Adds the remote share of one recipient to `pending`: every remote subscriber when there are
/// subscribers anywhere, else the remote owner when there is no local one. Returns whether
/// remote targets were added.
pub(super) fn share(
    to: &str,
    holders: Option<&RemoteHolders>,
    local_subscribers: bool,
    local_owner: bool,
    pending: &mut Pending,
) -> bool {
    let Some(h) = holders else {
        return false;
    };
    let targets: Vec<&RemoteSession> = if local_subscribers || !h.subscribers.is_empty() {
        h.subscribers.iter().collect()
    } else if local_owner {
        Vec::new()
    } else {
        h.owner.iter().collect()
    };
    let served = !targets.is_empty();
    pending
        .remote
        .extend(targets.into_iter().map(|t| RemoteTarget {
            to: to.to_owned(),
            target: t.clone(),
            gateway: None,
        }));
    served
}
