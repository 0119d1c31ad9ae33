//! [`Memberships`]: who shares a room with whom, read from the room engine's `memberships`
//! table (`0003_rooms.sql`), for device-list changes and presence: their wake-ups here, and the
//! same join as SQL ([`sharing_a_room_sql`]) in `keys.rs` and `presence.rs`; and the members of
//! a user's encrypted rooms (`room_state` holding `m.room.encryption`), with the position of
//! each membership's last change, from which `keys/device_lists.rs` works out who newly shares
//! one and who shares none any more.

use ruma::{OwnedUserId, UserId};
use sqlx::sqlite::SqlitePool;

use super::user_ids;
use crate::store::StoreError;

/// SQL: `user` (bound twice) and every user joined to a room `user` is joined to. One
/// definition for every query that needs it (device lists, presence).
macro_rules! sharing_a_room_sql {
    () => {
        "SELECT ? UNION SELECT b.user_id FROM memberships a \
         JOIN memberships b ON b.room_id = a.room_id \
         WHERE a.user_id = ? AND a.membership = 'join' AND b.membership = 'join'"
    };
}
pub(super) use sharing_a_room_sql;

/// Another member of an encrypted room of a user's.
#[derive(Debug)]
pub(super) struct EncryptedRoomMember {
    /// The user's membership of the room, and the position of its last change.
    pub(super) mine: (String, i64),
    /// The position of the room's `m.room.encryption` event.
    pub(super) encrypted_at: i64,
    pub(super) other: OwnedUserId,
    /// The other member's membership, and the position of its last change.
    pub(super) theirs: (String, i64),
}

/// Read access to room memberships. Cheap to clone.
#[derive(Debug, Clone)]
pub(super) struct Memberships {
    pool: SqlitePool,
}

impl Memberships {
    pub(super) fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }

    /// The other members of the encrypted rooms `user` is joined to, or whose membership of them
    /// changed after `since`: those joined, or whose membership changed after `since`.
    pub(super) async fn encrypted_room_members(
        &self,
        user: &UserId,
        since: i64,
    ) -> Result<Vec<EncryptedRoomMember>, StoreError> {
        type Row = (String, i64, i64, String, String, i64);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT a.membership, a.stream, e.stream, b.user_id, b.membership, b.stream \
             FROM memberships a \
             JOIN room_state e ON e.room_id = a.room_id AND e.type = 'm.room.encryption' \
             AND e.state_key = '' \
             JOIN memberships b ON b.room_id = a.room_id AND b.user_id <> a.user_id \
             WHERE a.user_id = ? AND (a.membership = 'join' OR a.stream > ?) \
             AND (b.membership = 'join' OR b.stream > ?)",
        )
        .bind(user.as_str())
        .bind(since)
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(mine, mine_at, encrypted_at, other, theirs, theirs_at)| {
                Some(EncryptedRoomMember {
                    mine: (mine, mine_at),
                    encrypted_at,
                    other: other.try_into().ok()?,
                    theirs: (theirs, theirs_at),
                })
            })
            .collect())
    }

    /// `user` and every user joined to a room `user` is joined to.
    pub(super) async fn sharing_a_room(
        &self,
        user: &UserId,
    ) -> Result<Vec<OwnedUserId>, StoreError> {
        let users: Vec<String> = sqlx::query_scalar(sharing_a_room_sql!())
            .bind(user.as_str())
            .bind(user.as_str())
            .fetch_all(&self.pool)
            .await?;
        Ok(user_ids(users))
    }
}
