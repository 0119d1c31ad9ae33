//! Runtime status events: when a runtime's session opens or resumes (`live`), loses its
//! connection (`disconnected`) or ends (`expired`: its resume window passed, or it closed), the
//! node publishes an `update` from `domain://msg-node.<domain>` to `<runtime URL>/status`, with
//! `body: {resource: <runtime URL>, attribute: "status", value}`. Only the subscribers of that
//! address get it (never the runtime itself), on every node of a cluster (through the cluster's
//! queues, as any publication); without subscribers nothing is built. A session handed to
//! another node (`handover.rs`) with its connection attached is `disconnected` here before it
//! is `live` there. The domain
//! registry connector subscribes there for the runtimes holding registrations.
//!
//! A subscription does not miss what happened before it: the subscription manager's answer to
//! a `subscribe` naming `<runtime URL>/status` carries the runtime's current status in
//! `body.value.status` (`{<runtime URL>: "live" | "disconnected" | "expired"}`, [`Bus::current_status`]):
//! `live` while a connection is attached, `disconnected` while the session waits in its resume
//! window (after a node restart, until the runtime resumes), `expired` without a session. In a
//! cluster, a runtime whose session another node holds gets that node's view, asked before the
//! route ([`Bus::remote_statuses`], `crate::cluster`'s `status.rs`): one whose holder is gone or
//! does not answer is `disconnected`; when the cluster's database cannot be read, the runtimes
//! are left out of the answer rather than called `expired`.
//!
//! In a cluster, a notice's *remote part* (the lookup of `<runtime URL>/status`'s subscribers
//! on the other nodes and the forward to them) can fail because the cluster is unavailable (the
//! shared database unreachable: a [`RouteError::Cluster`]); the subscribers here were served,
//! and the remote part is tried again after a pause (0.5 s, doubled up to 10 s) until it gets
//! through or the node stops (leaves the cluster, `Bus::clear_remote`). A target that is gone
//! or full is not tried again. The caller never waits for the retries: they run in a task.
//!
//! Order and bounds: each runtime has at most one remote part under way on a node, its *turn* (an
//! entry of the bus's `status_owed` and the call or task holding its [`Turn`]). Every call delivers
//! its status here first, before anything is awaited, under `status_owed`'s lock as it takes the
//! turn or finds one under way: the subscribers here get a runtime's statuses in the order the
//! calls took that lock, never held back by a remote part waiting for the database. (The
//! subscribers on the other nodes are looked up after that: one handed here from another node in
//! between misses the status, one handed away gets it twice.) A status published while the
//! runtime's turn is under way is only recorded as the runtime's latest status for the other nodes;
//! the turn's holder sends it after its own, never before. A turn that failed is one task per
//! runtime, sending the runtime's *latest* status when it tries again: the statuses superseded
//! during an outage are not sent (a subscriber may miss a `disconnected` followed by `live`, never
//! get an older status after a newer one from this node), and a subscriber whose forward went
//! through before another's failed may get the same status twice. So the tasks and entries are
//! bounded by the runtimes with a status owed, each holding one status. A task that failed ends
//! with an info line (the status reached the other nodes, or is another node's to tell now). Before
//! each retry the task checks that the status is still this node's to tell: a runtime whose session
//! left this node (handed over, taken over) has its later statuses published by its new holder, so
//! an owed `live` or `disconnected` is dropped then, and an owed `expired` is dropped when a
//! session of another node holds the runtime again (re-opened there; when the database cannot say,
//! the retry waits). The check and the forward are not atomic: a runtime re-opened on another node
//! in between can still see this node's `expired` after that node's `live`.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use rethink_proto::{Envelope, MessageType};

use super::remote::{Forwarded, NODE_NOTICE, Remote, RemoteTarget};
use super::session::Session;
use super::{Bus, Endpoint, Inner, Pending, RouteError};
use crate::locks::lock;

/// The first pause before a status notice's remote part is tried again; doubled after each
/// failure up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(500);
/// The longest pause between two tries of a status notice's remote part.
const RETRY_MAX: Duration = Duration::from_secs(10);

