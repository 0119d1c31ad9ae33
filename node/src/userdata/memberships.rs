//! [`Memberships`]: who shares a room with whom, read from the room engine's `memberships`
//! table (`0003_rooms.sql`), for device-list changes: their wake-ups here, and the same join in
//! SQL in `keys.rs` (`changed_users`).

use ruma::{OwnedUserId, UserId};
use sqlx::sqlite::SqlitePool;

use super::user_ids;
use crate::store::StoreError;

/// The membership value of a joined user (`MembershipState::Join`).
const JOIN: &str = "join";

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
        let users: Vec<String> = sqlx::query_scalar(
            "SELECT ? UNION SELECT b.user_id FROM memberships a \
             JOIN memberships b ON b.room_id = a.room_id \
             WHERE a.user_id = ? AND a.membership = ? AND b.membership = ?",
        )
        .bind(user.as_str())
        .bind(user.as_str())
        .bind(JOIN)
        .bind(JOIN)
        .fetch_all(&self.pool)
        .await?;
        Ok(user_ids(users))
    }
}
