//! The stream positions that other nodes commit (several nodes on one PostgreSQL database).
//!
//! Every node's writer takes its positions under the lock of the `stream_head` row, so positions
//! are committed in order across the cluster; with each position it writes what the position
//! [`Touch`]es into `stream_log` (pg_migrations/0013), in the same transaction. A node that finds
//! positions it did not write (its own next group starts past its head, or the head moved: a
//! notice on NATS, or the periodic check) reads their touches here, lets the room engine update
//! its caches ([`RemoteHook`]), records the touches in its notifier and only then makes the
//! positions visible: its `/sync` readers see another node's writes exactly as their own.
//!
//! The log is pruned behind the head ([`LOG_KEEP`] positions are kept). A node starting builds
//! its caches from the tables; a *running* node that fell further behind (paused, cut off from
//! the database) finds positions without an entry: what they touched is unknown, so the room
//! engine loads every room event of the range from the `events` table (which is never pruned),
//! and the notifier counts everything up to the range's end as changed and wakes every waiting
//! `/sync` (`CaughtUp::lost`).

use std::sync::Arc;

use futures_util::future::BoxFuture;
use ruma::{OwnedRoomId, OwnedUserId};
use sqlx::Row as _;
use sqlx::postgres::PgConnection;

use super::Touch;
use crate::store::StoreError;

/// Positions of `stream_log` kept behind the head.
pub const LOG_KEEP: i64 = 100_000;

/// A position another node committed, and what it touched.
#[derive(Debug, Clone)]
pub struct RemoteTouch {
    pub pos: i64,
    pub touch: Touch,
}

/// Called with a range of positions `(after, upto]` other nodes committed that holds room events,
/// before the positions become visible: the room engine loads the range's events into its
/// caches, in order. A failure is retried (the positions stay invisible until it succeeds).
pub type RemoteHook =
    Arc<dyn Fn(i64, i64) -> BoxFuture<'static, Result<(), StoreError>> + Send + Sync>;

/// What a catch-up found for the positions `(after, upto]` other nodes committed.
#[derive(Debug, Default)]
pub(super) struct CaughtUp {
    /// The logged positions' touches, in order.
    pub(super) touches: Vec<RemoteTouch>,
    /// The end of the range, when some of its positions had no log entry (pruned before this
    /// node read them): what those touched is unknown.
    pub(super) lost: Option<i64>,
}

/// The range whose room events the room engine must load: all of `(after, upto]` when some
/// positions were pruned, else from the first to the last logged room event (`None`: none).
fn events_range(after: i64, upto: i64, touches: &[RemoteTouch], lost: bool) -> Option<(i64, i64)> {
    if lost {
        return Some((after, upto));
    }
    let mut rooms = touches.iter().filter(|t| t.touch.room_events.is_some());
    let first = rooms.next()?.pos;
    let last = rooms.next_back().map_or(first, |t| t.pos);
    Some((first - 1, last))
}

/// Writes the touches of a group's positions, in the group's transaction.
pub(super) async fn write_log(
    conn: &mut PgConnection,
    entries: &[(i64, &Touch)],
) -> Result<(), sqlx::Error> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut positions = Vec::with_capacity(entries.len());
    let mut users = Vec::with_capacity(entries.len());
    let mut room_events = Vec::with_capacity(entries.len());
    let mut room_extras = Vec::with_capacity(entries.len());
    for (pos, touch) in entries {
        positions.push(*pos);
        users.push(
            touch
                .users
                .iter()
                .map(|u| u.as_str())
                .collect::<Vec<_>>()
                .join("\n"),
        );
        room_events.push(touch.room_events.as_ref().map(|r| r.to_string()));
        room_extras.push(touch.room_extras.as_ref().map(|r| r.to_string()));
    }
    sqlx::query(
        "INSERT INTO stream_log (pos, users, room_events, room_extras) \
         SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::TEXT[])",
    )
    .bind(&positions)
    .bind(&users)
    .bind(&room_events)
    .bind(&room_extras)
    .execute(conn)
    .await?;
    Ok(())
}

/// Forgets log entries more than [`LOG_KEEP`] positions behind `head`.
pub(super) async fn prune_log(conn: &mut PgConnection, head: i64) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM stream_log WHERE pos <= $1")
        .bind(head - LOG_KEEP)
        .execute(conn)
        .await?;
    Ok(())
}

/// The committed head (without a lock: every position up to it is committed).
pub(super) async fn read_head(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT pos FROM stream_head WHERE id = 0")
        .fetch_one(conn)
        .await
}