/// A runtime's status owed to the other nodes by one node: its turn is under way.
#[derive(Debug)]
pub(super) struct Owed {
    /// The runtime's latest status: being sent, or to be sent.
    status: RuntimeStatus,
    /// Published after the turn's holder took `status` (or the turn's own): to be sent next.
    newer: bool,
}

/// The runtimes whose turn is under way, by runtime URL (the bus's `status_owed`).
pub(super) type OwedStatuses = Mutex<HashMap<String, Owed>>;

/// A runtime's turn at sending its status to the other nodes: one at a time per runtime and
/// node. Its entry of the bus's `status_owed` is removed when it ends, or when it is dropped
/// (the node stopping: the sending call or the task cancelled).
#[derive(Debug)]
struct Turn {
    bus: Weak<Inner>,
    runtime: String,
    ended: bool,
}

impl Turn {
    /// Takes `runtime`'s turn with `status` (`owed`: the bus's `status_owed`, locked); `None`
    /// when a turn is under way: `status` is then recorded as the latest, which that turn sends
    /// next.
    fn take(
        bus: &Bus,
        owed: &mut HashMap<String, Owed>,
        runtime: &str,
        status: RuntimeStatus,
    ) -> Option<Turn> {
        match owed.entry(runtime.to_owned()) {
            Entry::Occupied(mut owed) => {
                *owed.get_mut() = Owed {
                    status,
                    newer: true,
                };
                return None;
            }
            Entry::Vacant(v) => {
                v.insert(Owed {
                    status,
                    newer: false,
                });
            }
        }
        Some(Turn {
            bus: Arc::downgrade(&bus.inner),
            runtime: runtime.to_owned(),
            ended: false,
        })
    }

    /// The runtime's latest status, taken to be sent.
    fn next(&self) -> Option<RuntimeStatus> {
        let inner = self.bus.upgrade()?;
        let mut owed = lock(&inner.status_owed);
        let owed = owed.get_mut(&self.runtime)?;
        owed.newer = false;
        Some(owed.status)
    }

    /// After a status got through: ends the turn, unless a newer status was published
    /// meanwhile (the turn goes on, to send it).
    fn end(mut self) -> Option<Turn> {
        if let Some(inner) = self.bus.upgrade() {
            let mut owed = lock(&inner.status_owed);
            if owed.get(&self.runtime).is_some_and(|o| o.newer) {
                return Some(self);
            }
            owed.remove(&self.runtime);
        }
        self.ended = true;
        None
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        if !self.ended
            && let Some(inner) = self.bus.upgrade()
        {
            lock(&inner.status_owed).remove(&self.runtime);
        }
    }
}

/// A runtime's status, as published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeStatus {
    Live,
    Disconnected,
    Expired,
}

impl RuntimeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeStatus::Live => "live",
            RuntimeStatus::Disconnected => "disconnected",
            RuntimeStatus::Expired => "expired",
        }
    }
}

/// The status of runtimes no session of this node holds, asked of the other nodes before a
/// route: by runtime URL, the holder's view, or `None` when the cluster could not tell. A
/// runtime absent from it has no session anywhere.
pub(super) type RemoteStatuses = HashMap<String, Option<RuntimeStatus>>;

/// What this node knows of an address asked about as a runtime.
enum Here {
    /// A session of this node holds the runtime.
    Held(RuntimeStatus),
    /// The address belongs to a session of this node, and is not its runtime URL.
    NotARuntime,
    /// No session of this node holds it.
    Elsewhere,
}

impl RuntimeStatus {
    /// The status named `name` (as published).
    pub fn parse(name: &str) -> Option<RuntimeStatus> {
        [
            RuntimeStatus::Live,
            RuntimeStatus::Disconnected,
            RuntimeStatus::Expired,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }
}

impl Bus {
    fn status_here(&self, runtime: &str) -> Here {
        match self.inner.book.owner_of(runtime) {
            Some(s) if **s.runtime_url() == *runtime => {
                let st = lock(&s.state);
                Here::Held(if st.ended {
                    RuntimeStatus::Expired
                } else if st.attachment.is_some() {
                    RuntimeStatus::Live
                } else {
                    RuntimeStatus::Disconnected
                })
            }
            Some(_) => Here::NotARuntime,
            None => Here::Elsewhere,
        }
    }

