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
//! stores the stream's position of that moment (history before it is not fed). A read the
//! database does not answer (the position, the events, whether an event concerns the
//! connector: `RoomError::is_transient`) is tried again after a pause, from where it was: an
//! outage delays the feed and skips nothing. An event whose interest fails otherwise is skipped
//! (logged), as before.
//!
//! In a cluster (the positions in the shared database) one node feeds each connector: the
//! holder of the advisory lock `rethink.connector-feed.<name>` (`appservice/leader.rs`); when it
//! stops or dies another node takes the lock and goes on from the stored position.

use std::sync::Arc;

use rethink_stubs::{Failure, KvStore, MatrixEvent, MatrixEvents};
use tokio_util::sync::CancellationToken;

use super::NodeMatrix;
use crate::appservice::interest::Interest;
use crate::config::registration_id;
use crate::node::Node;

/// Most room events read from the stream at once by a feeder.
const FEED_BATCH: u32 = 100;

/// The pause before a read the database did not answer is tried again.
const RETRY: std::time::Duration = std::time::Duration::from_secs(1);

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

    /// The stream position of the last event `connector` handled, if one is stored; `Err`
    /// when the store could not answer (never taken for "none stored": that would start the
    /// feed at the stream's end and skip what the connector has not handled).
    pub(super) async fn load(&self, connector: &str) -> Result<Option<i64>, Failure> {
        let Some(bytes) = self.kv.get(FEED_NAMESPACE, connector).await? else {
            return Ok(None);
        };
        Ok(std::str::from_utf8(&bytes)
            .ok()
            .and_then(|s| s.parse().ok()))
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
    let Some(mut pos) = start_position(&matrix.positions, &connector, &stop, RETRY, || {
        node.stream().visible()
    })
    .await
    else {
        return;
    };
    tracing::info!(connector, position = pos, "connector feed starts");
    loop {
        let commit = node.stream().next_commit();
        let visible = node.stream().visible();
        // A read that failed (the database unreachable) is tried again after a pause, from
        // the event it was about: nothing is skipped.
        let mut failed = false;
        while pos < visible && !failed {
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
                    tracing::error!(connector, error = %e, "connector feed: reading events (tried again)");
                    failed = true;
                    break;
                }
            };
            let mut next = match events.last() {
                Some(last) if events.len() >= FEED_BATCH as usize => last.stream,
                _ => visible,
            };
            for pdu in &events {
                match interest.concerns(pdu).await {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(e) if e.is_transient() => {
                        tracing::warn!(connector, position = pdu.stream, error = %e, "connector feed: interest (tried again)");
                        next = pdu.stream - 1;
                        failed = true;
                        break;
                    }
                    Err(e) => {
                        // Not the database's outage: asking again would fail again and stop
                        // the feed for good.
                        tracing::error!(connector, position = pdu.stream, error = %e, "connector feed: whether the event concerns the connector cannot be told: skipped");
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
            pos = next;
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = commit, if !failed => {}
            () = tokio::time::sleep(RETRY), if failed => {}
        }
    }
}

/// Where `connector`'s feed starts: its stored position, or (first start) `visible()`, stored.
/// A store that cannot answer is asked again every `retry` until `stop` (`None`).
async fn start_position(
    positions: &FeedPositions,
    connector: &str,
    stop: &CancellationToken,
    retry: std::time::Duration,
    visible: impl Fn() -> i64,
) -> Option<i64> {
    loop {
        match positions.load(connector).await {
            Ok(Some(p)) => return Some(p),
            Ok(None) => {
                let p = visible();
                positions.store(connector, p).await;
                return Some(p);
            }
            Err(f) => {
                tracing::error!(connector, code = f.code, error = %f.description, "connector feed: its position could not be read (tried again)");
                tokio::select! {
                    () = stop.cancelled() => return None,
                    () = tokio::time::sleep(retry) => {}
                }
            }
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

#[cfg(test)]
mod tests {
    use rethink_stubs::FailingKv;

    use super::*;

    /// A stored position the store cannot read for a while is asked for again until it answers:
    /// it is not taken for "none stored" (which would start the feed at the stream's end,
    /// skipping the events after the stored position).
    #[tokio::test]
    async fn a_position_the_store_cannot_read_yet_is_asked_for_again() {
        let retry = std::time::Duration::from_millis(1);
        let kv = Arc::new(FailingKv::default());
        let positions = FeedPositions::new(Arc::clone(&kv) as Arc<dyn KvStore>);
        positions.store("c", 7).await;
        kv.fail_reads(2);
        let stop = CancellationToken::new();
        let start = start_position(&positions, "c", &stop, retry, || 99).await;
        assert_eq!(start, Some(7));
        assert_eq!(kv.reads_to_fail(), 0, "both failed reads were retried");
        // A first start (nothing stored) begins at the stream's end and stores it.
        assert_eq!(
            start_position(&positions, "new", &stop, retry, || 99).await,
            Some(99)
        );
        assert_eq!(positions.load("new").await, Ok(Some(99)));
    }
}
