//! [`relay`]: what several `userdata` parts keep in memory per node and tell the other nodes of
//! a cluster (typing, `typing.rs`; presence, `presence.rs`): every node publishes its notices on
//! one shared subject per part, with its id in the payload, and the other nodes' notices on it
//! are applied here. NATS
//! without persistence: a lost notice is lost (each user of this says what makes it good), and
//! so is one dropped because the queue from its part was full (NATS down or slow: publishing
//! waits once the client's own queue is full).

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::Receiver;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

#[derive(Serialize, Deserialize)]
struct Published<N> {
    node: String,
    notice: N,
}

/// Publishes what `own` yields on `subject` and applies the other nodes' notices on it with
/// `apply`, until `stop`. `subject` names the notices in log lines.
pub(super) async fn relay<N>(
    nats: async_nats::Client,
    node: Arc<str>,
    subject: &'static str,
    own: Option<Receiver<N>>,
    apply: impl Fn(N) + Send + 'static,
    stop: CancellationToken,
) -> Result<Vec<JoinHandle<()>>, async_nats::SubscribeError>
where
    N: Serialize + DeserializeOwned + Send + 'static,
{
    let mut notices = nats.subscribe(subject).await?;
    let mut tasks = Vec::new();
    if let Some(mut own) = own {
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
                if let Err(e) = nats.publish(subject, payload.into()).await {
                    tracing::debug!(error = %e, subject, "cluster: a notice was not published");
                }
            }
        }));
    }
    tasks.push(tokio::spawn(async move {
        while let Some(message) = super::next_until(&mut notices, &stop).await {
            match serde_json::from_slice::<Published<N>>(&message.payload) {
                Ok(p) if *p.node != *node => apply(p.notice),
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, subject, "cluster: an unreadable notice was ignored");
                }
            }
        }
    }));
    Ok(tasks)
}