    /// The runtimes of this domain whose `<runtime URL>/status` is in `resources`.
    fn status_runtimes<'r>(&self, resources: &'r [String]) -> impl Iterator<Item = &'r str> {
        let prefix = format!("hyperty-runtime://{}/", self.inner.domain);
        resources.iter().filter_map(move |r| {
            r.strip_suffix("/status")
                .filter(|runtime| runtime.starts_with(&prefix))
        })
    }

    /// The current status of each runtime of this domain whose `<runtime URL>/status` is in
    /// `resources`, as a JSON object by runtime URL; `None` when there is none. `remote`: what
    /// the other nodes said of the runtimes no session here holds.
    pub(super) fn current_status(
        &self,
        resources: &[String],
        remote: &RemoteStatuses,
    ) -> Option<serde_json::Value> {
        let mut found = serde_json::Map::new();
        for runtime in self.status_runtimes(resources) {
            let status = match self.status_here(runtime) {
                Here::Held(status) => status,
                Here::NotARuntime => continue,
                Here::Elsewhere => match remote.get(runtime) {
                    Some(Some(status)) => *status,
                    Some(None) => continue,
                    None => RuntimeStatus::Expired,
                },
            };
            found.insert(runtime.to_owned(), status.as_str().into());
        }
        (!found.is_empty()).then_some(serde_json::Value::Object(found))
    }

    /// The status of each of `runtimes` that a session of this node holds, as this node sees
    /// it (the others are left out): what another node of the cluster asks.
    pub fn local_status(&self, runtimes: &[String]) -> Vec<(String, RuntimeStatus)> {
        runtimes
            .iter()
            .filter_map(|r| match self.status_here(r) {
                Here::Held(status) => Some((r.clone(), status)),
                Here::NotARuntime | Here::Elsewhere => None,
            })
            .collect()
    }

    /// Before routing `env`: when it is a `subscribe` to the subscription manager naming
    /// `<runtime URL>/status` of runtimes no session here holds, and other nodes serve the
    /// domain, their status there. Empty otherwise (nothing asked).
    pub(super) async fn remote_statuses(&self, env: &Envelope) -> RemoteStatuses {
        let mut out = RemoteStatuses::new();
        if *env.kind() != MessageType::Subscribe
            || !env
                .to()
                .any(|to| self.inner.endpoints.classify(to) == Some(Endpoint::Subscriptions))
        {
            return out;
        }
        let Some(remote) = self.remote() else {
            return out;
        };
        let resources = Self::subscription_resources(env).unwrap_or_default();
        let asked: Vec<String> = self
            .status_runtimes(&resources)
            .filter(|r| matches!(self.status_here(r), Here::Elsewhere))
            .map(str::to_owned)
            .collect();
        if asked.is_empty() {
            return out;
        }
        match remote.runtime_status(&asked).await {
            Ok(told) => out.extend(told.into_iter().map(|(r, s)| (r, Some(s)))),
            Err(e) => {
                tracing::warn!(error = %e, "the status of runtimes on other nodes is left out of a subscription's answer");
                out.extend(asked.into_iter().map(|r| (r, None)));
            }
        }
        out
    }

    /// Publishes `status` of `session`'s runtime to the subscribers of `<runtime URL>/status`,
    /// on every node. `disconnected` is not published while another connection is attached
    /// (a connection superseded by a re-open) nor once the session has ended here.
    pub async fn publish_status(&self, session: &Arc<Session>, status: RuntimeStatus) {
        if status == RuntimeStatus::Disconnected {
            let st = lock(&session.state);
            if st.ended || st.attachment.is_some() {
                return;
            }
        }
        self.publish_runtime_status(session.runtime_url(), status, Some(session))
            .await;
    }

    /// Publishes `disconnected` for `session`, handed to another node with its connection
    /// closed (`handover.rs`), as a local disconnect would.
    pub async fn publish_handed_over(&self, session: &Arc<Session>) {
        self.publish_runtime_status(
            session.runtime_url(),
            RuntimeStatus::Disconnected,
            Some(session),
        )
        .await;
    }

    /// The `update` of `runtime`'s status, from the node to `<runtime URL>/status`.
    fn status_envelope(&self, runtime: &str, status: RuntimeStatus) -> Option<Envelope> {
        let id = self.inner.status_ids.fetch_add(1, Ordering::Relaxed);
        let text = serde_json::json!({
            "id": id,
            "type": "update",
            "from": format!("domain://msg-node.{}", self.inner.domain),
            "to": format!("{runtime}/status"),
            "body": {"resource": runtime, "attribute": "status", "value": status.as_str()},
        })
        .to_string();
        Envelope::parse(&text)
            .inspect_err(|e| tracing::error!(error = %e, "a runtime status message does not parse"))
            .ok()
    }

    /// Publishes `expired` for `runtime`, whose session another node held and this node ended
    /// (that node gone past the resume window).
    pub async fn publish_expired_of_gone(&self, runtime: &str) {
        self.publish_runtime_status(runtime, RuntimeStatus::Expired, None)
            .await;
    }

    /// Publishes `status` of `runtime` to the subscribers of `<runtime URL>/status` here
    /// (but `except`, the runtime's own session) and on the other nodes (their queues are
    /// committed before this returns, unless an earlier status of the runtime is still owed to
    /// them, or the cluster is unavailable: see the module documentation).
    async fn publish_runtime_status(
        &self,
        runtime: &str,
        status: RuntimeStatus,
        except: Option<&Arc<Session>>,
    ) {
        let to = format!("{runtime}/status");
        let remote = self.remote();
        let mut pending = Pending::default();
        // Delivered here before anything is awaited, and in a cluster as the turn is taken
        // (under `status_owed`'s lock): the subscribers here get a runtime's statuses in the
        // order the calls took that lock, whatever the remote part waits for.
        let (turn, env) = match remote {
            Some(_) => {
                let mut owed = lock(&self.inner.status_owed);
                let turn = Turn::take(self, &mut owed, runtime, status);
                (
                    turn,
                    self.deliver_status(runtime, &to, status, except, &mut pending),
                )
            }
            None => (
                None,
                self.deliver_status(runtime, &to, status, except, &mut pending),
            ),
        };
        // Subscribers handed to another node meanwhile are served there (by the turn under
        // way, which looks them up, when this call has none).
        let handed = std::mem::take(&mut pending.remote);
        if env.is_some() {
            self.commit(pending).await;
        }
        let (Some(turn), Some(remote)) = (turn, remote) else {
            return;
        };
        // A subscriber handed here from another node since the delivery here misses this
        // status (one handed away from here gets it twice).
        let looked_up = remote_subscribers(&*remote, &to).await;
        if handed.is_empty() && looked_up.as_ref().is_ok_and(Vec::is_empty) {
            self.turn_done(turn, status, None);
            return;
        }
        let Some(env) = env.or_else(|| self.status_envelope(runtime, status)) else {
            return;
        };
        let unavailable = self
            .forward_status(runtime, env.shared_json(), env.from(), looked_up, handed)
            .await;
        self.turn_done(turn, status, unavailable);
    }

    /// Delivers `status` of `runtime` to the subscribers of `to` here but `except`; the update
    /// delivered, `None` when there was nobody to deliver it to (nothing built).
    fn deliver_status(
        &self,
        runtime: &str,
        to: &str,
        status: RuntimeStatus,
        except: Option<&Arc<Session>>,
        pending: &mut Pending,
    ) -> Option<Envelope> {
        let not_except = |s: &&Arc<Session>| except.is_none_or(|e| !Arc::ptr_eq(s, e));
        self.inner
            .book
            .with_subscribers(to, |subs| {
                let mut subs = subs.iter().filter(not_except).peekable();
                subs.peek()?;
                let env = self.status_envelope(runtime, status)?;
                for s in subs {
                    if let Err(e) = self.deliver(s, to, env.shared_json(), pending) {
                        tracing::warn!(error = %e, %runtime, "a runtime status update was not delivered");
                    }
                }
                Some(env)
            })
            .flatten()
    }

    /// After the first try of `turn` (with `status`): when the cluster was `unavailable`, or a
    /// newer status was published meanwhile, the turn goes on in a task of its own.
    fn turn_done(&self, turn: Turn, status: RuntimeStatus, unavailable: Option<RouteError>) {
        let pause = match unavailable {
            Some(e) => {
                tracing::warn!(error = %e, runtime = %turn.runtime, status = status.as_str(), "a runtime status update did not reach the other nodes: tried again until it does");
                Some(RETRY_FIRST)
            }
            None => None,
        };
        let turn = match pause {
            Some(_) => turn,
            None => match turn.end() {
                Some(turn) => turn,
                None => return,
            },
        };
        tokio::spawn(retry(turn, pause));
    }

    /// Sends `runtime`'s latest `status` to the subscribers on the other nodes (a new lookup);
    /// `Some` when the cluster was unavailable.
    async fn send_remote_status(
        &self,
        remote: &dyn Remote,
        runtime: &str,
        status: RuntimeStatus,
    ) -> Option<RouteError> {
        let to = format!("{runtime}/status");
        let looked_up = remote_subscribers(remote, &to).await;
        if looked_up.as_ref().is_ok_and(Vec::is_empty) {
            return None;
        }
        let env = self.status_envelope(runtime, status)?;
        self.forward_status(
            runtime,
            env.shared_json(),
            env.from(),
            looked_up,
            Vec::new(),
        )
        .await
    }

    /// Forwards the status notice `json` to `targets` and to the remote subscribers
    /// `looked_up`; the error when the cluster was unavailable (the lookup failed, or the
    /// forward to one of them), so that the notice is to be tried again.
    async fn forward_status(
        &self,
        runtime: &str,
        json: &Arc<str>,
        from: &str,
        looked_up: Result<Vec<RemoteTarget>, RouteError>,
        mut targets: Vec<RemoteTarget>,
    ) -> Option<RouteError> {
        let mut unavailable = None;
        match looked_up {
            Ok(found) => targets.extend(found),
            Err(e @ RouteError::Cluster(_)) => unavailable = Some(e),
            Err(e) => {
                tracing::warn!(error = %e, %runtime, "a runtime status update reaches this node's subscribers only");
            }
        }
        let notice = Forwarded {
            json,
            from,
            sender: None,
            transport: NODE_NOTICE,
        };
        let mut failures = Vec::new();
        self.forward_remote(notice, targets, &mut failures).await;
        for f in failures {
            match f.error {
                RouteError::Cluster(_) => {
                    tracing::debug!(error = %f.error, to = %f.recipient, "a runtime status update could not be forwarded");
                    unavailable.get_or_insert(f.error);
                }
                error => {
                    tracing::warn!(%error, to = %f.recipient, "a runtime status update was not delivered");
                }
            }
        }
        unavailable
    }

    /// Whether `status` of `runtime`, owed to the other nodes, is still this node's to tell:
    /// while a session here holds the runtime; once it left, only an `expired` that no session
    /// of another node contradicts (see the module documentation).
    async fn still_ours(
        &self,
        remote: &dyn Remote,
        runtime: &str,
        status: RuntimeStatus,
    ) -> Result<bool, RouteError> {
        match self.status_here(runtime) {
            Here::Held(_) => Ok(true),
            Here::NotARuntime | Here::Elsewhere if status != RuntimeStatus::Expired => Ok(false),
            Here::NotARuntime | Here::Elsewhere => Ok(remote
                .runtime_status(&[runtime.to_owned()])
                .await?
                .is_empty()),
        }
    }
}

