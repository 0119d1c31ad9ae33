//! [`NodePort`]: the bus as the stub host sees it. A stub's sends and the answers owed for
//! messages lost with a crashed instance go, through bounded queues, to the stub's router task
//! (`super::route_stub`), which passes them through `Bus::authorize` / `route` with the stub's
//! session as origin. Listeners are kept here; the pump delivers only messages for an address
//! at or below one of them. The stub is given another message once its outgoing queue has
//! room for the answers ([`BusPort::ready`]), unless the router is stuck answering the stub.

use std::sync::Mutex;

use rethink_proto::Envelope;
use rethink_stubs::{BoxFuture, BusPort, Failure, LostReason};
use tokio::sync::{mpsc, watch};

use crate::locks::lock;

/// Free places of the outgoing queue a stub needs before it is given another message
/// ([`BusPort::ready`]): room for the answers of one call (a call that sends more still gets
/// 503 for the sends past the queue's bound).
const ROOM: usize = 32;

/// Answers owed for lost messages that may wait for the router (see [`NodePort::answer_lost`]).
const LOST: usize = 1024;

/// Logs an answer owed that nobody will send: the stub's router has stopped (the node stops).
fn router_gone() {
    tracing::warn!("a stub's router has stopped: a lost message is not answered");
}

/// The sending side of the queue of answers owed for lost messages.
pub(crate) type LostTx = mpsc::Sender<Outgoing>;
/// The router's side of it.
pub(crate) type LostRx = mpsc::Receiver<Outgoing>;

/// A stub's queue of answers owed for lost messages (every version's port sends into it).
pub(crate) fn lost_queue() -> (LostTx, LostRx) {
    mpsc::channel(LOST)
}

/// The sending side of a stub's outgoing queue (cheap to clone: every version's port sends
/// into the same queue), with the router's word that it is stuck.
#[derive(Debug, Clone)]
pub(crate) struct Queue {
    tx: mpsc::Sender<Outgoing>,
    stuck: watch::Receiver<bool>,
}

/// The router's side of a stub's outgoing queue.
#[derive(Debug)]
pub(crate) struct QueueRx {
    pub(crate) rx: mpsc::Receiver<Outgoing>,
    /// True while the router waits for room in the stub's own outbox (to answer the stub): the
    /// stub is then fed without waiting for room ([`BusPort::ready`]), else the router (waiting
    /// for the pump), the pump (waiting for the mailbox) and the stub (waiting for the router)
    /// would wait for each other.
    pub(crate) stuck: watch::Sender<bool>,
}

/// A stub's outgoing queue of `size` messages.
pub(crate) fn outgoing(size: usize) -> (Queue, QueueRx) {
    let (tx, rx) = mpsc::channel(size);
    let (stuck_tx, stuck) = watch::channel(false);
    (
        Queue { tx, stuck },
        QueueRx {
            rx,
            stuck: stuck_tx,
        },
    )
}

/// Something for the stub's router task.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// A message the stub sent.
    Send(Envelope),
    /// A message accepted by the stub and lost: its sender is owed an answer.
    Lost(Envelope, LostReason),
}

/// The port of one running stub.
#[derive(Debug)]
pub(crate) struct NodePort {
    sends: Queue,
    lost: LostTx,
    /// What the stub listens on: addresses (and those below them), or patterns of its
    /// namespaces (`rethink_proto::AddressPattern`).
    listeners: Mutex<Vec<(String, Option<rethink_proto::AddressPattern>)>>,
}

impl NodePort {
    pub(crate) fn new(sends: Queue, lost: LostTx) -> Self {
        Self {
            sends,
            lost,
            listeners: Mutex::new(Vec::new()),
        }
    }

    /// Whether some listener covers `address` (is it, or above it, or a pattern matching it).
    pub(crate) fn listens(&self, address: &str) -> bool {
        lock(&self.listeners)
            .iter()
            .any(|(l, pattern)| match pattern {
                Some(p) => p.matches(address),
                None => {
                    address == l
                        || address
                            .strip_prefix(l.as_str())
                            .is_some_and(|rest| l.ends_with('/') || rest.starts_with('/'))
                }
            })
    }

