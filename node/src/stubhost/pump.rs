//! A running stub's pump: its in-process connection to the bus. It takes frames from the
//! stub's outbox and puts them in the mailbox of the instance serving now, acknowledging each
//! once a mailbox took it (a message lost after that is answered by the router, naming the
//! stub: 502 or 504, or 503 if still in the mailbox when the breaker opens or the stub stops
//! during a restart backoff); while the mailbox is full the frames wait in the outbox; with the
//! breaker open they are answered 503, and a frame for an address the stub neither listens on
//! nor subscribed to 404 (both through the router too).
//!
//! The gateway of another domain (`crate::crossdomain`) runs the same pump with
//! [`AckRule::Held`]: each frame goes in with its outbox position as `gseq`, and the outbox is
//! acknowledged only up to what the stub's store holds durably (`crossdomain/held.rs`), the
//! senders being settled by the group commit of their frames.
//!
//! A [`Swap`] (a replaced stub, `super::follow`) changes the instance the pump delivers to,
//! between two frames: every frame goes to exactly one instance, the old one gets nothing after
//! the swap is confirmed, so it can drain its mailbox and stop.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use rethink_proto::Envelope;
use rethink_stubs::{BreakerState, LostReason, Mailbox, Refused};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::port::NodePort;
use crate::bus::{Bus, Session};

/// Frames taken from the outbox at once.
const BATCH: usize = 64;
/// How often the pump retries a full mailbox.
const RETRY: Duration = Duration::from_millis(5);

/// When the pump acknowledges the outbox.
pub(crate) enum AckRule {
    /// Once the mailbox took a frame; the frame's sender is settled then.
    Delivered,
    /// Once the stub holds the frame durably: up to the highest outbox position the receiver
    /// reports (frames are handed over with that position as `gseq`). Senders are settled by
    /// the group commit of their frames. The [`Seen`], if any, is told of each frame handed on.
    Held(watch::Receiver<u64>, Option<Seen>),
}

/// Told of each frame the pump hands to the stub with [`AckRule::Held`]: its outbox position
/// and the message (before the stub gets it).
pub(crate) type Seen = Arc<dyn Fn(u64, &Envelope) + Send + Sync>;

/// What became of a frame given to [`Pump::deliver`].
enum Handed {
    /// In a mailbox.
    ToStub,
    /// Answered here (breaker open, not listened to, stub gone).
    Answered,
}

/// What the pump delivers into: an instance's mailbox, and where refusals are reported.
pub(crate) struct PumpTarget {
    pub(crate) port: Arc<NodePort>,
    pub(crate) mailbox: Mailbox,
}

/// Deliver to `target` from now on; `done` fires once the pump will deliver nothing more to the
/// previous target.
pub(crate) struct Swap {
    pub(super) target: PumpTarget,
    pub(super) done: oneshot::Sender<()>,
}

/// The pump of one stub instance name.
pub(crate) struct Pump {
    pub(crate) bus: Bus,
    pub(crate) session: Arc<Session>,
    pub(crate) connection: u64,
    pub(crate) cancel: CancellationToken,
    pub(crate) target: PumpTarget,
    /// Swaps asked by the follower of a catalogue stub (never, for a component file or a
    /// gateway: a closed channel).
    pub(crate) swaps: mpsc::Receiver<Swap>,
    pub(crate) ack: AckRule,
}

/// The frame with its `seq` renamed `gseq` (an outbox frame starts with `{"seq":`), so that
/// the stub sees its outbox position.
fn with_gseq(frame: &str) -> std::borrow::Cow<'_, str> {
    match frame.strip_prefix("{\"seq\":") {
        Some(rest) => format!("{{\"gseq\":{rest}").into(),
        None => frame.into(),
    }
}

/// Whether `session` subscribed to `address`.
fn subscribes(session: &Session, address: &str) -> bool {
    crate::locks::lock(&session.state)
        .subscriptions
        .iter()
        .any(|s| **s == *address)
}

/// The seq of a frame the outbox rendered (`{"seq":N,...`).
pub(crate) fn frame_seq(frame: &str) -> Option<u64> {
    let rest = frame.strip_prefix("{\"seq\":")?;
    let end = rest.find(',')?;
    rest[..end].parse().ok()
}

