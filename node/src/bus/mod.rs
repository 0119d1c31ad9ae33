//! The message bus: sessions, the address book, routing and the node's own services.
//!
//! [`Bus`] is a cheap-clone handle. A message enters through [`Bus::authorize`] (the enforcement
//! point, which returns a [`Permit`]) and [`Bus::route`], which looks up each recipient (node
//! endpoint, subscribers, or owner of the address or of an address above it) and appends the
//! message to the recipients' outboxes.
//!
//! Durability: outbox writes go to the store writer, and `route` returns only once every frame
//! it put in an outbox is *settled*: written to the recipient's socket by its connection's
//! writer, or committed to the store, whichever comes first. A frame for a recipient without a
//! connection is committed at once (an urgent batch); one for a connected recipient is usually
//! written to its socket within microseconds, and if that socket is full (the recipient stopped
//! reading) it is settled by the next group commit (`store.commit_delay_ms`). So an accepted
//! message survives even a killed process: it is on the recipient's socket or in the store.
//!
//! A node session's message numbered with a `cseq` ([`Bus::route_handled`], `handled.rs`) is
//! the exception: its frames are written only once committed, together with that `cseq`.
//!
//! The node's own answers to a session count against that session's outbox bounds like any
//! frame: [`Bus::answer`] waits for room (see `ws::session` for how the connection keeps
//! reading acknowledgements meanwhile).

mod addresses;
pub mod bridge;
mod claims;
mod error;
mod gateways;
mod handled;
mod handover;
pub mod identity;
mod matrix_actions;
pub mod outbox;
mod permit;
mod rate;
mod registry_owner;
pub mod remote;
mod restore;
mod services;
pub mod session;
mod settling;
mod status;
mod stub_port;
#[cfg(test)]
mod testing;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use rethink_proto::{AddressRef, Envelope};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

pub use addresses::{AddressBook, candidates as owner_candidates};
pub use claims::Claim;
pub use error::RouteError;
pub use gateways::remote_domain;
pub use handled::Committed;
pub use handover::Released;
pub use matrix_actions::{MatrixPermit, MatrixRequest};
pub use permit::{Denied, Origin, Permit};
pub use rethink_proto::{Endpoint, Endpoints, SESSION};
pub use session::{PushError, Session};
pub use settling::Settling;
pub use status::RuntimeStatus;

use crate::auth::Identity;
use crate::clock::Clock;
use crate::config::{AllocationConfig, SessionConfig};
use crate::locks::{lock, read, write};
use crate::metrics::Metrics;
use crate::policy::PolicyPoint;
use crate::store::{SessionKey, Settle, StoreOp, StoreWriter};
use bridge::BridgeEvent;
use outbox::Outbox;

/// Seq numbers of a session restored at start begin at `epoch << EPOCH_SHIFT`, above anything the
/// previous run can have sent, even frames it sent but had not yet committed.
const EPOCH_SHIFT: u32 = 36;

/// Store writes and durability waits collected while routing, applied after locks are released.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    pub(crate) ops: Vec<StoreOp>,
    /// One per frame delivered: fired when it is on the recipient's socket or committed.
    settled: Vec<oneshot::Receiver<()>>,
    /// For the Matrix bridge, handed over after the commit.
    pub(crate) bridge: Vec<BridgeEvent>,
    /// For sessions on other nodes (`remote.rs`), handed over after the commit.
    remote: Vec<remote::RemoteTarget>,
    /// A node session's message numbered with a `cseq` (`handled.rs`): its frames are held
    /// until they are committed with that `cseq`.
    handled: Option<handled::Handled>,
    /// The status of runtimes held by other nodes, for a `subscribe` to their status
    /// (`status.rs`), asked before the route.
    statuses: status::RemoteStatuses,
}

/// One recipient that was not served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteFailure {
    pub recipient: String,
    pub error: RouteError,
}

/// The outcome of routing one message: answers from node services and per-recipient failures.
#[derive(Debug, Default)]
pub struct RouteReport {
    pub replies: Vec<Envelope>,
    pub failures: Vec<RouteFailure>,
}

