//! Typing notifications across the nodes: each node keeps its own typing state in memory
//! (`userdata::Typing`); a change made through one node is published on [`TYPING_SUBJECT`] and
//! every other node applies it to its own state, waking its `/sync` requests for the room. A
//! lost notice loses that typing change on the other nodes (typing is ephemeral; the next
//! renewal, a few seconds later with most clients, restores it).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::userdata::{Typing, TypingNotice};

/// The NATS subject of typing notices.
pub const TYPING_SUBJECT: &str = "rethink.matrix.typing";

#[derive(Serialize, Deserialize)]
struct Published {
    node: String,
    #[serde(flatten)]
    notice: TypingNotice,
}

/// Starts publishing this node's typing changes and applying the other nodes'.
pub(super) async fn follow(
    nats: async_nats::Client,
    node: Arc<str>,
    typing: Typing,
    stop: CancellationToken,
) -> Result<Vec<JoinHandle<()>>, async_nats::SubscribeError> {
    let mut notices = nats.subscribe(TYPING_SUBJECT).await?;
    let mut tasks = Vec::new();
    if let Some(mut own) = typing.announce() {
        let (node, stop) = (Arc::clone(&node), stop.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let notice = tokio::select! {
                    _ = stop.cancelled() => return,
                    n = own.recv() => match n { Some(n) => n, None => return },
                };
                let published = Published {
                    node: node.to_string(),
                    notice,
                };
                let Ok(payload) = serde_json::to_vec(&published) else {
                    continue;
                };
                if let Err(e) = nats.publish(TYPING_SUBJECT, payload.into()).await {
                    tracing::debug!(error = %e, "cluster: typing notice not published");
                }
            }
        }));
    }
    tasks.push(tokio::spawn(async move {
        while let Some(message) = super::next_until(&mut notices, &stop).await {
            match serde_json::from_slice::<Published>(&message.payload) {
                Ok(p) if *p.node != *node => typing.apply_remote(p.notice),
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "cluster: unreadable typing notice ignored"),
            }
        }
    }));
    Ok(tasks)
}
