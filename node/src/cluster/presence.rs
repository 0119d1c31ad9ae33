//! Presence across the nodes: each node keeps its own view of who is syncing and active
//! (`userdata::Presence`); what it tells the others (the users with a `/sync` in progress on it,
//! every sweep; each presence it stored) is published on [`PRESENCE_SUBJECT`], and every other
//! node applies it to its own view (`notices.rs`), so that a user syncing through one node does
//! not time out on another. A lost notice is made good by the next sweep's.

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::userdata::Presence;

/// The NATS subject of presence notices.
pub const PRESENCE_SUBJECT: &str = "rethink.matrix.presence";

/// Starts publishing this node's presence notices and applying the other nodes'.
pub(super) async fn follow(
    nats: async_nats::Client,
    node: Arc<str>,
    presence: Presence,
    stop: CancellationToken,
) -> Result<Vec<JoinHandle<()>>, async_nats::SubscribeError> {
    let own = presence.announce();
    super::notices::relay(
        nats,
        node,
        PRESENCE_SUBJECT,
        own,
        move |n| presence.apply_remote(n),
        stop,
    )
    .await
}