impl Pump {
    /// Outbox → mailbox until cancelled.
    pub(crate) async fn run(mut self) {
        let mut frames = Vec::with_capacity(BATCH);
        let mut settles = Vec::new();
        // With `AckRule::Held`: frames handed on and not yet acknowledged (outbox seq, whether
        // it waits for the stub to hold it; false when it was answered here).
        let mut handed: VecDeque<(u64, bool)> = VecDeque::new();
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
                    upto = held_changed(&mut self.ack) => {
                        match upto {
                            Some(upto) => self.release(&mut handed, upto).await,
                            None => return,
                        }
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
                let text = match self.ack {
                    AckRule::Delivered => frame.as_str().into(),
                    AckRule::Held(..) => with_gseq(&frame),
                };
                let to_stub = match Envelope::parse(&text) {
                    Ok(env) => {
                        if let AckRule::Held(_, Some(seen)) = &self.ack {
                            seen(seq, &env);
                        }
                        match self.deliver(env).await {
                            Some(Handed::ToStub) => true,
                            Some(Handed::Answered) => false,
                            None => return,
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "an outbox frame does not parse");
                        false
                    }
                };
                match &self.ack {
                    AckRule::Delivered => self.bus.ack(&self.session, seq).await,
                    AckRule::Held(..) => handed.push_back((seq, to_stub)),
                }
            }
            match &mut self.ack {
                AckRule::Delivered => settles.drain(..).for_each(|s| s.fire()),
                AckRule::Held(held, _) => {
                    let upto = *held.borrow_and_update();
                    self.release(&mut handed, upto).await;
                }
            }
        }
    }

    /// Acknowledges the outbox up to the last frame of `handed` that needs nothing more:
    /// answered here, or held by the stub (`upto`).
    async fn release(&self, handed: &mut VecDeque<(u64, bool)>, upto: u64) {
        let mut last = None;
        while let Some(&(seq, to_stub)) = handed.front() {
            if to_stub && seq > upto {
                break;
            }
            last = Some(seq);
            handed.pop_front();
        }
        if let Some(seq) = last {
            self.bus.ack(&self.session, seq).await;
        }
    }

    fn switch(&mut self, swap: Swap) {
        self.target = swap.target;
        // The follower may have given up waiting (shutdown): nothing to tell then.
        let _ = swap.done.send(());
    }

    /// Puts `env` in the serving instance's mailbox, waiting while it is full (a swap meanwhile
    /// redirects it to the new instance). `None` if the pump was cancelled meanwhile (the frame
    /// stays in the outbox).
    async fn deliver(&mut self, env: Envelope) -> Option<Handed> {
        let mut env = env;
        loop {
            let target = &self.target;
            if target.mailbox.breaker() == BreakerState::Open {
                return self.answer(env, LostReason::Unavailable).await;
            }
            // Its listeners, and the addresses its session subscribed to (the registry
            // connector follows runtimes' `/status` this way).
            if !env
                .to()
                .any(|to| target.port.listens(to) || subscribes(&self.session, to))
            {
                return self.answer(env, LostReason::NotListening).await;
            }
            match target.mailbox.deliver(env) {
                Ok(()) => return Some(Handed::ToStub),
                Err((Refused::MailboxFull, back)) => {
                    env = back;
                    tokio::select! {
                        () = self.cancel.cancelled() => return None,
                        () = tokio::time::sleep(RETRY) => {}
                        Some(swap) = self.swaps.recv() => self.switch(swap),
                    }
                }
                Err((_, back)) => return self.answer(back, LostReason::Unavailable).await,
            }
        }
    }

    /// Answers `env` here, as lost for `reason`, once the router has room for the answer
    /// ([`NodePort::answer_lost`]). `None` if the pump was cancelled meanwhile (the frame stays
    /// in the outbox).
    async fn answer(&self, env: Envelope, reason: LostReason) -> Option<Handed> {
        tokio::select! {
            () = self.cancel.cancelled() => None,
            () = self.target.port.answer_lost(env, reason) => Some(Handed::Answered),
        }
    }
}

/// With [`AckRule::Held`], the next raise of what the stub holds (`None` once its store is
/// gone); with [`AckRule::Delivered`], never.
async fn held_changed(ack: &mut AckRule) -> Option<u64> {
    match ack {
        AckRule::Delivered => std::future::pending().await,
        AckRule::Held(held, _) => {
            held.changed().await.ok()?;
            Some(*held.borrow_and_update())
        }
    }
}
