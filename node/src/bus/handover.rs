//! The bus's side of a hand-over: a live session moving from this node to another one that a
//! runtime re-opened it on (`crate::cluster::handover` runs the protocol), and a session
//! arriving here from another node (live or gone: [`Bus::adopt_by_token`]).
//!
//! Leaving, in three steps, so that every message accepted for the session is delivered once,
//! in order per sender:
//! 1. [`Bus::suspend_for_handover`]: the session is marked ended (nothing more enters its
//!    outbox) and *handed over*; its connection, if any, is closed as when superseded locally;
//!    the store writer commits what was submitted; the frames still owed (including those
//!    pushed by routes whose store writes are not submitted yet) are returned, to be written by
//!    the cluster with the row's new holder in one transaction.
//! 2. A route that looked the session up just before step 1 finds it ended *and handed over*:
//!    its frame goes through the cluster (`deliver`: a remote target by the session's key),
//!    stored in `cluster_inbox`, where the new holder finds it after what step 1 returned.
//! 3. [`Bus::forget_handed`]: the session leaves the address book, under the route gate
//!    (exclusive: no route is between its lookups and its forwards) together with the lookup
//!    cache, so a later route finds it on its new node through the database.
//!
//! Arriving: under the route gate, the session is restored, the lookup cache emptied and the
//! messages queued for it moved into its outbox, so that a sender here whose earlier message
//! went to the queue does not overtake it with a later one pushed locally. A remote target that
//! is a session held here (an answer of the cache older than the arrival) is dropped from a
//! forward (`remote.rs`): the route served it locally.

use std::sync::Arc;

use super::{Bus, Session};
use crate::locks::lock;

/// What a session leaving this node leaves to the node taking it over.
#[derive(Debug)]
pub struct Released {
    /// The highest seq the runtime acknowledged here.
    pub acked: u64,
    /// The highest `cseq` handled.
    pub cseq: u64,
    /// The frames still owed, by seq.
    pub outbox: Vec<(u64, Arc<str>)>,
    /// A connection was attached (and is closed by the hand-over).
    pub was_attached: bool,
}

impl Bus {
    /// Step 1 (see the module docs): `None` when the session has ended already.
    pub async fn suspend_for_handover(&self, session: &Arc<Session>) -> Option<Released> {
        let attachment = {
            let mut st = lock(&session.state);
            if st.ended {
                return None;
            }
            st.ended = true;
            st.handed_over = true;
            st.attachment.take()
        };
        let was_attached = attachment.is_some();
        if let Some(a) = attachment {
            a.cancel.cancel();
            self.inner.metrics.sessions_connected.dec();
        }
        session.wake_waiters();
        self.store_barrier().await;
        let st = lock(&session.state);
        Some(Released {
            acked: st.outbox.acked(),
            cseq: session.cseq(),
            outbox: st.outbox.snapshot(),
            was_attached,
        })
    }

    /// The hand-over failed after step 1: the session stays here, disconnected (its runtime
    /// re-opens it here or tries again).
    pub fn resume_after_handover(&self, session: &Arc<Session>) {
        let mut st = lock(&session.state);
        st.ended = false;
        st.handed_over = false;
        st.outbox.rewind();
        if st.attachment.is_none() && st.disconnected_at.is_none() {
            st.disconnected_at = Some(self.inner.clock.now());
        }
    }

    /// Step 3 (see the module docs): the session, handed over, leaves this node.
    pub async fn forget_handed(&self, session: &Arc<Session>) {
        let _gate = self.inner.route_gate.write().await;
        let (allocations, subscriptions, held) = {
            let mut st = lock(&session.state);
            (
                std::mem::take(&mut st.allocations),
                std::mem::take(&mut st.subscriptions),
                st.outbox.len(),
            )
        };
        self.unregister(session, &allocations, &subscriptions);
        self.inner.metrics.sessions.dec();
        self.inner.metrics.outbox_messages.dec_by(held as i64);
        if let Some(remote) = self.remote() {
            remote.forget_lookups();
        }
        tracing::info!(session = %session.key(), "session handed over to another node");
    }

    /// A session held by another node, taken over (that node released it, or is gone) and
    /// restored here with the messages queued for it (for a `re-open` with a token this node
    /// does not know). `Ok(None)`: no such session.
    pub async fn adopt_by_token(
        &self,
        token: &str,
    ) -> Result<Option<Arc<Session>>, super::RouteError> {
        let Some(remote) = self.remote() else {
            return Ok(None);
        };
        let Some(adopted) = remote.adopt(super::hash_token(token)).await? else {
            return Ok(None);
        };
        Ok(Some(self.arrive(&*remote, adopted).await))
    }

    /// A session taken over by the cluster without a runtime asking (a gateway session to
    /// another domain, `gateways.rs`, of a node that is gone; a session released to this node
    /// after it stopped asking): restored with what was queued for it, disconnected; a
    /// gateway's stub is started on this node.
    pub async fn take_over(&self, adopted: super::remote::Adopted) {
        let Some(remote) = self.remote() else {
            return;
        };
        let session = self.arrive(&*remote, adopted).await;
        if let Some(domain) = self.node_domain(&session) {
            tracing::info!(
                domain,
                "the gateway to another domain of a node that is gone is taken over here"
            );
            self.start_gateway(domain);
        }
    }

    /// Restores `adopted` here (see the module docs, "Arriving").
    async fn arrive(
        &self,
        remote: &dyn super::remote::Remote,
        adopted: super::remote::Adopted,
    ) -> Arc<Session> {
        let super::remote::Adopted {
            session,
            epoch,
            arriving,
        } = adopted;
        let session = {
            let _gate = self.inner.route_gate.write().await;
            let session = self.restore_one(session, epoch);
            // Restored: a request to release it finds it from now on.
            drop(arriving);
            remote.forget_lookups();
            remote.drain(&session).await;
            session
        };
        // The status notices the old node sent to subscribers here come before this node's.
        let status = format!("{}/status", session.runtime_url());
        let subscribers = self
            .inner
            .book
            .with_subscribers(&status, <[Arc<Session>]>::to_vec)
            .unwrap_or_default();
        for s in &subscribers {
            remote.drain(s).await;
        }
        tracing::info!(session = %session.key(), "session taken over from another node");
        session
    }

    /// Whether `key` is a session held here (not ended): a remote target naming it is stale.
    pub(super) fn holds_live(&self, key: &str) -> bool {
        self.session(key).is_some_and(|s| !lock(&s.state).ended)
    }
}
