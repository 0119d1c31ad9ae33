//! [`Link`]: the bus's [`Remote`], over the shared PostgreSQL database and NATS.
//!
//! - `lookup`: the address book of the other nodes, read from the store's tables, or the
//!   answer kept from an earlier read (`book.rs`).
//! - `forward`: one transaction (shared with the other routes' forwards of the moment:
//!   `forwarder.rs`) stores the message in `cluster_inbox` for each target session
//!   (holding the sessions' rows with `FOR KEY SHARE`, so that a takeover, which updates `node`
//!   under `FOR UPDATE`, waits for it and then sees the row), then one NATS message per holder
//!   node names the sessions to look at, published by a task of its own
//!   ([`Link::run_notifier`]). NATS may lose that message (a node restarting, or the notifier's
//!   queue full while NATS is down): the holder's heartbeat also looks for queued messages
//!   (`membership.rs`). The statement also checks that each target session
//!   still holds its recipient; a stale target (the answer was older than a release or a
//!   session's end) is looked up again, once.
//! - `drain` (`drain.rs`): on the holder, one transaction moves the queued messages of the
//!   sessions a notice names into their outboxes.
//! - `adopt` (`adopt.rs`) and `claim_runtime` (the session row, written at open under the
//!   unique index on `sessions.runtime_url`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::forwarder::{Job, Verdict};
use super::metrics::ClusterMetrics;
use crate::bus::outbox::OutboxFull;
use crate::bus::remote::{
    Adopted, Arrival, Claimed, Forwarded, Remote, RemoteHolders, RemoteSession, RemoteTarget,
    RuntimeClaim,
};
use crate::bus::{Denied, RouteError, RouteFailure, RuntimeStatus, Session, owner_candidates};

/// The subject node `node` listens on.
pub fn subject(node: &str) -> String {
    format!("rethink.node.{node}")
}

/// The most notices the notifier publishes before it has them flushed.
const NOTIFIER_BURST: usize = 64;

/// A notice for another node: its subject and payload.
pub(super) type Outgoing = (String, Vec<u8>);

/// This node's end of the cluster.
#[derive(Debug)]
pub struct Link {
    pub(super) node: Arc<str>,
    pub(super) pool: PgPool,
    pub(super) nats: async_nats::Client,
    pub(super) metrics: ClusterMetrics,
    pub(super) membership_timeout: Duration,
    /// `session.resume_window`: how long the sessions of a gone node wait to be re-opened.
    pub(super) resume_window: Duration,
    /// The most messages queued for one session (`session.outbox_max_messages`).
    pub(super) queue_max: i64,
    /// One drain at a time on this node: two drains of one session must not interleave.
    pub(super) draining: tokio::sync::Mutex<()>,
    /// Held from an adoption's row taken to its session restored (`handover.rs`).
    pub(super) arriving: Arc<tokio::sync::Mutex<()>>,
    /// `cluster.test_hold_arrivals` (tests only): notified by each hand-over request, awaited
    /// by each adoption between its row taken and its session restored.
    pub(super) hold_arrivals: Option<tokio::sync::Notify>,
    /// `cluster.test_release_delay_ms` (tests only): how long a release waits before it gives
    /// the row.
    pub(super) release_delay: Duration,
    /// The sessions (by resume-secret hash) this node asked a live holder for and gave up on,
    /// with when: the holder may have released them just after (`handover.rs`).
    pub(super) gave_up: std::sync::Mutex<Vec<([u8; 32], std::time::Instant)>>,
    /// The bus of this node, for the policy check on arrival (set by `Cluster::start`).
    pub(super) bus: std::sync::OnceLock<crate::bus::Bus>,
    /// The answers of `lookup` (`book.rs`).
    pub(super) cache: Arc<super::book::LookupCache>,
    /// To the task writing the forwards (`forwarder.rs`), started by `Cluster::start`.
    pub(super) forwards: tokio::sync::mpsc::Sender<Job>,
    /// The task's end of `forwards`, until `Cluster::start` takes it.
    pub(super) forward_jobs: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<Job>>>,
    /// To the task publishing the notices for other nodes (`run_notifier`), in order: subject
    /// and payload.
    pub(super) notices: mpsc::Sender<Outgoing>,
    /// The task's end of `notices`, until `Cluster::start` takes it.
    pub(super) notice_queue: std::sync::Mutex<Option<mpsc::Receiver<Outgoing>>>,
    /// Notices dropped since the notifier last published (logged once per run of drops).
    pub(super) notices_dropped: AtomicU64,
}

