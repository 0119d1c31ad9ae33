//! Matrix rooms in the Matrix database ([`Db`]: `rethink.db`, tables of
//! `migrations/0003_rooms.sql` and `0008_room_txns.sql`; or PostgreSQL, `store.url`,
//! `pg_migrations/0010_matrix_rooms.sql`): events in stream order, the current state,
//! memberships, aliases and bridged objects. One SQL text serves both backends, except the
//! pruning of transactions (SQLite's `rowid` is PostgreSQL's `id` column).
//!
//! New events are written by [`AppendEvent`], a [`StreamOp`](crate::store::StreamOp) committed by the stream writer (so
//! the event's stream position is its primary key), with their client transaction
//! (`migrations/0008_room_txns.sql`) in the same commit; [`PruneTxns`] forgets transactions past
//! their retention. Everything else here reads, or writes rare data (aliases, forgetting a room)
//! directly.

mod ops;

use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId};
use sqlx::{Decode, FromRow, Row, Type};

pub use ops::{AppendEvent, PRUNE_BATCH, PruneTxns};

use super::StoreError;
use super::db::{Db, on_db};
use super::pdu::Pdu;

/// Access to the room tables. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RoomStore {
    db: Db,
}

/// A stored room, as loaded into memory.
#[derive(Debug)]
pub struct LoadedRoom {
    pub version: String,
    pub state: Vec<Pdu>,
    pub last: Option<Pdu>,
}

/// A stored client transaction.
#[derive(Debug, Clone, FromRow)]
pub struct StoredTxn {
    pub sender: String,
    pub txn_device: String,
    pub txn_scope: String,
    pub txn_id: String,
    pub event_id: String,
    pub received_ms: i64,
}

/// A user's membership in a room.
#[derive(Debug, Clone, FromRow)]
pub struct MembershipRow {
    pub room_id: String,
    pub membership: String,
    pub stream: i64,
    pub forgotten: bool,
}

const EVENT_COLUMNS: &str = "stream, event_id, json, txn_device, txn_id, redacted_because";

/// An event row (the columns [`EVENT_COLUMNS`]) of either backend.
fn pdu_from_row<'r, R>(row: &'r R) -> Result<Pdu, StoreError>
where
    R: Row,
    &'static str: sqlx::ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    &'r str: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let event_id: String = row.try_get("event_id")?;
    let txn_device: Option<String> = row.try_get("txn_device")?;
    let txn_id: Option<String> = row.try_get("txn_id")?;
    let redacted_because: Option<String> = row.try_get("redacted_because")?;
    let corrupt = |what, source: Box<dyn std::error::Error + Send + Sync>| StoreError::Corrupt {
        what,
        id: event_id.clone(),
        source,
    };
    Pdu::from_stored(
        OwnedEventId::try_from(event_id.as_str()).map_err(|e| corrupt("event ID", e.into()))?,
        row.try_get("stream")?,
        row.try_get::<&str, _>("json")?,
        txn_device.zip(txn_id),
        redacted_because.and_then(|json| serde_json::value::RawValue::from_string(json).ok()),
    )
    .map_err(|e| corrupt("event", e.into()))
}

fn pdus<'r, R>(rows: &'r [R]) -> Result<Vec<Pdu>, StoreError>
where
    R: Row,
    &'static str: sqlx::ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    &'r str: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    rows.iter().map(pdu_from_row).collect()
}

impl RoomStore {
    /// The store over the Matrix database (a `SqlitePool` of `rethink.db` converts).
    pub fn new(db: impl Into<Db>) -> Self {
        RoomStore { db: db.into() }
    }