    /// Reports `message` lost with an instance (the stub host's word, which cannot wait): queued,
    /// or, the queue being full, handed over by a task of its own. Such messages are few: only
    /// those an instance's mailbox had taken.
    pub(crate) fn report_lost(&self, message: Envelope, reason: LostReason) {
        match self.lost.try_send(Outgoing::Lost(message, reason)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(item)) => {
                let lost = self.lost.clone();
                tokio::spawn(async move {
                    if lost.send(item).await.is_err() {
                        router_gone();
                    }
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                router_gone();
            }
        }
    }

    /// Answers `message` as lost for the pump (the stub did not take it: breaker open, not
    /// listened to, gone), once the queue has room: meanwhile the pump takes no more frames, which
    /// wait in the stub's outbox, so the answers owed stay within [`LOST`] however fast senders
    /// send. Not while the router is stuck answering the stub ([`QueueRx::stuck`]): it waits for
    /// the pump then.
    pub(crate) async fn answer_lost(&self, message: Envelope, reason: LostReason) {
        let mut stuck = self.sends.stuck.clone();
        tokio::select! {
            permit = self.lost.reserve() => match permit {
                Ok(permit) => permit.send(Outgoing::Lost(message, reason)),
                Err(_) => {
                    router_gone();
                }
            },
            _ = stuck.wait_for(|s| *s) => self.report_lost(message, reason),
        }
    }
}

impl BusPort for NodePort {
    fn send(&self, stub: &str, message: Envelope) -> Result<(), Failure> {
        self.sends
            .tx
            .try_send(Outgoing::Send(message))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => Failure::new(
                    503,
                    format!("stub {stub}: the outgoing queue is full, try again later"),
                ),
                mpsc::error::TrySendError::Closed(_) => {
                    Failure::new(503, format!("stub {stub}: the node is stopping"))
                }
            })
    }

    fn add_listener(&self, _stub: &str, address: &str) -> Result<(), Failure> {
        // The host let only the stub's own patterns through as written.
        let pattern = if rethink_proto::AddressPattern::is_pattern(address) {
            Some(
                rethink_proto::AddressPattern::parse(address)
                    .map_err(|e| Failure::new(400, format!("listener {address}: {e}")))?,
            )
        } else {
            None
        };
        let mut l = lock(&self.listeners);
        if !l.iter().any(|(a, _)| a == address) {
            l.push((address.to_owned(), pattern));
        }
        Ok(())
    }

    fn remove_listener(&self, _stub: &str, address: &str) {
        lock(&self.listeners).retain(|(a, _)| a != address);
    }

    fn lost(&self, _stub: &str, message: Envelope, reason: LostReason) {
        self.report_lost(message, reason);
    }

    /// Waits until the outgoing queue has [`ROOM`] free places (the router frees them as it
    /// routes). The places are reserved only while waiting, then given back: the stub's sends
    /// take them. At once with the router gone (the node stopping: sends are refused then) or
    /// stuck answering the stub ([`QueueRx::stuck`]).
    fn ready<'a>(&'a self, _stub: &'a str) -> BoxFuture<'a, ()> {
        let sends = &self.sends;
        let room = ROOM.min(sends.tx.max_capacity());
        if sends.tx.capacity() >= room || *sends.stuck.borrow() {
            return Box::pin(std::future::ready(()));
        }
        let mut stuck = sends.stuck.clone();
        Box::pin(async move {
            // Dropping the permits gives the places back.
            tokio::select! {
                _ = sends.tx.reserve_many(room) => {}
                _ = stuck.wait_for(|s| *s) => {}
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    fn message() -> Envelope {
        Envelope::parse(r#"{"id":1,"type":"read","from":"hyperty://a/x","to":"hyperty://a/y"}"#)
            .expect("a message")
    }

    #[tokio::test]
    async fn the_pump_waits_for_room_for_its_answers_unless_the_router_is_stuck() {
        let (sends, queue) = outgoing(8);
        let (lost, mut router) = lost_queue();
        let port = NodePort::new(sends, lost);
        // (`unconstrained`: tokio's co-operative budget would make the 129th reserve yield.)
        for _ in 0..LOST {
            tokio::task::unconstrained(port.answer_lost(message(), LostReason::NotListening))
                .now_or_never()
                .expect("room for the answer");
        }
        // Full: the next answer waits (and the pump with it) ...
        let mut next = Box::pin(tokio::task::unconstrained(
            port.answer_lost(message(), LostReason::NotListening),
        ));
        assert!((&mut next).now_or_never().is_none(), "waits for the router");
        // ... until the router takes one.
        assert!(router.recv().await.is_some());
        next.await;
        assert_eq!(router.len(), LOST);
        // The router stuck answering the stub waits for the pump: the pump does not wait for it.
        queue.stuck.send_replace(true);
        tokio::task::unconstrained(port.answer_lost(message(), LostReason::NotListening))
            .now_or_never()
            .expect("no wait while the router is stuck");
        // That answer is handed over once there is room.
        for _ in 0..=LOST {
            assert!(router.recv().await.is_some());
        }
    }
}
