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

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use rethink_proto::{Envelope, MessageType};

use super::remote::{Forwarded, NODE_NOTICE, RemoteTarget};
use super::session::Session;
use super::{Bus, Endpoint, Pending};
use crate::locks::lock;

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
    /// committed before this returns).
    async fn publish_runtime_status(
        &self,
        runtime: &str,
        status: RuntimeStatus,
        except: Option<&Arc<Session>>,
    ) {
        let to = format!("{runtime}/status");
        let remote = match self.remote() {
            Some(remote) => match remote.lookup(&to).await {
                Ok(holders) => holders.subscribers,
                Err(e) => {
                    tracing::warn!(error = %e, %runtime, "a runtime status update reaches this node's subscribers only");
                    Vec::new()
                }
            },
            None => Vec::new(),
        };
        let not_except = |s: &Arc<Session>| except.is_none_or(|e| !Arc::ptr_eq(s, e));
        let local = self
            .inner
            .book
            .with_subscribers(&to, |subs| subs.iter().any(not_except));
        if local != Some(true) && remote.is_empty() {
            return;
        }
        let Some(env) = self.status_envelope(runtime, status) else {
            return;
        };
        let json = env.shared_json();
        let mut pending = Pending::default();
        self.inner.book.with_subscribers(&to, |subs| {
            for s in subs.iter().filter(|s| not_except(s)) {
                if let Err(e) = self.deliver(s, &to, json, &mut pending) {
                    tracing::warn!(error = %e, %runtime, "a runtime status update was not delivered");
                }
            }
        });
        // Subscribers handed to another node meanwhile are served there.
        let mut targets = std::mem::take(&mut pending.remote);
        self.commit(pending).await;
        targets.extend(remote.into_iter().map(|target| RemoteTarget {
            to: to.clone(),
            target,
            gateway: None,
        }));
        let notice = Forwarded {
            json,
            from: env.from(),
            sender: None,
            transport: NODE_NOTICE,
        };
        let mut failures = Vec::new();
        self.forward_remote(notice, targets, &mut failures).await;
        for f in failures {
            tracing::warn!(error = %f.error, to = %f.recipient, "a runtime status update was not delivered");
        }
    }
}