    /// Loads a room's current state and last event; `None` for an unknown room.
    pub async fn load_room(&self, room_id: &str) -> Result<Option<LoadedRoom>, StoreError> {
        let version: Option<String> = on_db!(&self.db, |e| sqlx::query_scalar(
            "SELECT version FROM rooms WHERE room_id = $1"
        )
        .bind(room_id)
        .fetch_optional(e)
        .await?);
        let Some(version) = version else {
            return Ok(None);
        };
        let state = self.state_upto(room_id, i64::MAX).await?;
        let last = on_db!(&self.db, |e| sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = $1 ORDER BY stream DESC LIMIT 1"
        )))
        .bind(room_id)
        .fetch_optional(e)
        .await?
        .map(|row| pdu_from_row(&row))
        .transpose()?);
        Ok(Some(LoadedRoom {
            version,
            state,
            last,
        }))
    }

    /// The room's current state events committed at or before `upto`.
    pub async fn state_upto(&self, room_id: &str, upto: i64) -> Result<Vec<Pdu>, StoreError> {
        self.state_between(room_id, i64::MIN, upto).await
    }

    /// The entry `(kind, state_key)` of what [`Self::state_upto`] gives, alone (one row by the
    /// table's key, not the room's whole state).
    pub async fn state_entry_upto(
        &self,
        room_id: &str,
        kind: &str,
        state_key: &str,
        upto: i64,
    ) -> Result<Option<Pdu>, StoreError> {
        let found: Vec<Pdu> = on_db!(&self.db, |e| pdus(
            &sqlx::query(
                "SELECT e.stream, e.event_id, e.json, e.txn_device, e.txn_id, \
                 e.redacted_because FROM room_state s JOIN events e ON e.event_id = s.event_id \
                 WHERE s.room_id = $1 AND s.type = $2 AND s.state_key = $3 AND s.stream <= $4",
            )
            .bind(room_id)
            .bind(kind)
            .bind(state_key)
            .bind(upto)
            .fetch_all(e)
            .await?
        ))?;
        Ok(found.into_iter().next())
    }

    /// What [`Self::state_upto`] gives, of it only the entries set after `after` (what a
    /// limited incremental `/sync` reports: not the whole state of a large room each time).
    pub async fn state_between(
        &self,
        room_id: &str,
        after: i64,
        upto: i64,
    ) -> Result<Vec<Pdu>, StoreError> {
        on_db!(&self.db, |e| pdus(
            &sqlx::query(
                "SELECT e.stream, e.event_id, e.json, e.txn_device, e.txn_id, e.redacted_because \
                 FROM room_state s JOIN events e ON e.event_id = s.event_id \
                 WHERE s.room_id = $1 AND s.stream > $2 AND s.stream <= $3",
            )
            .bind(room_id)
            .bind(after)
            .bind(upto)
            .fetch_all(e)
            .await?
        ))
    }

    /// One event by ID.
    pub async fn event(&self, event_id: &str) -> Result<Option<Pdu>, StoreError> {
        on_db!(&self.db, |e| sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE event_id = $1"
        )))
        .bind(event_id)
        .fetch_optional(e)
        .await?
        .map(|row| pdu_from_row(&row))
        .transpose())
    }

    /// The room, sender and signed JSON of an event (what a redaction rewrites).
    pub async fn signed_event(
        &self,
        event_id: &str,
    ) -> Result<Option<(String, String, String)>, StoreError> {
        Ok(on_db!(&self.db, |e| sqlx::query_as(
            "SELECT room_id, sender, json FROM events WHERE event_id = $1"
        )
        .bind(event_id)
        .fetch_optional(e)
        .await?))
    }

    /// Events of a room with `after < stream <= upto`: the first `limit` going forwards, or the
    /// last `limit` going backwards (then newest first).
    pub async fn events(
        &self,
        room_id: &str,
        after: i64,
        upto: i64,
        limit: u32,
        backwards: bool,
    ) -> Result<Vec<Pdu>, StoreError> {
        let order = if backwards { "DESC" } else { "ASC" };
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = $1 AND stream > $2 \
             AND stream <= $3 ORDER BY stream {order} LIMIT $4"
        );
        on_db!(&self.db, |e| pdus(
            &sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(room_id)
                .bind(after)
                .bind(upto)
                .bind(i64::from(limit))
                .fetch_all(e)
                .await?
        ))
    }

    /// Events of every room with `after < stream <= upto`, the first `limit` in stream order
    /// (what application services are sent).
    pub async fn events_between(
        &self,
        after: i64,
        upto: i64,
        limit: u32,
    ) -> Result<Vec<Pdu>, StoreError> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE stream > $1 AND stream <= $2 \
             ORDER BY stream LIMIT $3"
        );
        on_db!(&self.db, |e| pdus(
            &sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(after)
                .bind(upto)
                .bind(i64::from(limit))
                .fetch_all(e)
                .await?
        ))
    }

    /// Counts a room's non-state events in `(after, upto]` not sent by `user` (unread counts).
    pub async fn count_from_others(
        &self,
        room_id: &str,
        user: &str,
        after: i64,
        upto: i64,
    ) -> Result<u64, StoreError> {
        let n: i64 = on_db!(&self.db, |e| sqlx::query_scalar(
            "SELECT COUNT(*) FROM events WHERE room_id = $1 AND stream > $2 AND stream <= $3 \
             AND sender != $4 AND state_key IS NULL",
        )
        .bind(room_id)
        .bind(after)
        .bind(upto)
        .bind(user)
        .fetch_one(e)
        .await?);
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The room's transactions accepted at or after `since_ms`, newest first, at most `limit`:
    /// (sender, device, scope, transaction ID, event ID, accepted at).
    pub async fn recent_txns(
        &self,
        room_id: &str,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<StoredTxn>, StoreError> {
        Ok(on_db!(&self.db, |e| sqlx::query_as(
            "SELECT sender, device AS txn_device, scope AS txn_scope, txn_id, event_id, \
             received_ms FROM room_txns WHERE room_id = $1 AND received_ms >= $2 \
             ORDER BY received_ms DESC LIMIT $3",
        )
        .bind(room_id)
        .bind(since_ms)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(e)
        .await?))
    }

    /// The event of a client transaction accepted at or after `since_ms`, if any.
    pub async fn txn_event(
        &self,
        room_id: &str,
        sender: &str,
        device: &str,
        scope: &str,
        txn_id: &str,
        since_ms: i64,
    ) -> Result<Option<String>, StoreError> {
        Ok(on_db!(&self.db, |e| sqlx::query_scalar(
            "SELECT event_id FROM room_txns WHERE sender = $1 AND device = $2 AND room_id = $3 \
             AND scope = $4 AND txn_id = $5 AND received_ms >= $6",
        )
        .bind(sender)
        .bind(device)
        .bind(room_id)
        .bind(scope)
        .bind(txn_id)
        .bind(since_ms)
        .fetch_optional(e)
        .await?))
    }

    /// Every stored membership, by user (loaded into memory at start).
    pub async fn all_memberships(&self) -> Result<Vec<(OwnedUserId, MembershipRow)>, StoreError> {
        // `forgotten` is an integer in both schemas (0 or 1).
        let rows: Vec<(String, String, String, i64, i64)> = on_db!(&self.db, |e| sqlx::query_as(
            "SELECT user_id, room_id, membership, stream, forgotten FROM memberships",
        )
        .fetch_all(e)
        .await?);
        Ok(rows
            .into_iter()
            .filter_map(|(user, room_id, membership, stream, forgotten)| {
                Some((
                    OwnedUserId::try_from(user).ok()?,
                    MembershipRow {
                        room_id,
                        membership,
                        stream,
                        forgotten: forgotten != 0,
                    },
                ))
            })
            .collect())
    }

    /// Hides a left room from `user` (`/forget`).
    pub async fn forget(&self, room_id: &str, user: &str) -> Result<(), StoreError> {
        on_db!(&self.db, |e| sqlx::query(
            "UPDATE memberships SET forgotten = 1 WHERE room_id = $1 AND user_id = $2"
        )
        .bind(room_id)
        .bind(user)
        .execute(e)
        .await?
        .rows_affected());
        Ok(())
    }

    /// Creates an alias; `false` if it exists.
    pub async fn put_alias(
        &self,
        alias: &str,
        room_id: &str,
        creator: &str,
    ) -> Result<bool, StoreError> {
        let done = on_db!(&self.db, |e| sqlx::query(
            "INSERT INTO room_aliases (alias, room_id, creator) VALUES ($1, $2, $3) \
             ON CONFLICT (alias) DO NOTHING",
        )
        .bind(alias)
        .bind(room_id)
        .bind(creator)
        .execute(e)
        .await?
        .rows_affected());
        Ok(done == 1)
    }

    /// The room and creator of an alias.
    pub async fn alias(&self, alias: &str) -> Result<Option<(OwnedRoomId, String)>, StoreError> {
        let row: Option<(String, String)> = on_db!(&self.db, |e| sqlx::query_as(
            "SELECT room_id, creator FROM room_aliases WHERE alias = $1"
        )
        .bind(alias)
        .fetch_optional(e)
        .await?);
        Ok(row.and_then(|(room, creator)| Some((OwnedRoomId::try_from(room).ok()?, creator))))
    }

    pub async fn delete_alias(&self, alias: &str) -> Result<(), StoreError> {
        on_db!(&self.db, |e| sqlx::query(
            "DELETE FROM room_aliases WHERE alias = $1"
        )
        .bind(alias)
        .execute(e)
        .await?
        .rows_affected());
        Ok(())
    }

    /// The aliases of a room.
    pub async fn room_aliases(&self, room_id: &str) -> Result<Vec<String>, StoreError> {
        Ok(on_db!(&self.db, |e| sqlx::query_scalar(
            "SELECT alias FROM room_aliases WHERE room_id = $1 ORDER BY alias"
        )
        .bind(room_id)
        .fetch_all(e)
        .await?))
    }

    /// The room bridged to a reTHINK object.
    pub async fn bridged_room(&self, object_url: &str) -> Result<Option<OwnedRoomId>, StoreError> {
        let room: Option<String> = on_db!(&self.db, |e| sqlx::query_scalar(
            "SELECT room_id FROM bridged_objects WHERE object_url = $1"
        )
        .bind(object_url)
        .fetch_optional(e)
        .await?);
        Ok(room.and_then(|r| OwnedRoomId::try_from(r).ok()))
    }

    /// The reTHINK object bridged to a room.
    pub async fn bridged_object(&self, room_id: &str) -> Result<Option<String>, StoreError> {
        Ok(on_db!(&self.db, |e| sqlx::query_scalar(
            "SELECT object_url FROM bridged_objects WHERE room_id = $1"
        )
        .bind(room_id)
        .fetch_optional(e)
        .await?))
    }

    pub async fn put_bridge(&self, object_url: &str, room_id: &str) -> Result<(), StoreError> {
        on_db!(&self.db, |e| sqlx::query(
            "INSERT INTO bridged_objects (object_url, room_id) VALUES ($1, $2) \
             ON CONFLICT (object_url) DO NOTHING",
        )
        .bind(object_url)
        .bind(room_id)
        .execute(e)
        .await?
        .rows_affected());
        Ok(())
    }
}

#[cfg(test)]
mod tests;
