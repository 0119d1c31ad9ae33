//! [`Waiting`]: the messages for a domain whose node is down or unreachable while its stub
//! cannot be loaded (no descriptor, component or challenge to fetch), kept in the domain's
//! gateway outbox (persisted in the bus's store) rather than refused.
//!
//! While the gateway waits, its outbox is capped at `cross_domain.queue_limit` (beyond, the
//! senders get 503 "the queue to D is full" at routing, `bus/gateways.rs`), and each message
//! still there `cross_domain.delivery_timeout_secs` after the gateway took it (after a restart
//! of this node: since the restart) is answered 504 "no delivery to D within N s" and dropped,
//! oldest first (the outbox is in arrival order, so the acknowledgement stays cumulative).
//! Once the stub starts, the gateway reattaches (the outbox rewinds) and the stub gets every
//! message still waiting, in order.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use rethink_proto::{Code, Envelope};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::bus::{Bus, Origin, Session};
use crate::stubhost::{answer_error, frame_seq};

/// Frames taken from the outbox at once.
const BATCH: usize = 64;

/// The messages a gateway took from its outbox while waiting for its domain, oldest first.
#[derive(Debug, Default)]
pub(super) struct Waiting {
    /// (outbox seq, when taken, the frame).
    frames: VecDeque<(u64, Instant, String)>,
    /// Whether the gateway is waiting (its outbox capped).
    active: bool,
}

impl Waiting {
    /// Whether the gateway has been waiting since the last stub ran.
    pub(super) fn is_active(&self) -> bool {
        self.active
    }

    /// Starts waiting (once): caps `session`'s outbox at `limit` messages.
    pub(super) fn begin(&mut self, session: &Session, limit: usize) {
        if !self.active {
            session.cap_outbox(Some(limit));
            self.active = true;
        }
    }

    /// Stops waiting: the outbox's own bounds again; what was taken is left in the outbox for
    /// the caller to hand over from the start (it reattaches).
    pub(super) fn end(&mut self, session: &Session) {
        session.cap_outbox(None);
        self.frames.clear();
        self.active = false;
    }

    /// Keeps what arrives for `period` (or until `shutdown`), answering 504 each message that
    /// waited `timeout` and dropping it from the outbox.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn hold(
        &mut self,
        bus: &Bus,
        session: &Arc<Session>,
        connection: u64,
        origin: &Origin,
        domain: &str,
        timeout: Duration,
        period: Duration,
        shutdown: &CancellationToken,
    ) {
        let until = Instant::now() + period;
        let description = format!("no delivery to {domain} within {} s", timeout.as_secs());
        let mut taken = Vec::with_capacity(BATCH);
        // The commit settles the senders (the frames are persisted): these are not needed.
        let mut settles = Vec::new();
        loop {
            taken.clear();
            settles.clear();
            session.take_unsent(connection, BATCH, &mut taken, &mut settles);
            let now = Instant::now();
            let more = taken.len() == BATCH;
            for frame in taken.drain(..) {
                if let Some(seq) = frame_seq(&frame) {
                    self.frames.push_back((seq, now, frame));
                }
            }
            while let Some((seq, _, frame)) = self.frames.front().filter(|f| f.1 + timeout <= now) {
                let seq = *seq;
                if let Ok(env) = Envelope::parse(frame) {
                    answer_error(bus, origin, &env, Code(504), &description).await;
                }
                bus.ack(session, seq).await;
                self.frames.pop_front();
            }
            if now >= until {
                return;
            }
            let wake = self
                .frames
                .front()
                .map_or(until, |f| (f.1 + timeout).min(until));
            if !more {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep_until(wake) => {}
                    () = session.wait_for_frames() => {}
                }
            }
        }
    }
}