pub(super) fn db_down(e: &sqlx::Error) -> RouteError {
    tracing::warn!(error = %e, "cluster: the shared database failed");
    RouteError::Cluster("the shared database is unreachable; retry".into())
}

impl Link {
    /// The policies on arrival; `Some(why)` when refused.
    pub(super) fn bus_policy(
        &self,
        session: &Arc<Session>,
        arrival: &Arrival<'_>,
    ) -> Option<Denied> {
        let bus = self.bus.get()?;
        bus.admit_arrival(arrival, session).err()
    }

    /// The holders of `address` on other nodes: the cache's answer, else the database's
    /// (kept, unless the address book grew meanwhile; see `book.rs`).
    async fn lookup_inner(&self, address: &str) -> Result<RemoteHolders, RouteError> {
        if let Some(holders) = self.cache.get(address) {
            self.metrics.lookups.get_or_create(&"cache".into()).inc();
            return Ok(holders);
        }
        let generation = self.cache.generation();
        let holders = self.lookup_db(address).await?;
        self.metrics.lookups.get_or_create(&"database".into()).inc();
        if let Some(generation) = generation {
            self.cache.insert(generation, address, &holders);
        }
        Ok(holders)
    }

    /// The holders of `address` on other nodes, as the database has them.
    async fn lookup_db(&self, address: &str) -> Result<RemoteHolders, RouteError> {
        let candidates: Vec<&str> = owner_candidates(address).collect();
        let rows: Vec<(bool, String, String, i32)> = sqlx::query_as(
            "SELECT true, s.id, s.node, 0 FROM session_subscriptions AS ss \
             JOIN sessions AS s ON s.id = ss.session WHERE ss.address = $1 AND s.node <> $2 \
             UNION ALL \
             SELECT false, s.id, s.node, length(sa.address) FROM session_addresses AS sa \
             JOIN sessions AS s ON s.id = sa.session \
             WHERE sa.address = ANY($3) AND s.node <> $2 \
             UNION ALL \
             SELECT false, s.id, s.node, length(s.runtime_url) FROM sessions AS s \
             WHERE s.runtime_url = ANY($3) AND s.node <> $2",
        )
        .bind(address)
        .bind(&*self.node)
        .bind(&candidates)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_down(&e))?;
        let mut holders = RemoteHolders::default();
        let mut closest = -1;
        for (subscriber, session, node, len) in rows {
            let held = RemoteSession { session, node };
            if subscriber {
                if !holders.subscribers.contains(&held) {
                    holders.subscribers.push(held);
                }
            } else if len > closest {
                closest = len;
                holders.owner = Some(held);
            }
        }
        Ok(holders)
    }

    /// Queues `message` for each target and tells their nodes; a target whose session holds
    /// its recipient no more (a stale answer of the cache, or the book changed since the
    /// lookup) is looked up again once (`retry`), else it is not found.
    fn forward_inner<'a>(
        &'a self,
        message: Forwarded<'a>,
        targets: Vec<RemoteTarget>,
        retry: bool,
    ) -> BoxFuture<'a, Vec<RouteFailure>> {
        Box::pin(async move {
            let (mut failures, stale) = self.forward_once(message, &targets).await;
            if stale.is_empty() {
                return failures;
            }
            self.metrics.stale_targets.inc_by(stale.len() as u64);
            if !retry {
                failures.extend(stale.into_iter().map(|i| {
                    let to = targets[i].to.clone();
                    RouteFailure {
                        recipient: to.clone(),
                        error: RouteError::NotFound(to),
                    }
                }));
                return failures;
            }
            let mut again = Vec::new();
            for i in &stale {
                let to = &targets[*i].to;
                if again.iter().any(|t: &RemoteTarget| &t.to == to) {
                    continue;
                }
                // Another domain's address: its gateway's runtime URL is looked up again.
                let gateway = targets[*i].gateway.clone();
                let key = gateway.as_deref().unwrap_or(to);
                self.cache.forget(key);
                let fresh = match self.lookup_db(key).await {
                    Ok(fresh) => fresh,
                    Err(error) => {
                        failures.push(RouteFailure {
                            recipient: to.clone(),
                            error,
                        });
                        continue;
                    }
                };
                let tried =
                    |s: &RemoteSession| targets.iter().any(|t| &t.to == to && t.target == *s);
                let holders: Vec<&RemoteSession> = if fresh.subscribers.is_empty() {
                    fresh.owner.iter().collect()
                } else {
                    fresh.subscribers.iter().collect()
                };
                let fresh: Vec<RemoteTarget> = holders
                    .into_iter()
                    .filter(|s| !tried(s))
                    .map(|s| RemoteTarget {
                        to: to.clone(),
                        target: s.clone(),
                        gateway: gateway.clone(),
                    })
                    .collect();
                let served_before = targets
                    .iter()
                    .enumerate()
                    .any(|(j, t)| &t.to == to && !stale.contains(&j));
                if fresh.is_empty() && !served_before {
                    failures.push(RouteFailure {
                        recipient: to.clone(),
                        error: RouteError::NotFound(to.clone()),
                    });
                }
                again.extend(fresh);
            }
            if !again.is_empty() {
                failures.extend(self.forward_inner(message, again, false).await);
            }
            failures
        })
    }

    /// One try of [`Link::forward_inner`], written with the other routes' forwards of the
    /// moment (`forwarder.rs`): the failures, and the indexes of the stale targets.
    async fn forward_once(
        &self,
        message: Forwarded<'_>,
        targets: &[RemoteTarget],
    ) -> (Vec<RouteFailure>, Vec<usize>) {
        let (done, verdicts) = tokio::sync::oneshot::channel();
        let job = Job {
            json: Arc::clone(message.json),
            from: message.from.to_owned(),
            sender: message.sender.map(str::to_owned),
            transport: message.transport.to_owned(),
            targets: targets
                .iter()
                .map(|t| (t.target.session.clone(), t.to.clone(), t.gateway.clone()))
                .collect(),
            done,
        };
        let verdicts = match self.forwards.send(job).await {
            Ok(()) => verdicts.await.ok(),
            Err(_) => None,
        };
        let Some(verdicts) = verdicts else {
            let error = RouteError::Cluster("this node is leaving the cluster; retry".into());
            let failures = targets
                .iter()
                .map(|t| RouteFailure {
                    recipient: t.to.clone(),
                    error: error.clone(),
                })
                .collect();
            return (failures, Vec::new());
        };
        let mut failures = Vec::new();
        let mut stale = Vec::new();
        for (i, (t, verdict)) in targets.iter().zip(verdicts).enumerate() {
            let error = match verdict {
                Verdict::Queued => continue,
                Verdict::Stale => {
                    stale.push(i);
                    continue;
                }
                Verdict::Full => RouteError::OutboxFull {
                    address: t.to.clone(),
                    full: OutboxFull {
                        messages: usize::try_from(self.queue_max).unwrap_or(usize::MAX),
                        bytes: 0,
                    },
                },
                Verdict::Failed(error) => error,
            };
            failures.push(RouteFailure {
                recipient: t.to.clone(),
                error,
            });
        }
        (failures, stale)
    }

    /// Tells `node` to look at the queues of `sessions` (the message is durable already: a
    /// notice lost only delays it until that node's next heartbeat).
    pub(super) fn notify<S: AsRef<str>>(&self, node: &str, sessions: &[S]) {
        let sessions: Vec<&str> = sessions.iter().map(AsRef::as_ref).collect();
        self.send_notice(node, sessions.join("\n").into_bytes());
    }

    /// Hands one notice to the task publishing them in order (`run_notifier`); never waits: with
    /// that task's queue full (NATS down or slow) the notice is dropped, and the holder's
    /// heartbeat finds the rows.
    fn send_notice(&self, node: &str, payload: Vec<u8>) {
        if self.notices.try_send((subject(node), payload)).is_err()
            && self.notices_dropped.fetch_add(1, Ordering::Relaxed) == 0
        {
            tracing::warn!(%node, "cluster: NATS notifications are being dropped (their queue is full: NATS down or slow); the holders' heartbeats find the messages");
        }
    }

    /// Publishes the notices handed over on `notices`, in order, until `stop`. A burst's flush
    /// is awaited by a task of its own (timed: `nats_round_trip`), so the next notices do not
    /// wait for it.
    pub(super) async fn run_notifier(
        self: Arc<Self>,
        mut notices: mpsc::Receiver<Outgoing>,
        stop: CancellationToken,
    ) {
        let mut burst = Vec::with_capacity(NOTIFIER_BURST);
        loop {
            let received = tokio::select! {
                _ = stop.cancelled() => return,
                n = notices.recv_many(&mut burst, NOTIFIER_BURST) => n,
            };
            if received == 0 {
                return;
            }
            let started = Instant::now();
            for (subject, payload) in burst.drain(..) {
                if let Err(e) = self.nats.publish(subject, payload.into()).await {
                    tracing::warn!(error = %e, "cluster: NATS notification not sent; the holder's heartbeat finds the messages");
                }
            }
            let link = Arc::clone(&self);
            tokio::spawn(async move {
                match link.nats.flush().await {
                    Ok(()) => link
                        .metrics
                        .nats_round_trip
                        .observe(started.elapsed().as_secs_f64()),
                    Err(e) => tracing::warn!(error = %e, "cluster: NATS notifications not flushed"),
                }
            });
            let dropped = self.notices_dropped.swap(0, Ordering::Relaxed);
            if dropped > 0 {
                tracing::info!(dropped, "cluster: NATS notifications flow again");
            }
        }
    }
}

