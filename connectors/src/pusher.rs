//! The pusher: one task per service with a `url`, delivering its persisted transactions in
//! order, one at a time, with exponential backoff while the service fails; when none is left
//! it asks the queue to make the next one from what happened since, or waits for news.
//!
//! The queue ([`TxnQueue`]) is the node's: it stores transactions and the stream position they
//! were made up to in one commit, so that after a restart (or a kill) the pusher resends the
//! oldest undelivered transaction under the same ID and never makes another transaction with
//! an ID already used.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::directory::AppService;

/// A stored transaction, ready to push.
#[derive(Debug, Clone)]
pub struct QueuedTxn {
    /// Increasing per service, never reused.
    pub txn_id: i64,
    /// The JSON body: `{"events": [...], "ephemeral": [...]}`.
    pub body: String,
    /// How many events and ephemeral events it holds.
    pub items: usize,
}

/// The node's side of a service's queue.
pub trait TxnQueue: Send + Sync + 'static {
    type Error: std::error::Error + Send + Sync + 'static;

    /// The oldest undelivered transaction.
    fn oldest(&self) -> impl Future<Output = Result<Option<QueuedTxn>, Self::Error>> + Send;

    /// Forgets a delivered transaction.
    fn delivered(&self, txn_id: i64) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Makes the next transaction from what happened since the last one, if anything concerns
    /// the service. `Ok(true)` if there may be more to look at at once.
    fn fill(&self) -> impl Future<Output = Result<bool, Self::Error>> + Send;

    /// Resolves when something new may have happened (a commit, a typing change...).
    fn changed(&self) -> impl Future<Output = ()> + Send;
}

/// Backoff between failed attempts: doubles from `initial` up to `max`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The wait after `failures` failures in a row (1 or more).
    pub fn delay(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(20);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// What the pusher reports as it goes (the node turns it into metrics and logs).
pub trait PushObserver: Send + Sync + 'static {
    fn pushed(&self, service: &str, txn: &QueuedTxn);
    fn failed(&self, service: &str, txn_id: i64, error: &crate::client::ClientError);
}

/// Runs until `shutdown`: delivers the queue of `service` (which must have a client).
pub async fn run<Q: TxnQueue, O: PushObserver>(
    service: Arc<AppService>,
    queue: Q,
    observer: O,
    backoff: Backoff,
    shutdown: CancellationToken,
) {
    let Some(client) = service.client.as_ref() else {
        return;
    };
    let id = service.id().to_owned();
    let mut failures: u32 = 0;
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let next = match queue.oldest().await {
            Ok(next) => next,
            Err(e) => {
                tracing::error!(service = %id, error = %e, "application service queue unreadable");
                failures += 1;
                if pause(&shutdown, backoff.delay(failures)).await {
                    return;
                }
                continue;
            }
        };
        let Some(txn) = next else {
            // Register for news before looking, so that a commit in between is not missed.
            let changed = queue.changed();
            tokio::pin!(changed);
            match queue.fill().await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(service = %id, error = %e, "making a transaction failed");
                    failures += 1;
                    if pause(&shutdown, backoff.delay(failures)).await {
                        return;
                    }
                    continue;
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = &mut changed => {}
            }
            continue;
        };
        let txn_id = txn.txn_id.to_string();
        let sent = tokio::select! {
            _ = shutdown.cancelled() => return,
            sent = client.push(&txn_id, &txn.body) => sent,
        };
        match sent {
            Ok(()) => {
                failures = 0;
                observer.pushed(&id, &txn);
                if let Err(e) = queue.delivered(txn.txn_id).await {
                    tracing::error!(service = %id, error = %e, "cannot record a delivered transaction");
                }
            }
            Err(e) => {
                failures += 1;
                observer.failed(&id, txn.txn_id, &e);
                let delay = backoff.delay(failures);
                tracing::warn!(service = %id, txn = txn.txn_id, error = %e, ?delay,
                    "transaction not delivered; retrying");
                if pause(&shutdown, delay).await {
                    return;
                }
            }
        }
    }
}

/// Sleeps `delay`; `true` if shutdown came first.
async fn pause(shutdown: &CancellationToken, delay: Duration) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(delay) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        assert_eq!(b.delay(1), Duration::from_millis(100));
        assert_eq!(b.delay(2), Duration::from_millis(200));
        assert_eq!(b.delay(4), Duration::from_millis(800));
        assert_eq!(b.delay(5), Duration::from_secs(1));
        assert_eq!(b.delay(500), Duration::from_secs(1));
    }
}
