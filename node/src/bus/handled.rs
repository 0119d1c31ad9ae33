//! What a node session sends is handled once, also across a SIGKILL of this node (issue 13).
//!
//! Another domain's stub numbers each message it sends with a `cseq` and sends again, after a
//! lost connection or a restart, what this node has not confirmed (`sync`, or the `cseq` of the
//! `re-open` answer). [`Bus::route_handled`] routes such a message so that its effect and the
//! record that it was handled are durable together: its outbox entries and the session's new
//! highest `cseq` ([`StoreOp::Handled`]) go to the store writer as one [`StoreOp::Group`] (one
//! transaction), and its frames are *held* in the recipients' outboxes (nothing after them is
//! written either) until that commit. A node killed at any point has then either handled the
//! message (its entries and its `cseq` are on disk, and the resend is dropped) or not at all
//! (neither is, and no recipient saw it). The highest `cseq` is restored with the session at
//! start ([`crate::store::PersistedSession::cseq`]).
//!
//! The node session's next frame does not wait for that commit (one commit per message would
//! bound a node session to the store's commit rate): the writer groups the commits of many
//! messages, and [`Committed`] releases each one's frames after its own. What tells the other
//! node a message is handled waits for the commits before it instead: the answer to `sync`
//! and to `re-open` ([`Bus::save_handled`] flushes the writer; for `sync`,
//! [`Bus::save_handled_queued`] lets the frames after it be read and routed while its answer
//! waits), and an answer or refusal of the message itself ([`Committed::wait`]).

use std::sync::Arc;

use super::{Bus, Pending, Permit, RouteReport, Session};
use crate::store::{SessionKey, StoreOp};

/// A node session's message being routed: its `cseq`, and the frames held for it.
#[derive(Debug)]
pub(super) struct Handled {
    session: SessionKey,
    cseq: u64,
    /// (recipient, seq) of each frame pushed for it.
    pub(super) held: Vec<(Arc<Session>, u64)>,
}

impl Handled {
    /// The store op recording the message as handled.
    pub(super) fn op(&self) -> StoreOp {
        StoreOp::Handled {
            session: Arc::clone(&self.session),
            cseq: self.cseq,
        }
    }

    /// Lets the held frames be written (after the commit).
    pub(super) fn release(self) {
        for (session, seq) in self.held {
            session.release(seq);
        }
    }
}

/// The commit of a message routed by [`Bus::route_handled`], under way.
#[derive(Debug)]
#[must_use = "wait for it before answering the message"]
pub struct Committed(Option<tokio::task::JoinHandle<()>>);

impl Committed {
    /// Waits until the message's frames and `cseq` are committed.
    pub async fn wait(self) {
        if let Some(task) = self.0 {
            // A panicked release task has nothing more to wait for.
            let _ = task.await;
        }
    }
}

impl Bus {
    /// Routes `permit`, a message `session` numbered `cseq` (already taken as handled by
    /// [`Session::accept_cseq`]), committing its frames and `cseq` in one transaction before
    /// any is written (see the module documentation). Returns before the commit: wait for
    /// [`Committed`] before answering the message.
    pub async fn route_handled(
        &self,
        permit: Permit<'_>,
        session: &Session,
        cseq: u64,
    ) -> (RouteReport, Committed) {
        let pending = Pending {
            handled: Some(Handled {
                session: Arc::clone(session.key()),
                cseq,
                held: Vec::new(),
            }),
            ..Pending::default()
        };
        let (report, settling) = self.route_pending(permit, pending).await;
        // The next frame of the node session does not wait for this commit; bridge events keep
        // the routes' order, so a route with some is waited for here.
        if settling.has_bridge_events() {
            settling.wait().await;
            return (report, Committed(None));
        }
        (report, Committed(Some(tokio::spawn(settling.wait()))))
    }

    /// Records `session`'s highest `cseq` as handled (also what was refused rather than
    /// routed) and waits until that and every message routed before is committed: before the
    /// answer to `sync` or `re-open` tells the other node so, and when a connection ends.
    /// Only a node session's: a runtime's `cseq` is not kept across a restart of this node.
    pub async fn save_handled(&self, session: &Session) {
        self.save_handled_queued(session).await.await;
    }

    /// As [`Bus::save_handled`], but only queues the record and the flush (in order with what
    /// the session routes next); the future returned resolves once they are committed. The
    /// answer to `sync` waits for it, the node session's next frames do not.
    pub async fn save_handled_queued(
        &self,
        session: &Session,
    ) -> impl Future<Output = ()> + Send + 'static {
        let cseq = session.cseq();
        let mut flushed = None;
        if cseq > 0 && self.node_domain(session).is_some() {
            self.submit(StoreOp::Handled {
                session: Arc::clone(session.key()),
                cseq,
            })
            .await;
            match self.inner.store.flush_queued().await {
                Ok(f) => flushed = Some(f),
                Err(e) => tracing::error!(error = %e, "the store writer has stopped"),
            }
        }
        async move {
            if let Some(flushed) = flushed
                && let Err(e) = flushed.await
            {
                tracing::error!(error = %e, "the store writer has stopped");
            }
        }
    }
}
