//! [`Memberships`]: who shares a room with whom, read from the room engine's `memberships`
//! table (`0003_rooms.sql`), for device-list changes and presence: their wake-ups here, and the
//! same join as SQL ([`sharing_a_room_sql`]) in `keys.rs` and `presence.rs`.

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

/// Read access to room memberships. Cheap to clone.
#[derive(Debug, Clone)]
pub(super) struct Memberships {
    pool: SqlitePool,
}

impl Memberships {
    pub(super) fn new(pool: SqlitePool) -> Self {
        Self { pool }
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
