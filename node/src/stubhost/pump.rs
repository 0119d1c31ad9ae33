//! A running stub's pump: its in-process connection to the bus. It takes frames from the
//! stub's outbox and puts them in the mailbox of the instance serving now, acknowledging each
//! once a mailbox took it (a message lost after that is answered by the router: 502 or 504
//! naming the stub); while the mailbox is full the frames wait in the outbox; with the breaker
//! open they are answered 503.
//!
//! A [`Swap`] (a replaced stub, `super::follow`) changes the instance the pump delivers to,
//! between two frames: every frame goes to exactly one instance, the old one gets nothing after
//! the swap is confirmed, so it can drain its mailbox and stop.

use std::sync::Arc;
use std::time::Duration;

use rethink_proto::Envelope;
use rethink_stubs::{BreakerState, LostReason, Mailbox, Refused};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::port::NodePort;
use crate::bus::{Bus, Session};

/// Frames taken from the outbox at once.
const BATCH: usize = 64;
/// How often the pump retries a full mailbox.
const RETRY: Duration = Duration::from_millis(5);

/// What the pump delivers into: an instance's mailbox, and where refusals are reported.
pub(super) struct PumpTarget {
    pub(super) port: Arc<NodePort>,
    pub(super) mailbox: Mailbox,
}

/// Deliver to `target` from now on; `done` fires once the pump will deliver nothing more to the
/// previous target.
pub(super) struct Swap {
    pub(super) target: PumpTarget,
    pub(super) done: oneshot::Sender<()>,
}

/// The pump of one stub instance name.
pub(super) struct Pump {
    pub(super) bus: Bus,
    pub(super) session: Arc<Session>,
    pub(super) connection: u64,
    pub(super) cancel: CancellationToken,
    pub(super) target: PumpTarget,
    /// Swaps asked by the follower of a catalogue stub (never, for a component file).
    pub(super) swaps: mpsc::Receiver<Swap>,
}

/// Whether `session` subscribed to `address`.
fn subscribes(session: &Session, address: &str) -> bool {
    crate::locks::lock(&session.state)
        .subscriptions
        .iter()
        .any(|s| **s == *address)
}

/// The seq of a frame the outbox rendered (`{"seq":N,...`).
fn frame_seq(frame: &str) -> Option<u64> {
    let rest = frame.strip_prefix("{\"seq\":")?;
    let end = rest.find(',')?;
    rest[..end].parse().ok()
}

impl Pump {
    /// Outbox → mailbox until cancelled.
    pub(super) async fn run(mut self) {
        let mut frames = Vec::with_capacity(BATCH);
        let mut settles = Vec::new();
        loop {
            frames.clear();
            settles.clear();
            self.session
                .take_unsent(self.connection, BATCH, &mut frames, &mut settles);
            if frames.is_empty() {
                tokio::select! {
                    () = self.cancel.cancelled() => return,
                    () = self.session.wait_for_frames() => continue,
                    Some(swap) = self.swaps.recv() => {
                        self.switch(swap);
                        continue;
                    }
                }
            }
            for frame in frames.drain(..) {
                let Some(seq) = frame_seq(&frame) else {
                    continue;
                };
                while let Ok(swap) = self.swaps.try_recv() {
                    self.switch(swap);
                }
                match Envelope::parse(&frame) {
                    Ok(env) => {
                        if !self.deliver(env).await {
                            return;
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "an outbox frame does not parse"),
                }
                self.bus.ack(&self.session, seq).await;
            }
            for s in settles.drain(..) {
                s.fire();
            }
        }
    }

    fn switch(&mut self, swap: Swap) {
        self.target = swap.target;
        // The follower may have given up waiting (shutdown): nothing to tell then.
        let _ = swap.done.send(());
    }

    /// Puts `env` in the serving instance's mailbox, waiting while it is full (a swap meanwhile
    /// redirects it to the new instance). `false` if the pump was cancelled meanwhile (the frame
    /// stays in the outbox).
    async fn deliver(&mut self, env: Envelope) -> bool {
        let mut env = env;
        loop {
            let target = &self.target;
            if target.mailbox.breaker() == BreakerState::Open {
                target.port.report_lost(env, LostReason::Unavailable);
                return true;
            }
            // Its listeners, and the addresses its session subscribed to (the registry
            // connector follows runtimes' `/status` this way).
            if !env
                .to()
                .any(|to| target.port.listens(to) || subscribes(&self.session, to))
            {
                target.port.report_lost(env, LostReason::NotListening);
                return true;
            }
            match target.mailbox.deliver(env) {
                Ok(()) => return true,
                Err((Refused::MailboxFull, back)) => {
                    env = back;
                    tokio::select! {
                        () = self.cancel.cancelled() => return false,
                        () = tokio::time::sleep(RETRY) => {}
                        Some(swap) = self.swaps.recv() => self.switch(swap),
                    }
                }
                Err((_, back)) => {
                    target.port.report_lost(back, LostReason::Unavailable);
                    return true;
                }
            }
        }
    }
}
