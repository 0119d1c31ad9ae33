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
//! window (after a node restart, until the runtime resumes), `expired` without a session.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use rethink_proto::Envelope;

use super::remote::{Forwarded, NODE_NOTICE, RemoteTarget};
use super::session::Session;
use super::{Bus, Pending};
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

impl Bus {
    /// The current status of each runtime of this domain whose `<runtime URL>/status` is in
    /// `resources`, as a JSON object by runtime URL; `None` when there is none.
    pub(super) fn current_status(&self, resources: &[String]) -> Option<serde_json::Value> {
        let prefix = format!("hyperty-runtime://{}/", self.inner.domain);
        let mut found = serde_json::Map::new();
        for r in resources {
            let Some(runtime) = r.strip_suffix("/status") else {
                continue;
            };
            if !runtime.starts_with(&prefix) {
                continue;
            }
            let status = match self.inner.book.owner_of(runtime) {
                Some(s) if **s.runtime_url() == *runtime => {
                    let st = lock(&s.state);
                    if st.ended {
                        RuntimeStatus::Expired
                    } else if st.attachment.is_some() {
                        RuntimeStatus::Live
                    } else {
                        RuntimeStatus::Disconnected
                    }
                }
                // An address of another session, not a runtime: no status.
                Some(_) => continue,
                None => RuntimeStatus::Expired,
            };
            found.insert(runtime.to_owned(), status.as_str().into());
        }
        (!found.is_empty()).then_some(serde_json::Value::Object(found))
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
