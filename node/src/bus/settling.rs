//! The end of a route: its frames settling (each written to its recipient's socket or
//! committed), then the Matrix bridge's events, in that order. [`Bus::route`] waits for it
//! before it returns, so a runtime's next frame is read only once the previous one's frames are
//! settled. A stub's router (`crate::stubhost`), whose sender already let go of its messages,
//! keeps routing while earlier ones settle ([`Bus::route_unsettled`]), waiting for them in order
//! within a bound, so one stub answering many runtimes is not paced by one hand-off to a
//! recipient's connection per message. A node session's message numbered with a `cseq`
//! (`handled.rs`) settles in one transaction with its `cseq`, and its held frames are released
//! once settled, before the bridge's events.

use std::time::Instant;

use tokio::sync::oneshot;

use super::bridge::BridgeEvent;
use super::handled::Handled;
use super::{Bus, Pending};
use crate::store::StoreOp;

/// What is left of a route once its frames are in their outboxes: [`Settling::wait`].
#[derive(Debug)]
#[must_use = "a route is complete only once its frames settled and its bridge events were handed over"]
pub struct Settling {
    bus: Bus,
    /// When the route started, for `rethink_route_latency` (taken once observed; `None` for
    /// the node's own publications).
    started: Option<Instant>,
    /// Not yet settled, last first.
    settled: Vec<oneshot::Receiver<()>>,
    /// For the Matrix bridge, in order.
    bridge: Vec<BridgeEvent>,
    /// A node session's message: its held frames, released once settled.
    handled: Option<Handled>,
}

impl Bus {
    /// Submits `pending`'s store writes, in order, and returns the rest of the route.
    /// A node session's message (`pending.handled`) is one transaction with its `cseq`.
    pub(super) async fn settling(&self, pending: Pending, started: Option<Instant>) -> Settling {
        match &pending.handled {
            Some(h) => {
                let mut ops = pending.ops;
                ops.push(h.op());
                self.submit(StoreOp::Group(ops)).await;
            }
            None => {
                for op in pending.ops {
                    self.submit(op).await;
                }
            }
        }
        let mut settled = pending.settled;
        settled.reverse();
        Settling {
            bus: self.clone(),
            started,
            settled,
            bridge: pending.bridge,
            handled: pending.handled,
        }
    }
}

impl Settling {
    /// Waits for every frame to settle, then hands the bridge's events over. Cancel safe: what
    /// was done is not done again by the next call.
    pub async fn wait(mut self) {
        self.wait_mut().await;
    }

    /// As [`Settling::wait`], by reference (for `select!`).
    pub async fn wait_mut(&mut self) {
        while let Some(rx) = self.settled.last_mut() {
            // An error means the writer stopped; it has logged why.
            let _ = rx.await;
            self.settled.pop();
        }
        if let Some(h) = self.handled.take() {
            h.release();
        }
        if let Some(bridge) = &self.bus.inner.bridge {
            while !self.bridge.is_empty() {
                match bridge.reserve().await {
                    Ok(permit) => permit.send(self.bridge.remove(0)),
                    Err(_) => {
                        tracing::error!("the Matrix bridge has stopped; a bridged message is lost");
                        self.bridge.clear();
                    }
                }
            }
        }
        if let Some(started) = self.started.take() {
            self.bus
                .inner
                .metrics
                .route_latency
                .observe(started.elapsed().as_secs_f64());
        }
    }
}

impl Settling {
    /// Whether events for the Matrix bridge are left (their order is the route's order: such a
    /// route is waited for in line, not in a task of its own).
    pub(super) fn has_bridge_events(&self) -> bool {
        !self.bridge.is_empty()
    }
}
