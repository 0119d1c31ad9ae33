//! One node at a time does a duty of the whole cluster: pushing an application service's
//! transactions, feeding a connector its Matrix events. The nodes share the rooms, the stream,
//! the services' transaction queues and the connectors' feed positions (one PostgreSQL
//! database), so every node would otherwise push the same events to each service, and every
//! node's instance of a connector would handle each event. A node does the duty only while it
//! holds the PostgreSQL advisory lock named after it (`rethink.appservice.<id>`,
//! `rethink.connector-feed.<name>`), on a connection of its own taken out of the pool: a node
//! that stops or dies closes that connection, and the lock passes to a waiting node, which
//! continues from the shared database (the queue; the feed's stored position). The held
//! connection is checked every [`CHECK_EVERY`]; when it is lost (the database restarted), the
//! node stops and queues for the lock again.

use std::future::Future;
use std::time::Duration;

use sqlx::postgres::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

/// How often the holder checks that its lock connection is alive.
pub(super) const CHECK_EVERY: Duration = Duration::from_secs(2);
/// Wait before asking for the lock again after a failure.
const RETRY: Duration = Duration::from_millis(500);

/// Runs `push(stop)` while this node holds the lock `key` (e.g. `rethink.appservice.<id>`),
/// from the first time it gets it until `stop`; while another node holds it, waits.
pub(crate) async fn while_held<F, Fut>(pool: PgPool, key: String, stop: CancellationToken, push: F)
where
    F: Fn(CancellationToken) -> Fut,
    Fut: Future<Output = ()>,
{
    while !stop.is_cancelled() {
        let mut held = tokio::select! {
            _ = stop.cancelled() => return,
            held = lock(&pool, &key) => match held {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(duty = %key, error = %e, "cluster: cannot take a duty's lock; retrying");
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            },
        };
        tracing::info!(duty = %key, "cluster: this node holds the duty");
        let pushing = stop.child_token();
        tokio::select! {
            _ = push(pushing.clone()) => return,
            lost = watch(&mut held) => {
                pushing.cancel();
                tracing::warn!(duty = %key, error = %lost, "cluster: a duty's lock was lost; waiting for it again");
            }
        }
    }
}

/// A connection of its own holding the lock `key` (waits in the database while another
/// session holds it).
async fn lock(pool: &PgPool, key: &str) -> Result<PgConnection, sqlx::Error> {
    // Out of the pool: dropped (closed) rather than returned with the lock still held.
    let mut conn = pool.acquire().await?.detach();
    sqlx::query("SELECT pg_advisory_lock(hashtextextended($1, 0))")
        .bind(key)
        .execute(&mut conn)
        .await?;
    Ok(conn)
}

/// Resolves when the held connection fails.
async fn watch(conn: &mut PgConnection) -> sqlx::Error {
    loop {
        tokio::time::sleep(CHECK_EVERY).await;
        if let Err(e) = sqlx::query("SELECT 1").execute(&mut *conn).await {
            return e;
        }
    }
}