/// What the bus needs to know of the configuration.
#[derive(Debug, Clone)]
pub struct BusConfig {
    pub domain: String,
    pub session: SessionConfig,
    pub allocation: AllocationConfig,
    /// This run's start counter (see [`crate::store::SessionStore::next_epoch`]).
    pub epoch: u64,
    /// The node's time (resume windows).
    pub clock: Clock,
    /// In a cluster, this node's id (`cluster.node_id`): each node runs its own instance of
    /// every stub, and each instance has a session of its own (`stub_port.rs`).
    pub node_id: Option<String>,
}

#[derive(Debug)]
struct Inner {
    domain: String,
    /// [`BusConfig::node_id`].
    node_id: Option<String>,
    endpoints: Endpoints,
    book: AddressBook,
    sessions: std::sync::RwLock<HashMap<SessionKey, Arc<Session>>>,
    by_token: std::sync::RwLock<HashMap<[u8; 32], Arc<Session>>>,
    store: StoreWriter,
    metrics: Arc<Metrics>,
    policy: Arc<PolicyPoint>,
    session_cfg: SessionConfig,
    alloc_cfg: AllocationConfig,
    epoch: u64,
    clock: Clock,
    next_connection: AtomicU64,
    /// To the Matrix bridge, if there is one: creations of, subscriptions to and updates of data
    /// objects are sent there after they are routed.
    bridge: Option<tokio::sync::mpsc::Sender<BridgeEvent>>,
    matrix_rates: matrix_actions::MatrixRates,
    /// Routes to other domains (`gateways.rs`).
    gateways: gateways::Gateways,
    /// Ids of runtime status messages (`status.rs`).
    status_ids: AtomicU64,
    /// The runtimes whose status is under way to the other nodes (`status.rs`).
    status_owed: status::OwedStatuses,
    /// Addresses claimed by application services (`claims.rs`).
    claims: claims::Claims,
    /// The other nodes of the cluster, if any (`remote.rs`).
    remote: std::sync::RwLock<Option<Arc<dyn remote::Remote>>>,
    /// With clustering, held (shared) by each route from its lookups to its forwards, and
    /// (exclusively) while a session arrives or leaves in a hand-over (`handover.rs`).
    route_gate: tokio::sync::RwLock<()>,
}