/// The touches of the positions in `(after, upto]`, in order. Positions without a log entry
/// (a failed op's position is never taken, so there are none) are skipped.
pub(super) async fn read_log(
    conn: &mut PgConnection,
    after: i64,
    upto: i64,
) -> Result<Vec<RemoteTouch>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT pos, users, room_events, room_extras FROM stream_log \
         WHERE pos > $1 AND pos <= $2 ORDER BY pos",
    )
    .bind(after)
    .bind(upto)
    .fetch_all(conn)
    .await?;
    let mut touches = Vec::with_capacity(rows.len());
    for row in rows {
        let users: String = row.try_get("users")?;
        let room = |column: &str| -> Result<Option<OwnedRoomId>, sqlx::Error> {
            let value: Option<String> = row.try_get(column)?;
            Ok(value.and_then(|r| OwnedRoomId::try_from(r).ok()))
        };
        touches.push(RemoteTouch {
            pos: row.try_get("pos")?,
            touch: Touch {
                users: users
                    .lines()
                    .filter_map(|u| OwnedUserId::try_from(u).ok())
                    .collect(),
                room_events: room("room_events")?,
                room_extras: room("room_extras")?,
            },
        });
    }
    Ok(touches)
}

/// How many positions of `(after, upto]` have no log entry, when `found` had one. Every
/// committed position has an entry until it is pruned, so any missing one was pruned.
fn missing_entries(after: i64, upto: i64, found: usize) -> i64 {
    (upto - after)
        .saturating_sub(i64::try_from(found).unwrap_or(i64::MAX))
        .max(0)
}

/// What the writer of a node on PostgreSQL keeps for the other nodes: the pool it reads their
/// positions with, the room engine's [`RemoteHook`], the doorbell their notices ring, and the
/// head of this node's last commit (announced to them by `cluster::stream`).
pub(super) struct Follower {
    pool: sqlx::PgPool,
    hook: std::sync::OnceLock<RemoteHook>,
    /// Rung when another node announced a commit.
    pub(super) doorbell: tokio::sync::Notify,
    /// The head after each of this node's own commits.
    pub(super) own: tokio::sync::watch::Sender<i64>,
}

/// First retry delay of a failed catch-up; doubled up to a second.
const FIRST_RETRY: std::time::Duration = std::time::Duration::from_millis(20);

impl Follower {
    pub(super) fn new(pool: sqlx::PgPool, head: i64) -> Self {
        Follower {
            pool,
            hook: std::sync::OnceLock::new(),
            doorbell: tokio::sync::Notify::new(),
            own: tokio::sync::watch::channel(head).0,
        }
    }

    /// Installs the room engine's hook (once; later calls are ignored).
    pub(super) fn set_hook(&self, hook: RemoteHook) {
        let _ = self.hook.set(hook);
    }

    /// The committed head in the database.
    pub(super) async fn head(&self) -> Result<i64, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        read_head(&mut conn).await
    }

    /// Reads the positions in `(after, upto]` and runs the hook on them, retrying until both
    /// succeed (the positions must not become visible before).
    pub(super) async fn catch_up(&self, after: i64, upto: i64) -> CaughtUp {
        let mut delay = FIRST_RETRY;
        loop {
            match self.try_catch_up(after, upto).await {
                Ok(touches) => return touches,
                Err(e) => {
                    tracing::warn!(after, upto, error = %e, "matrix stream: cannot read the positions other nodes wrote; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(std::time::Duration::from_secs(1));
                }
            }
        }
    }

    async fn try_catch_up(&self, after: i64, upto: i64) -> Result<CaughtUp, StoreError> {
        let touches = {
            let mut conn = self.pool.acquire().await?;
            read_log(&mut conn, after, upto).await?
        };
        let missing = missing_entries(after, upto, touches.len());
        if missing > 0 {
            tracing::error!(
                after,
                upto,
                missing,
                "matrix stream: positions other nodes committed were pruned from stream_log \
                 before this node read them (it fell more than {LOG_KEEP} positions behind); \
                 their room events are loaded from the events table, and every /sync from \
                 before {upto} counts everything as changed"
            );
        }
        let lost = missing > 0;
        if let (Some(hook), Some((from, to))) =
            (self.hook.get(), events_range(after, upto, &touches, lost))
        {
            hook(from, to).await?;
        }
        Ok(CaughtUp {
            touches,
            lost: lost.then_some(upto),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{RemoteTouch, events_range, missing_entries};
    use crate::stream::Touch;

    #[test]
    fn positions_without_an_entry_are_counted_as_pruned() {
        assert_eq!(missing_entries(10, 15, 5), 0);
        assert_eq!(missing_entries(10, 15, 2), 3);
        assert_eq!(missing_entries(10, 10, 0), 0);
    }

    #[test]
    fn the_room_events_to_load_span_the_logged_ones_or_the_whole_range_when_some_were_lost() {
        let touch = |pos: i64, room: bool| RemoteTouch {
            pos,
            touch: Touch {
                users: Vec::new().into(),
                room_events: room.then(|| ruma::owned_room_id!("!r:x")),
                room_extras: None,
            },
        };
        let touches = [
            touch(11, false),
            touch(12, true),
            touch(14, true),
            touch(15, false),
        ];
        assert_eq!(events_range(10, 20, &touches, false), Some((11, 14)));
        assert_eq!(events_range(10, 20, &touches[..2], false), Some((11, 12)));
        assert_eq!(events_range(10, 20, &[touch(11, false)], false), None);
        assert_eq!(events_range(10, 20, &[], true), Some((10, 20)));
        assert_eq!(events_range(10, 20, &touches, true), Some((10, 20)));
    }
}