/// The subscribers of `to` on the other nodes.
async fn remote_subscribers(
    remote: &dyn Remote,
    to: &str,
) -> Result<Vec<RemoteTarget>, RouteError> {
    let holders = remote.lookup(to).await?;
    Ok(holders
        .subscribers
        .into_iter()
        .map(|target| RemoteTarget {
            to: to.to_owned(),
            target,
            gateway: None,
        })
        .collect())
}

/// Goes on with `turn` after `pause` (`None`: at once; `Some`: the publishing call's try
/// failed): sends the runtime's latest status to the other nodes until one gets through with
/// no newer one owed, pausing after each failure, or until the node stops. A turn that failed
/// ends with an info line (the status reached the other nodes, or is not this node's to tell).
async fn retry(mut turn: Turn, mut pause: Option<Duration>) {
    let mut failed = u32::from(pause.is_some());
    loop {
        if let Some(p) = pause {
            tokio::time::sleep(p).await;
        }
        // Nothing of the bus is held during the pause.
        let Some(inner) = turn.bus.upgrade() else {
            return;
        };
        let bus = Bus { inner };
        let Some(remote) = bus.remote() else {
            tracing::debug!(runtime = %turn.runtime, "the node left the cluster: a runtime status update is not tried again");
            return;
        };
        let Some(status) = turn.next() else {
            return;
        };
        let outcome = match bus.still_ours(&*remote, &turn.runtime, status).await {
            Ok(true) => match bus
                .send_remote_status(&*remote, &turn.runtime, status)
                .await
            {
                None => Ok("a runtime status update reached the other nodes"),
                Some(e) => Err(e),
            },
            Ok(false) => {
                Ok("an owed runtime status update is another node's to tell now: not sent")
            }
            Err(e) => Err(e),
        };
        match outcome {
            Err(e) => {
                failed += 1;
                tracing::debug!(error = %e, runtime = %turn.runtime, tries = failed, "a runtime status update still does not reach the other nodes");
                pause = Some(pause.map_or(RETRY_FIRST, |p| (p * 2).min(RETRY_MAX)));
            }
            Ok(done) => {
                let runtime = turn.runtime.clone();
                match turn.end() {
                    Some(next) => {
                        turn = next;
                        pause = None;
                    }
                    None => {
                        if failed > 0 {
                            tracing::info!(%runtime, status = status.as_str(), failed_tries = failed, "{done}");
                        }
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The subscribers here get a runtime's statuses in the order they were published, even
    //! while the remote part of an earlier one waits for the cluster's database.

    use std::sync::Arc;

    use super::RuntimeStatus;
    use crate::auth::Identity;
    use crate::bus::testing::DownCluster;
    use crate::bus::{Bus, Session};
    use crate::locks::lock;

    /// A bus in a cluster whose database is down: a lookup waits for the test's `release`,
    /// then fails.
    fn bus(remote: Arc<DownCluster>) -> Bus {
        let bus = crate::bus::testing::bus(Some("n1"));
        bus.set_remote(remote);
        bus
    }

    /// The status values in `session`'s outbox, in order.
    fn statuses(session: &Session) -> Vec<String> {
        lock(&session.state)
            .outbox
            .snapshot()
            .iter()
            .map(|(_, json)| {
                let v: serde_json::Value = serde_json::from_str(json).unwrap();
                v["body"]["value"].as_str().unwrap().to_owned()
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_status_here_is_not_overtaken_by_a_newer_one_while_its_lookup_waits() {
        let remote = Arc::new(DownCluster {
            slow_lookups: true,
            ..DownCluster::default()
        });
        let bus = bus(Arc::clone(&remote));
        let runtime = "hyperty-runtime://example.com/r";
        bus.open(runtime, Identity::anonymous()).await.unwrap();
        let (sub, _) = bus
            .open("hyperty-runtime://example.com/s", Identity::anonymous())
            .await
            .unwrap();
        bus.inner
            .book
            .subscribe(Arc::from(format!("{runtime}/status")), &sub);

        // `disconnected` takes the turn, its lookup waits; `live` is published meanwhile.
        let first = tokio::spawn({
            let bus = bus.clone();
            async move {
                bus.publish_runtime_status(runtime, RuntimeStatus::Disconnected, None)
                    .await
            }
        });
        remote.entered.notified().await;
        bus.publish_runtime_status(runtime, RuntimeStatus::Live, None)
            .await;
        remote.release.notify_one();
        first.await.unwrap();

        assert_eq!(statuses(&sub), ["disconnected", "live"]);
    }
}
