//! One group commit of the stream writer, on either backend of the Matrix [`Db`].
//!
//! - **SQLite** (`rethink.db`, the writer's own one-connection pool): this node is the only
//!   writer of the file, so positions continue from the head the writer holds in memory. An op
//!   that [`needs_savepoint`](StreamOp::needs_savepoint) runs in a savepoint; an op of one
//!   statement does not (SQLite undoes a failed statement alone and keeps the transaction), so
//!   the message hot path costs no round trip more than its `INSERT`.
//! - **PostgreSQL** (`store.url`, possibly shared by the nodes of a cluster): the transaction
//!   FIRST locks the head row (`SELECT pos FROM stream_head WHERE id = 0 FOR UPDATE`) and takes
//!   the group's positions from it, not from memory. Until the commit no other writer (this
//!   node's or another node's) gets past that lock, so positions are handed out and committed in
//!   order across the nodes, and whoever reads committed rows up to a position sees every row
//!   below it. Every op runs in its own savepoint, whatever `needs_savepoint` says: PostgreSQL
//!   aborts the whole transaction at the first failed statement.
//!
//! The head locked on PostgreSQL can be above the head this node last committed: another node
//! committed the positions in between. [`Group::seen_head`] carries it back to the writer loop,
//! which catches up with them (`remote.rs`): for that, each group on PostgreSQL also writes what
//! each of its positions touched into `stream_log`.

use sqlx::Acquire as _;

use super::{Noop, Pending};
use crate::store::db::{Conn, Db};
use crate::store::{StoreError, StreamOp};

/// `stream_log` is pruned each time the head passes a multiple of this.
const PRUNE_EVERY: i64 = 4096;

/// The outcome of one committed group.
pub(super) struct Group {
    /// The head before the group: the one locked in the database on PostgreSQL (possibly above
    /// this node's previous head, when other nodes wrote since), this node's own on SQLite.
    pub(super) seen_head: i64,
    /// The head after the group (`seen_head` plus the ops that succeeded).
    pub(super) head: i64,
    /// Each op's position, or its error (it took no position).
    pub(super) results: Vec<Result<i64, StoreError>>,
}

/// Commits one group; `head` is this node's last committed position.
pub(super) async fn commit(
    db: &Db,
    batch: &mut [Pending],
    head: i64,
) -> Result<Group, sqlx::Error> {
    match db {
        Db::Sqlite(pool) => {
            let mut conn = pool.acquire().await?;
            let mut tx = conn.begin().await?;
            let mut results = Vec::with_capacity(batch.len());
            let mut pos = head;
            for pending in batch.iter_mut() {
                let op = take(pending);
                let applied = if op.needs_savepoint() {
                    let mut savepoint = tx.begin().await?;
                    let applied = op.apply(Conn::Sqlite(&mut savepoint), pos + 1).await;
                    match applied {
                        Ok(()) => savepoint.commit().await?,
                        Err(_) => savepoint.rollback().await?,
                    }
                    applied
                } else {
                    // One statement: a failure is undone by SQLite alone. An error that ends the
                    // whole transaction (I/O, full disk) makes the commit below fail, and with
                    // it the group.
                    op.apply(Conn::Sqlite(&mut tx), pos + 1).await
                };
                record(&mut results, &mut pos, applied);
            }
            sqlx::query(
                "INSERT INTO stream_head (id, pos) VALUES (0, $1) \
                 ON CONFLICT (id) DO UPDATE SET pos = excluded.pos",
            )
            .bind(pos)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(Group {
                seen_head: head,
                head: pos,
                results,
            })
        }
        Db::Postgres(pool) => {
            // First without savepoints (two round trips fewer per op), when every op can be
            // applied again: a failure then rolls the whole group back, and it runs once more
            // with a savepoint per op.
            let copies: Option<Vec<Box<dyn StreamOp>>> =
                batch.iter().map(|p| p.op.try_clone()).collect();
            if let Some(copies) = copies {
                match commit_pg(pool, batch, false).await? {
                    Some(group) => return Ok(group),
                    None => {
                        for (pending, copy) in batch.iter_mut().zip(copies) {
                            pending.op = copy;
                        }
                    }
                }
            }
            commit_pg(pool, batch, true)
                .await?
                .ok_or_else(|| sqlx::Error::Protocol("a group with savepoints gave up".into()))
        }
    }
}

/// One group on PostgreSQL. With `savepoints`, a failed op is rolled back alone; without, the
/// first failure rolls back the group and gives `None` (the ops are then spent).
async fn commit_pg(
    pool: &sqlx::PgPool,
    batch: &mut [Pending],
    savepoints: bool,
) -> Result<Option<Group>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // The lock that orders the writers of every node (pre-seeded row: see
    // pg_migrations/0010_matrix_rooms.sql).
    let seen_head: i64 = sqlx::query_scalar("SELECT pos FROM stream_head WHERE id = 0 FOR UPDATE")
        .fetch_one(&mut *tx)
        .await?;
    let mut results = Vec::with_capacity(batch.len());
    let mut pos = seen_head;
    for pending in batch.iter_mut() {
        let op = take(pending);
        let applied = if savepoints {
            let mut savepoint = tx.begin().await?;
            let applied = op.apply(Conn::Postgres(&mut savepoint), pos + 1).await;
            match applied {
                Ok(()) => savepoint.commit().await?,
                Err(_) => savepoint.rollback().await?,
            }
            applied
        } else {
            let applied = op.apply(Conn::Postgres(&mut tx), pos + 1).await;
            if let Err(e) = &applied {
                tracing::debug!(error = %e, "stream op failed in a group without savepoints: the group runs again with them");
                tx.rollback().await?;
                return Ok(None);
            }
            applied
        };
        record(&mut results, &mut pos, applied);
    }
    // What each position touched, for the other nodes (`remote.rs`).
    let touched: Vec<(i64, &super::Touch)> = batch
        .iter()
        .zip(&results)
        .filter_map(|(pending, result)| Some((*result.as_ref().ok()?, &pending.touch)))
        .collect();
    super::remote::write_log(&mut tx, &touched).await?;
    if pos / PRUNE_EVERY != seen_head / PRUNE_EVERY {
        super::remote::prune_log(&mut tx, pos).await?;
    }
    sqlx::query("UPDATE stream_head SET pos = $1 WHERE id = 0")
        .bind(pos)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Some(Group {
        seen_head,
        head: pos,
        results,
    }))
}

/// Takes the op out of `pending` (a no-op is left in its place).
fn take(pending: &mut Pending) -> Box<dyn StreamOp> {
    std::mem::replace(&mut pending.op, Box::new(Noop))
}

/// Records an op's outcome: a success takes the next position.
fn record(
    results: &mut Vec<Result<i64, StoreError>>,
    pos: &mut i64,
    applied: Result<(), sqlx::Error>,
) {
    match applied {
        Ok(()) => {
            *pos += 1;
            results.push(Ok(*pos));
        }
        Err(e) => {
            tracing::warn!(error = %e, "stream op failed");
            results.push(Err(StoreError::Database(e)));
        }
    }
}
