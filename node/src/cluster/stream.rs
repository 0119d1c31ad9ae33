//! The Matrix stream across the nodes: after each of its commits a node publishes its new head
//! on [`STREAM_SUBJECT`], and the other nodes' stream writers catch up with the positions they
//! did not write at once (`stream::remote`), which wakes their long-polling `/sync` requests.
//! The notices are only a doorbell: what changed is read from the shared database, and a writer
//! also checks the head by itself every second, so a lost notice delays a wake-up, it never
//! loses a change.

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::stream::StreamWriter;

/// The NATS subject of the stream notices (`<node id>\n<head>`).
pub const STREAM_SUBJECT: &str = "rethink.matrix.stream";

/// Starts publishing this node's commits and applying the other nodes' notices.
pub(super) async fn follow(
    nats: async_nats::Client,
    node: Arc<str>,
    stream: StreamWriter,
    stop: CancellationToken,
) -> Result<Vec<JoinHandle<()>>, async_nats::SubscribeError> {
    let mut notices = nats.subscribe(STREAM_SUBJECT).await?;
    let mut commits = stream.own_commits();
    let announcer = {
        let (node, stop) = (Arc::clone(&node), stop.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    changed = commits.changed() => if changed.is_err() { return },
                }
                // Coalesced: the latest head when this task gets to run.
                let head = *commits.borrow_and_update();
                let payload = format!("{node}\n{head}");
                if let Err(e) = nats.publish(STREAM_SUBJECT, payload.into()).await {
                    tracing::debug!(error = %e, "cluster: stream notice not published; the other nodes see the commit at their next check");
                }
            }
        })
    };
    let listener = tokio::spawn(async move {
        while let Some(message) = super::next_until(&mut notices, &stop).await {
            let from = message
                .payload
                .split(|b| *b == b'\n')
                .next()
                .unwrap_or_default();
            if from != node.as_bytes() {
                stream.poke_remote();
            }
        }
    });
    Ok(vec![announcer, listener])
}
