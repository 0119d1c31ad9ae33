//! Typing notifications across the nodes: each node keeps its own typing state in memory
//! (`userdata::Typing`); a change made through one node is published on [`TYPING_SUBJECT`] and
//! every other node applies it to its own state, waking its `/sync` requests for the room
//! (`notices.rs`). A lost notice loses that typing change on the other nodes (typing is
//! ephemeral; the next renewal, a few seconds later with most clients, restores it).

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::userdata::Typing;

/// The NATS subject of typing notices.
pub const TYPING_SUBJECT: &str = "rethink.matrix.typing";

/// Starts publishing this node's typing changes and applying the other nodes'.
pub(super) async fn follow(
    nats: async_nats::Client,
    node: Arc<str>,
    typing: Typing,
    stop: CancellationToken,
) -> Result<Vec<JoinHandle<()>>, async_nats::SubscribeError> {
    let own = typing.announce();
    super::notices::relay(
        nats,
        node,
        TYPING_SUBJECT,
        own,
        move |n| typing.apply_remote(n),
        stop,
    )
    .await
}