impl Remote for Link {
    fn lookup<'a>(&'a self, address: &'a str) -> BoxFuture<'a, Result<RemoteHolders, RouteError>> {
        Box::pin(self.lookup_inner(address))
    }

    fn forward<'a>(
        &'a self,
        message: Forwarded<'a>,
        targets: Vec<RemoteTarget>,
    ) -> BoxFuture<'a, Vec<RouteFailure>> {
        self.forward_inner(message, targets, true)
    }

    fn announce(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.announce_inner())
    }

    fn adopt(&self, token_hash: [u8; 32]) -> BoxFuture<'_, Result<Option<Adopted>, RouteError>> {
        Box::pin(async move {
            let adopted = self.adopt_inner(token_hash).await?;
            if adopted.is_some() {
                self.metrics.adopted.inc();
            }
            Ok(adopted)
        })
    }

    fn find_by_token(
        &self,
        token_hash: [u8; 32],
    ) -> BoxFuture<'_, Result<Option<(String, String)>, RouteError>> {
        Box::pin(async move {
            sqlx::query_as("SELECT runtime_url, identity_json FROM sessions WHERE token_hash = $1")
                .bind(&token_hash[..])
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| db_down(&e))
        })
    }

    fn runtime_status<'a>(
        &'a self,
        runtimes: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<(String, RuntimeStatus)>, RouteError>> {
        Box::pin(self.runtime_status_inner(runtimes))
    }

    fn forget_lookups(&self) {
        self.cache.forget_all();
    }

    fn drain<'a>(&'a self, session: &'a Arc<Session>) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Err(e) = self.drain_sessions(std::slice::from_ref(session)).await {
                // The messages stay queued; the next notification or heartbeat retries.
                tracing::warn!(error = %e, session = %session.key(), "cluster: moving queued messages failed");
            }
        })
    }

    fn claim_runtime<'a>(
        &'a self,
        claim: RuntimeClaim<'a>,
    ) -> BoxFuture<'a, Result<Claimed, RouteError>> {
        Box::pin(async move {
            // The row the store writer will write again (an upsert by id), written now so that
            // the unique index on `runtime_url` decides between two nodes.
            // The second SELECT sees the statement's snapshot: the row that won, when it was
            // committed before (else nothing, and it is another node's that won meanwhile).
            let holder: Option<(bool, Option<String>)> = sqlx::query_as(
                "WITH ins AS (INSERT INTO sessions \
                 (id, runtime_url, token_hash, identity_json, node) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (runtime_url) DO NOTHING RETURNING node) \
                 SELECT true, node FROM ins UNION ALL \
                 SELECT false, node FROM sessions WHERE runtime_url = $2 \
                 AND NOT EXISTS (SELECT 1 FROM ins)",
            )
            .bind(claim.id)
            .bind(claim.runtime_url)
            .bind(&claim.token_hash[..])
            .bind(claim.identity_json)
            .bind(&*self.node)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| db_down(&e))?;
            Ok(match holder {
                Some((true, _)) => Claimed::Yes,
                Some((false, node)) if node.as_deref() == Some(&*self.node) => Claimed::Here,
                Some(_) | None => Claimed::Elsewhere,
            })
        })
    }
}
