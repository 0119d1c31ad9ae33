//! The address book's growth, told across the cluster: `announce` (the node that grew it asks
//! every other live node to forget its lookup answers, and waits for their replies) and
//! `listen` (this node's side: forget, then reply). See `book.rs` for why.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::link::Link;

/// How long a node waits for another live node to confirm it forgot its answers. A node
/// silent that long is stuck (it cannot route meanwhile either) or lost its connection (its
/// cache is off then, `book.rs`); the answers it may still keep live [`super::book::TTL`] at most.
const ANNOUNCE_TIMEOUT: Duration = Duration::from_millis(500);

/// The subject on which `node` hears that the address book grew.
pub(super) fn directory_subject(node: &str) -> String {
    format!("rethink.directory.{node}")
}

impl Link {
    /// Asks every other live node to forget its lookup answers, and returns once each replied
    /// (or has no listener, or did not answer within [`ANNOUNCE_TIMEOUT`]).
    pub(super) async fn announce_inner(&self) {
        let peers: Vec<String> = match sqlx::query_scalar(
            "SELECT node_id FROM cluster_nodes WHERE node_id <> $1 \
             AND heartbeat_at > now() - make_interval(secs => $2)",
        )
        .bind(&*self.node)
        .bind(self.membership_timeout.as_secs_f64())
        .fetch_all(&self.pool)
        .await
        {
            Ok(peers) => peers,
            Err(e) => {
                // The change itself is committed (so the database has it); the other nodes'
                // kept answers live `TTL` at most.
                tracing::warn!(error = %e, "cluster: the live nodes could not be read; the address book's growth is not announced");
                return;
            }
        };
        let asks = peers.iter().map(|peer| async move {
            let asked = self
                .nats
                .request(directory_subject(peer), Default::default());
            match tokio::time::timeout(ANNOUNCE_TIMEOUT, asked).await {
                Ok(Ok(_)) => {}
                // No listener: that node is not routing (stopped, or not started yet).
                Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, %peer, "cluster: the address book's growth was not confirmed");
                }
                Err(_) => {
                    tracing::warn!(%peer, "cluster: the address book's growth was not confirmed in time");
                }
            }
        });
        futures_util::future::join_all(asks).await;
    }

    /// Subscribes to this node's directory subject; the cache is used from then on.
    pub(super) async fn listen_directory(
        self: Arc<Self>,
        stop: CancellationToken,
    ) -> Result<tokio::task::JoinHandle<()>, async_nats::SubscribeError> {
        let mut subscriber = self.nats.subscribe(directory_subject(&self.node)).await?;
        self.cache.set_listening(true);
        Ok(tokio::spawn(async move {
            while let Some(message) = super::next_until(&mut subscriber, &stop).await {
                self.cache.forget_all();
                if let Some(reply) = message.reply
                    && let Err(e) = self.nats.publish(reply, Default::default()).await
                {
                    tracing::warn!(error = %e, "cluster: a directory notice was not answered");
                }
            }
            self.cache.set_listening(false);
        }))
    }
}
