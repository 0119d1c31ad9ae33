//! Sessions rebuilt from their persisted image: at start, and when this node takes over a
//! session of a node that is gone (`remote.rs`).

use std::sync::Arc;

use super::outbox::Outbox;
use super::session::Allocation;
use super::{Bus, EPOCH_SHIFT, Session};
use crate::auth::Identity;
use crate::locks::lock;
use crate::store::PersistedSession;

impl Bus {
    /// Rebuilds persisted sessions at start. They wait in their resume window from now on.
    pub fn restore(&self, persisted: Vec<PersistedSession>) -> usize {
        let count = persisted.len();
        for p in persisted {
            self.restore_one(p, self.inner.epoch);
        }
        count
    }

    /// Rebuilds one session; its new frames are numbered from `epoch << EPOCH_SHIFT` up.
    pub(super) fn restore_one(&self, p: PersistedSession, epoch: u64) -> Arc<Session> {
        let c = &self.inner.session_cfg;
        let floor = epoch << EPOCH_SHIFT;
        let last = p.outbox.last().map_or(0, |(seq, _)| *seq);
        let next_seq = last.max(p.acked_seq).max(floor) + 1;
        let pending = p.outbox.iter().filter(|(s, _)| *s > p.acked_seq).count();
        let outbox = Outbox::restore(
            p.acked_seq,
            next_seq,
            p.outbox,
            c.outbox_max_messages,
            c.outbox_max_bytes,
        );
        let identity =
            serde_json::from_str(&p.identity_json).unwrap_or_else(|_| Identity::anonymous());
        let session = Arc::new(Session::new(
            p.id,
            Arc::from(p.runtime_url),
            p.token_hash,
            identity,
            outbox,
            c,
            self.inner.clock.now(),
        ));
        session.accept_cseq(p.cseq);
        self.inner
            .book
            .claim(Arc::clone(session.runtime_url()), &session);
        {
            let mut st = lock(&session.state);
            let mut keys = p.allocation_keys;
            for a in p.addresses {
                let key = keys.remove(&a);
                let address: Arc<str> = Arc::from(a);
                self.inner.book.claim(Arc::clone(&address), &session);
                st.allocations.push(Allocation { address, key });
            }
            for s in p.subscriptions {
                let address: Arc<str> = Arc::from(s);
                self.inner.book.subscribe(Arc::clone(&address), &session);
                st.subscriptions.push(address);
            }
        }
        self.inner.metrics.outbox_messages.inc_by(pending as i64);
        self.register(&session);
        session
    }
}
