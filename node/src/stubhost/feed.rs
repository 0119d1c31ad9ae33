//! The event feed of a connector's `on-event`: one task per connector with a Matrix side
//! ([`feed`]) reads the room stream after the connector's *feed position*, keeps the events that
//! concern it (the interest rule of external services, `appservice::interest`) and gives each,
//! with its stream position, to the current instance's [`MatrixEvents`] queue (whose `send`
//! waits while it is full: the feeder stays behind, nothing is dropped). An instance replaced
//! (a new catalogue version) handles what it queued, and the feeder goes on with the new one.
//!
//! The position is durable ([`FeedPositions`], in the stubs' key-value store under the
//! reserved namespace [`FEED_NAMESPACE`]): the stub host acknowledges each event once its
//! `on-event` returned (or once it was skipped as poisonous, `rethink_stubs::MAX_EVENT_TRIES`),
//! and the position is stored before the instance's next call. At start the feed goes on
//! after the stored position, so events committed but not yet handled when the node stopped
//! (or was killed) are given then: at least once, in stream order. A connector's first start
//! stores the stream's position of that moment (history before it is not fed).
//!
//! In a cluster (the positions in the shared database) one node feeds each connector: the
//! holder of the advisory lock `rethink.connector-feed.<name>` (`appservice/leader.rs`); when it
//! stops or dies another node takes the lock and goes on from the stored position.

use std::sync::Arc;

use rethink_stubs::{KvStore, MatrixEvent, MatrixEvents};
use tokio_util::sync::CancellationToken;

use super::NodeMatrix;
use crate::appservice::interest::Interest;
use crate::config::registration_id;
use crate::node::Node;

/// Most room events read from the stream at once by a feeder.
const FEED_BATCH: u32 = 100;

/// The namespace of the stubs' key-value store holding each connector's feed position (a
/// name no stub instance can have: instance names are TOML keys, and this one is reserved).
pub(super) const FEED_NAMESPACE: &str = "@connector-feed";

/// Where the connectors' feed positions are kept.
#[derive(Debug, Clone)]
pub(super) struct FeedPositions {
    kv: Arc<dyn KvStore>,
}

impl FeedPositions {
    pub(super) fn new(kv: Arc<dyn KvStore>) -> Self {
        Self { kv }
    }

    /// The stream position of the last event `connector` handled, if one is stored.
    pub(super) async fn load(&self, connector: &str) -> Option<i64> {
        let bytes = self.kv.get(FEED_NAMESPACE, connector).await?;
        std::str::from_utf8(&bytes).ok()?.parse().ok()
    }

    /// Stores `position` as `connector`'s (logged if the store refuses: the events after the
    /// stored one are then given again at the next start).
    pub(super) async fn store(&self, connector: &str, position: i64) {
        let value = position.to_string().into_bytes();
        if let Err(e) = self
            .kv
            .set(FEED_NAMESPACE, connector, value, usize::MAX)
            .await
        {
            tracing::error!(connector, position, code = e.code, error = %e.description, "connector feed: the position was not stored");
        }
    }
}

/// Feeds `connector`'s instances from its stored position until `stop` (the node stops, or
/// in a cluster another node took the feed over).
pub(super) async fn feed(
    matrix: Arc<NodeMatrix>,
    node: Node,
    connector: String,
    stop: CancellationToken,
) {
    let id = registration_id(&connector);
    let mut pos = match matrix.positions.load(&connector).await {
        Some(p) => p,
        None => {
            let p = node.stream().visible();
            matrix.positions.store(&connector, p).await;
            p
        }
    };
    tracing::info!(connector, position = pos, "connector feed starts");
    loop {
        let commit = node.stream().next_commit();
        let visible = node.stream().visible();
        while pos < visible {
            let Some(service) = node.appservices().directory().by_id(&id).cloned() else {
                return;
            };
            let server = node.appservices().server_name().to_string();
            let mut interest = Interest::new(&service, node.rooms(), &server);
            let events = match node
                .rooms()
                .store()
                .events_between(pos, visible, FEED_BATCH)
                .await
            {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(connector, error = %e, "connector feed: reading events");
                    break;
                }
            };
            pos = match events.last() {
                Some(last) if events.len() >= FEED_BATCH as usize => last.stream,
                _ => visible,
            };
            for pdu in &events {
                match interest.concerns(pdu).await {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(e) => {
                        tracing::warn!(connector, error = %e, "connector feed: interest");
                        continue;
                    }
                }
                let event = MatrixEvent {
                    position: u64::try_from(pdu.stream).unwrap_or(0),
                    json: pdu.to_client::<()>(None, true).into_json().get().to_owned(),
                };
                if !deliver(&matrix, &connector, event, &stop).await {
                    return;
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = commit => {}
        }
    }
}

/// Gives `event` to the connector's current instance, waiting while its queue is full; after a
/// replacement of the instance (its queue closed), to the new one. `false` once the connector
/// or the node stopped.
async fn deliver(
    matrix: &NodeMatrix,
    connector: &str,
    event: MatrixEvent,
    stop: &CancellationToken,
) -> bool {
    let mut last: Option<MatrixEvents> = None;
    loop {
        let Some(queue) = matrix.queue(connector) else {
            return false;
        };
        if last.as_ref().is_some_and(|l| l.same_queue(&queue)) {
            tracing::warn!(connector, "connector feed: the connector stopped");
            return false;
        }
        tokio::select! {
            () = stop.cancelled() => return false,
            sent = queue.send(event.clone()) => if sent.is_ok() {
                return true;
            },
        }
        last = Some(queue);
    }
}