/// The message bus handle.
#[derive(Debug, Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn new_token() -> String {
    let mut bytes = [0u8; 32];
    // The OS random source failing is unrecoverable for a server that issues secrets.
    if let Err(e) = getrandom::fill(&mut bytes) {
        panic!("the OS random number generator failed: {e}");
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Bus {
    pub fn new(
        config: BusConfig,
        store: StoreWriter,
        metrics: Arc<Metrics>,
        policy: Arc<PolicyPoint>,
        bridge: Option<tokio::sync::mpsc::Sender<BridgeEvent>>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                endpoints: Endpoints::new(&config.domain),
                domain: config.domain,
                node_id: config.node_id,
                book: AddressBook::default(),
                sessions: Default::default(),
                by_token: Default::default(),
                store,
                metrics,
                policy,
                session_cfg: config.session,
                alloc_cfg: config.allocation,
                epoch: config.epoch,
                clock: config.clock,
                next_connection: AtomicU64::new(1),
                bridge,
                matrix_rates: Default::default(),
                gateways: Default::default(),
                status_ids: AtomicU64::new(1),
                status_owed: Default::default(),
                claims: Default::default(),
                remote: Default::default(),
                route_gate: tokio::sync::RwLock::new(()),
            }),
        }
    }

    /// This node's domain.
    pub fn domain(&self) -> &str {
        &self.inner.domain
    }

    /// The policy point.
    pub fn policy(&self) -> &Arc<PolicyPoint> {
        &self.inner.policy
    }

    /// A fresh connection identifier.
    pub fn next_connection_id(&self) -> u64 {
        self.inner.next_connection.fetch_add(1, Ordering::Relaxed)
    }

    fn outbox_for(&self, next_seq: u64) -> Outbox {
        let c = &self.inner.session_cfg;
        Outbox::new(next_seq, c.outbox_max_messages, c.outbox_max_bytes)
    }

    fn register(&self, session: &Arc<Session>) {
        write(&self.inner.sessions).insert(Arc::clone(session.key()), Arc::clone(session));
        write(&self.inner.by_token).insert(*session.token_hash(), Arc::clone(session));
        self.inner.metrics.sessions.inc();
        self.register_gateway(session);
    }

    /// Opens a new session for `runtime_url`. Returns it with its resume secret.
    pub async fn open(
        &self,
        runtime_url: &str,
        identity: Identity,
    ) -> Result<(Arc<Session>, String), RouteError> {
        let addr = AddressRef::parse(runtime_url).map_err(|source| RouteError::BadAddress {
            what: "runtime URL",
            source,
        })?;
        if !matches!(addr.scheme(), "hyperty-runtime" | "runtime") || addr.path().len() < 2 {
            return Err(RouteError::BadRequest(
                "the runtime URL must be hyperty-runtime://<domain>/<id>".into(),
            ));
        }
        if addr.authority() != self.inner.domain {
            return Err(RouteError::Forbidden(format!(
                "runtime URL {runtime_url} is not in domain {}",
                self.inner.domain
            )));
        }
        let token = new_token();
        let key: SessionKey = Arc::from(uuid::Uuid::new_v4().to_string());
        let identity_json = serde_json::to_string(&identity).unwrap_or_else(|_| "{}".into());
        let session = Arc::new(Session::new(
            Arc::clone(&key),
            Arc::from(runtime_url),
            hash_token(&token),
            identity,
            self.outbox_for(1),
            &self.inner.session_cfg,
            self.inner.clock.now(),
        ));
        if !self
            .inner
            .book
            .claim(Arc::clone(session.runtime_url()), &session)
        {
            return Err(RouteError::Conflict(format!(
                "runtime URL {runtime_url} has a session already; re-open it with its runtimeToken"
            )));
        }
        if let Err(e) = self.claim_remote(&session, &identity_json).await {
            self.inner.book.release(session.runtime_url(), &session);
            return Err(e);
        }
        self.register(&session);
        self.submit(StoreOp::CreateSession {
            id: key,
            runtime_url: runtime_url.to_owned(),
            token_hash: *session.token_hash(),
            identity_json,
        })
        .await;
        self.directory_barrier(true).await;
        Ok((session, token))
    }

    /// The live session whose resume secret is `token`.
    pub fn find_by_token(&self, token: &str) -> Option<Arc<Session>> {
        read(&self.inner.by_token).get(&hash_token(token)).cloned()
    }

    /// Takes `session` out of this node's memory: its runtime URL, `allocations` and
    /// `subscriptions` out of the address book, the session out of the session and token maps.
    /// What else ending it means (the store, metrics, notices) is the caller's.
    fn unregister(
        &self,
        session: &Arc<Session>,
        allocations: &[session::Allocation],
        subscriptions: &[Arc<str>],
    ) {
        let book = &self.inner.book;
        book.release(session.runtime_url(), session);
        for a in allocations {
            book.release(&a.address, session);
        }
        for s in subscriptions {
            book.unsubscribe(s, session);
        }
        write(&self.inner.sessions).remove(session.key());
        write(&self.inner.by_token).remove(session.token_hash());
        self.forget_gateway(session);
        session.left().cancel();
    }

    /// Ends a session (close, or expiry): releases its addresses and subscriptions and forgets
    /// it. Messages for its addresses get 404 from now on.
    pub async fn end_session(&self, session: &Arc<Session>) {
        let (allocations, subscriptions, held, attachment) = {
            let mut st = lock(&session.state);
            if st.ended {
                return;
            }
            st.ended = true;
            (
                std::mem::take(&mut st.allocations),
                std::mem::take(&mut st.subscriptions),
                st.outbox.len(),
                st.attachment.take(),
            )
        };
        if let Some(a) = attachment {
            a.cancel.cancel();
        }
        session.wake_waiters();
        self.unregister(session, &allocations, &subscriptions);
        self.inner.metrics.sessions.dec();
        self.inner.metrics.outbox_messages.dec_by(held as i64);
        self.submit(StoreOp::DeleteSession {
            id: Arc::clone(session.key()),
        })
        .await;
        // With clustering: the runtime URL is free on every node once this returns.
        self.store_barrier().await;
        self.publish_status(session, RuntimeStatus::Expired).await;
    }

    /// Ends every session whose resume window has passed without a connection.
    pub async fn reap_expired(&self) -> usize {
        let window = self.inner.session_cfg.resume_window;
        let now = self.inner.clock.now();
        let expired: Vec<Arc<Session>> = read(&self.inner.sessions)
            .values()
            .filter(|s| {
                lock(&s.state)
                    .disconnected_at
                    .is_some_and(|t| now.duration_since(t) >= window)
            })
            .cloned()
            .collect();
        for s in &expired {
            tracing::debug!(session = %s.key(), runtime = %s.runtime_url(), "session expired");
            self.end_session(s).await;
        }
        expired.len()
    }

    /// Attaches connection `id` to `session`, replaying after `last_seq` when resuming.
    pub async fn attach(
        &self,
        session: &Arc<Session>,
        id: u64,
        last_seq: Option<u64>,
    ) -> tokio_util::sync::CancellationToken {
        let (cancel, released) = session.attach(id, last_seq);
        self.inner.metrics.sessions_connected.inc();
        if let Some(seq) = last_seq {
            self.inner.metrics.outbox_messages.dec_by(released as i64);
            self.submit(StoreOp::Ack {
                session: Arc::clone(session.key()),
                seq,
            })
            .await;
        }
        cancel
    }

    /// Detaches connection `id`; the session waits in its resume window.
    pub fn detach(&self, session: &Arc<Session>, id: u64) {
        if session.detach(id, self.inner.clock.now()) {
            self.inner.metrics.sessions_connected.dec();
        }
    }

    /// Cumulative acknowledgement from the runtime.
    pub async fn ack(&self, session: &Arc<Session>, seq: u64) {
        let released = session.ack(seq);
        if released > 0 {
            self.inner.metrics.outbox_messages.dec_by(released as i64);
            self.submit(StoreOp::Ack {
                session: Arc::clone(session.key()),
                seq,
            })
            .await;
        }
    }

    /// Puts the node's answer to `session`'s own request in its outbox, waiting while the
    /// outbox is full (until the runtime acknowledges frames). `Gone` if the session ended.
    pub async fn answer(&self, session: &Arc<Session>, reply: &Envelope) -> Result<(), PushError> {
        let json = reply.shared_json();
        let seq = session.push_answer(Arc::clone(json)).await?;
        self.answered(session, seq, json).await;
        Ok(())
    }

    /// Puts the node's answer in `session`'s outbox if it fits now (a notice before the
    /// connection closes, when nothing would free room any more).
    pub async fn try_answer(
        &self,
        session: &Arc<Session>,
        reply: &Envelope,
    ) -> Result<(), PushError> {
        let json = reply.shared_json();
        let (seq, _) = session.push(Arc::clone(json), None)?;
        self.answered(session, seq, json).await;
        Ok(())
    }

    async fn answered(&self, session: &Arc<Session>, seq: u64, json: &Arc<str>) {
        self.inner.metrics.routed.inc();
        self.inner.metrics.outbox_messages.inc();
        self.submit(StoreOp::Enqueue {
            session: Arc::clone(session.key()),
            seq,
            json: Arc::clone(json),
            durable: None,
            urgent: false,
        })
        .await;
    }

    /// Puts a message in a recipient's outbox; the route waits for it to settle.
    fn push(
        &self,
        session: &Arc<Session>,
        json: &Arc<str>,
        pending: &mut Pending,
    ) -> Result<(), PushError> {
        let (settle, settled) = Settle::new();
        let (seq, connected) = match &mut pending.handled {
            Some(handled) => {
                let seq = session.push_held(Arc::clone(json), settle.clone())?;
                handled.held.push((Arc::clone(session), seq));
                // Only the commit settles it: do not wait for the delay.
                (seq, false)
            }
            None => session.push(Arc::clone(json), Some(settle.clone()))?,
        };
        pending.settled.push(settled);
        pending.ops.push(StoreOp::Enqueue {
            session: Arc::clone(session.key()),
            seq,
            json: Arc::clone(json),
            durable: Some(settle),
            // Without a connection only the commit can settle it: do not wait for the delay.
            urgent: !connected,
        });
        self.inner.metrics.routed.inc();
        self.inner.metrics.outbox_messages.inc();
        Ok(())
    }

    fn deliver(
        &self,
        session: &Arc<Session>,
        address: &str,
        json: &Arc<str>,
        pending: &mut Pending,
    ) -> Result<(), RouteError> {
        self.push(session, json, pending)
            .or_else(|e| match e {
                // Handed to another node since it was looked up: through the cluster.
                PushError::Gone if lock(&session.state).handed_over => {
                    pending.remote.push(remote::RemoteTarget {
                        to: address.to_owned(),
                        target: remote::RemoteSession {
                            session: session.key().to_string(),
                            node: String::new(),
                        },
                        gateway: self
                            .node_domain(session)
                            .map(|_| session.runtime_url().to_string()),
                    });
                    Ok(())
                }
                e => Err(e),
            })
            .map_err(|e| match e {
                PushError::Gone => RouteError::NotFound(address.to_owned()),
                PushError::Full(full) => RouteError::OutboxFull {
                    address: address.to_owned(),
                    full,
                },
            })
    }

    async fn submit(&self, op: StoreOp) {
        if let Err(e) = self.inner.store.submit(op).await {
            tracing::error!(error = %e, "store write lost: the writer has stopped");
        }
    }

    async fn commit(&self, pending: Pending) {
        let directory = remote::changes_directory(&pending.ops);
        let settling = self.settling(pending, None).await;
        self.directory_barrier(directory).await;
        settling.wait().await;
    }

    /// Routes a permitted message to every recipient, and returns once its frames are settled.
    pub async fn route(&self, permit: Permit<'_>) -> RouteReport {
        let (report, settling) = self.route_unsettled(permit).await;
        settling.wait().await;
        report
    }

    /// Routes a permitted message to every recipient: its frames are in their outboxes, in
    /// order, and their store writes submitted; what is left (the frames settling, then the
    /// bridge's events) is returned (see [`Settling`]).
    pub async fn route_unsettled(&self, permit: Permit<'_>) -> (RouteReport, Settling) {
        self.route_pending(permit, Pending::default()).await
    }

    /// [`Bus::route_unsettled`] with `pending` started by the caller (`handled.rs`).
    async fn route_pending(
        &self,
        mut permit: Permit<'_>,
        mut pending: Pending,
    ) -> (RouteReport, Settling) {
        let started = Instant::now();
        let (envelope, origin) = (permit.envelope, permit.origin);
        let mut report = RouteReport::default();
        let elsewhere = self.open_gateways(envelope, origin).await;
        // Lookups, local pushes and forwards see one side of a hand-over (`handover.rs`).
        let _gate = match self.remote() {
            Some(_) => Some(self.inner.route_gate.read().await),
            None => None,
        };
        let holders = self.remote_holders(envelope.to(), origin, &elsewhere).await;
        pending.statuses = self.remote_statuses(envelope).await;
        for (i, to) in envelope.to().enumerate() {
            if let Some(pos) = permit.refused.iter().position(|(r, _)| *r == i) {
                report.failures.push(RouteFailure {
                    recipient: to.to_owned(),
                    error: RouteError::Denied(permit.refused.swap_remove(pos).1),
                });
                continue;
            }
            let owner = permit.take_owner(i);
            let remote = match holders.get(i) {
                Some(Some(Err(error))) => {
                    report.failures.push(RouteFailure {
                        recipient: to.to_owned(),
                        error: error.clone(),
                    });
                    continue;
                }
                Some(Some(Ok(holders))) => Some(holders),
                _ => None,
            };
            match self.route_to(envelope, to, origin, owner, remote, &mut pending) {
                Ok(Some(reply)) => report.replies.push(reply),
                Ok(None) => {}
                Err(error) => report.failures.push(RouteFailure {
                    recipient: to.to_owned(),
                    error,
                }),
            }
        }
        let remote = std::mem::take(&mut pending.remote);
        let directory = remote::changes_directory(&pending.ops);
        let settling = self.settling(pending, Some(started)).await;
        self.directory_barrier(directory).await;
        let forwarded = remote::Forwarded {
            json: envelope.shared_json(),
            from: envelope.from(),
            sender: origin.session().map(|s| &**s.key()),
            transport: origin.transport(),
        };
        self.forward_remote(forwarded, remote, &mut report.failures)
            .await;
        (report, settling)
    }

    /// Routes to one recipient; `owner` is its address's owner when the decision looked it up.
    fn route_to(
        &self,
        env: &Envelope,
        to: &str,
        origin: &Origin,
        owner: Option<Option<Arc<Session>>>,
        remote: Option<&remote::RemoteHolders>,
        pending: &mut Pending,
    ) -> Result<Option<Envelope>, RouteError> {
        if let Some(ep) = self.inner.endpoints.classify(to) {
            return self.serve(ep, env, to, origin, pending);
        }
        let sender = origin.session();
        if let Some(service) = self.claimed_route(to) {
            let json = env.shared_json();
            return self.deliver(&service, to, json, pending).map(|()| None);
        }
        let addr = AddressRef::parse(to).map_err(|source| RouteError::BadAddress {
            what: "recipient",
            source,
        })?;
        if !addr.is_in_domain(&self.inner.domain) {
            return self.route_remote(env, to, &addr, origin, remote, pending);
        }
        if self.inner.bridge.is_some()
            && let Some(event) = bridge::creation_of(env, to, &self.inner.domain, |a| {
                sender.is_some_and(|s| {
                    self.inner
                        .book
                        .owner_of(a)
                        .is_some_and(|o| Arc::ptr_eq(&o, s))
                })
            })
            && !pending.bridge.contains(&event)
        {
            pending.bridge.push(event);
        }
        let bridged = self.inner.bridge.is_some()
            && match bridge::update_of(env, to, &self.inner.domain)
                .map_err(RouteError::Unbridgeable)?
            {
                // Published from the object's room (a Matrix client's event): it is in the
                // room already, and must not come back as a second event.
                Some(_) if matches!(origin, Origin::Matrix(_)) => true,
                Some(event) => {
                    pending.bridge.push(event);
                    true
                }
                None => false,
            };
        let json = env.shared_json();
        let published = self.inner.book.with_subscribers(to, |subs| {
            let mut outcome = Ok(());
            for s in subs {
                if sender.is_some_and(|o| Arc::ptr_eq(o, s)) {
                    continue;
                }
                if let Err(e) = self.deliver(s, to, json, pending) {
                    outcome = Err(e);
                }
            }
            outcome
        });
        let remote_subscribers = remote.is_some_and(|r| !r.subscribers.is_empty());
        let local_owner = match published.is_some() || remote_subscribers {
            true => None,
            false => owner.unwrap_or_else(|| self.inner.book.owner_of(to)),
        };
        let remote_served = remote::share(
            to,
            remote,
            published.is_some(),
            local_owner.is_some(),
            pending,
        );
        if let Some(outcome) = published {
            return outcome.map(|()| None);
        }
        match local_owner {
            Some(owner) => self.deliver(&owner, to, json, pending).map(|()| None),
            // A data object's feed with nobody on the bus still reaches its room.
            None if remote_served || bridged => Ok(None),
            None => Err(RouteError::NotFound(to.to_owned())),
        }
    }
}
