//! One node at a time does a duty of the whole cluster: pushing an application service's
//! transactions, feeding a connector its Matrix events. The nodes share the rooms, the stream,
//! the services' transaction queues and the connectors' feed positions (one PostgreSQL
//! database), so every node would otherwise push the same events to each service, and every
//! node's instance of a connector would handle each event. A node does the duty only while it
//! holds the PostgreSQL advisory lock named after it (`rethink.appservice.<id>`,
//! `rethink.connector-feed.<name>`), on a connection of its own taken out of the pool: a node
//! that stops or dies closes that connection, and the lock passes to a waiting node, which
//! continues from the shared database (the queue; the feed's stored position). The held
//! connection is checked every [`CHECK_EVERY`] (a check that takes longer than
//! [`CHECK_TIMEOUT`] counts as lost); when it is lost (the database restarted, the backend was
//! terminated), the node stops and queues for the lock again.
//!
//! The lock passes at once to a waiting node when the holder's backend ends, but the former
//! holder learns it only at its next check, and goes on meanwhile (its duty works on pool
//! connections of its own). So a node that takes the lock after another node held it waits
//! [`TAKE_OVER_AFTER`] more (longer than a check's period and time-out together) before it
//! starts: by then a former holder that is still alive has noticed and stopped, and the duty is
//! not done by two nodes at once (each event pushed or fed by one of them:
//! `tests/it/cluster_leader.rs`). Who held it last is recorded with the lock, in `duty_holders`
//! (`pg_migrations/0014`): so this holds also for a node that found the lock free because it
//! started just after the holder's backend ended. A node that takes a duty no other node held
//! last starts at once (the cluster's first node; a node taking its own duty back): a duty's
//! first start fixes where it begins in the stream, which a delay would move.
//! Left open: the lock is a lease, not a fence (the duty's own writes carry no token). A holder
//! paused for longer than `TAKE_OVER_AFTER` after its backend ended (SIGSTOP, a frozen VM) may
//! still act once more when it resumes, before its next check.

use std::future::Future;
use std::time::Duration;

use sqlx::postgres::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

/// How often the holder checks that its lock connection is alive.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long a check may take before the lock counts as lost.
const CHECK_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a node that took the lock waits before doing the duty: a former holder notices
/// its loss within `CHECK_EVERY + CHECK_TIMEOUT`.
const TAKE_OVER_AFTER: Duration = Duration::from_secs(2);
/// Wait before asking for the lock again after a failure.
const RETRY: Duration = Duration::from_millis(500);

/// Where the duties' locks are taken: the cluster's database, and this node's id (recorded
/// with each lock it takes).
#[derive(Debug, Clone)]
pub struct Leader {
    pub pool: PgPool,
    pub node: String,
}

/// Runs `push(stop)` while this node holds the lock `key` (e.g. `rethink.appservice.<id>`),
/// from the first time it gets it until `stop`; while another node holds it, waits.
pub(crate) async fn while_held<F, Fut>(
    leader: Leader,
    key: String,
    stop: CancellationToken,
    push: F,
) where
    F: Fn(CancellationToken) -> Fut,
    Fut: Future<Output = ()>,
{
    while !stop.is_cancelled() {
        let (mut held, after_another) = tokio::select! {
            _ = stop.cancelled() => return,
            held = lock(&leader, &key) => match held {
                Ok(held) => held,
                Err(e) => {
                    tracing::warn!(duty = %key, error = %e, "cluster: cannot take a duty's lock; retrying");
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            },
        };
        // A former holder may not have noticed its loss yet (see the module's docs).
        if after_another {
            tokio::select! {
                _ = stop.cancelled() => return,
                () = tokio::time::sleep(TAKE_OVER_AFTER) => {}
            }
        }
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
/// session holds it), and whether another node held it last (or held it while this one
/// waited).
async fn lock(leader: &Leader, key: &str) -> Result<(PgConnection, bool), sqlx::Error> {
    // Out of the pool: dropped (closed) rather than returned with the lock still held.
    let mut conn = leader.pool.acquire().await?.detach();
    let free: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
        .bind(key)
        .fetch_one(&mut conn)
        .await?;
    if !free {
        sqlx::query("SELECT pg_advisory_lock(hashtextextended($1, 0))")
            .bind(key)
            .execute(&mut conn)
            .await?;
    }
    // Under the lock: the holder last recorded, replaced by this node.
    let former: Option<String> = sqlx::query_scalar(
        "WITH former AS (SELECT node FROM duty_holders WHERE duty = $1), \
         mine AS (INSERT INTO duty_holders (duty, node) VALUES ($1, $2) \
             ON CONFLICT (duty) DO UPDATE SET node = EXCLUDED.node) \
         SELECT node FROM former",
    )
    .bind(key)
    .bind(&leader.node)
    .fetch_optional(&mut conn)
    .await?;
    let another = former.is_some_and(|n| n != leader.node);
    Ok((conn, !free || another))
}

/// Resolves when the held connection fails or does not answer a check within
/// [`CHECK_TIMEOUT`].
async fn watch(conn: &mut PgConnection) -> sqlx::Error {
    loop {
        tokio::time::sleep(CHECK_EVERY).await;
        let check = sqlx::query("SELECT 1").execute(&mut *conn);
        match tokio::time::timeout(CHECK_TIMEOUT, check).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return e,
            Err(_) => {
                let late = "the lock connection did not answer a check in time";
                return sqlx::Error::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, late));
            }
        }
    }
}
