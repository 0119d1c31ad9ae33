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

impl Bus {
    /// Routes `permit`, a message `session` numbered `cseq` (already taken as handled by
    /// [`Session::accept_cseq`]), committing its frames and `cseq` in one transaction before
    /// any is written (see the module documentation).
    pub async fn route_handled(
        &self,
        permit: Permit<'_>,
        session: &Session,
        cseq: u64,
    ) -> RouteReport {
        let pending = Pending {
            handled: Some(Handled {
                session: Arc::clone(session.key()),
                cseq,
                held: Vec::new(),
            }),
            ..Pending::default()
        };
        self.route_pending(permit, pending).await
    }

    /// Records `session`'s highest `cseq` as handled (for what was refused rather than routed:
    /// at `sync` and when its connection ends).
    pub async fn save_handled(&self, session: &Session) {
        let cseq = session.cseq();
        if cseq > 0 {
            self.submit(StoreOp::Handled {
                session: Arc::clone(session.key()),
                cseq,
            })
            .await;
        }
    }
}
