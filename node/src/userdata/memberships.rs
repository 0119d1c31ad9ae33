//! [`Memberships`]: who shares a room with whom, read from the room engine's `memberships`
//! table (SQLite's `0003_rooms.sql`, PostgreSQL's `0010_matrix_rooms.sql`, in the Matrix
//! [`Db`]), for device-list changes and presence: their wake-ups here, and the same join as SQL
//! ([`sharing_a_room_sql`]) in `keys.rs` and `presence.rs`; and the members of
//! a user's encrypted rooms (`room_state` holding `m.room.encryption`), with the position of
//! each membership's last change, from which `keys/device_lists.rs` works out who newly shares
//! one and who shares none any more.

use ruma::{OwnedUserId, UserId};

use super::user_ids;
use crate::store::StoreError;
use crate::store::db::{Db, on_db};

/// SQL: `user` (bound twice) and every user joined to a room `user` is joined to. One
/// definition for every query that needs it (device lists, presence).
///
/// `sharing_a_room_sql!("$3", "$4")` numbers the two parameters for a query of both backends
/// (the literals are the parameters' numbers in the enclosing query, `user` bound to each);
/// `sharing_a_room_sql!()` is the SQLite-only form with `?` parameters.
macro_rules! sharing_a_room_sql {
    () => {
        "SELECT ? UNION SELECT b.user_id FROM memberships a \
         JOIN memberships b ON b.room_id = a.room_id \
         WHERE a.user_id = ? AND a.membership = 'join' AND b.membership = 'join'"
    };
    ($user:literal, $again:literal) => {
        concat!(
            "SELECT CAST(",
            $user,
            " AS TEXT) UNION SELECT b.user_id FROM memberships a \
             JOIN memberships b ON b.room_id = a.room_id WHERE a.user_id = ",
            $again,
            " AND a.membership = 'join' AND b.membership = 'join'"
        )
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
    db: Db,
}

impl Memberships {
    /// Over the Matrix database (a `SqlitePool` of `rethink.db` converts).
    pub(super) fn new(db: impl Into<Db>) -> Self {
        Self { db: db.into() }
    }

    /// The other members of the encrypted rooms `user` is joined to, or whose membership of them
    /// changed after `since`: those joined, or whose membership changed after `since`.
    pub(super) async fn encrypted_room_members(
        &self,
        user: &UserId,
        since: i64,
    ) -> Result<Vec<EncryptedRoomMember>, StoreError> {
        type Row = (String, i64, i64, String, String, i64);
        let rows: Vec<Row> = on_db!(&self.db, |e| sqlx::query_as(
            "SELECT a.membership, a.stream, e.stream, b.user_id, b.membership, b.stream \
             FROM memberships a \
             JOIN room_state e ON e.room_id = a.room_id AND e.type = 'm.room.encryption' \
             AND e.state_key = '' \
             JOIN memberships b ON b.room_id = a.room_id AND b.user_id <> a.user_id \
             WHERE a.user_id = $1 AND (a.membership = 'join' OR a.stream > $2) \
             AND (b.membership = 'join' OR b.stream > $2)",
        )
        .bind(user.as_str())
        .bind(since)
        .fetch_all(e)
        .await?);
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
        let users: Vec<String> = on_db!(&self.db, |e| sqlx::query_scalar(sharing_a_room_sql!(
            "$1", "$2"
        ))
        .bind(user.as_str())
        .bind(user.as_str())
        .fetch_all(e)
        .await?);
        Ok(user_ids(users))
    }
}

#[cfg(test)]
mod tests {
    //! Memberships written by the room store through the stream writer, read back on both
    //! backends (`crate::store::tests`).

    mod cases {
        use ruma::user_id;

        use super::super::*;
        use crate::store::rooms::AppendEvent;
        use crate::store::tests::Place;
        use crate::stream::StreamWriter;
        use crate::stream::tests::stream_db;

        /// A state event of `room` (its JSON is not read here).
        fn state(room: &str, kind: &str, key: &str, membership: Option<&str>) -> AppendEvent {
            AppendEvent {
                event_id: format!("${room}{kind}{key}"),
                room_id: room.to_owned(),
                kind: kind.to_owned(),
                state_key: Some(key.to_owned()),
                prev_event: None,
                sender: "@a:example.com".to_owned(),
                json: "{}".to_owned(),
                txn: None,
                txn_expired_before: 0,
                received_ms: 1,
                membership: membership.map(str::to_owned),
                create_version: (kind == "m.room.create").then(|| "10".to_owned()),
                redaction: None,
            }
        }

        pub(super) async fn who_shares_a_room_and_an_encrypted_one(
            place: Place,
        ) -> anyhow::Result<()> {
            let opened = place.open().await?;
            let (stream, _task) = StreamWriter::start(stream_db(&opened)).await?;
            let member = |room, user, m| state(room, "m.room.member", user, Some(m));
            let ops = [
                state("!e", "m.room.create", "", None),
                member("!e", "@a:example.com", "join"),
                member("!e", "@b:example.com", "join"),
                state("!e", "m.room.encryption", "", None),
                state("!p", "m.room.create", "", None),
                member("!p", "@a:example.com", "join"),
                member("!p", "@c:example.com", "join"),
                member("!p", "@d:example.com", "invite"),
            ];
            let mut last = 0;
            for op in ops {
                last = stream
                    .submit(Box::new(op), Vec::new())
                    .await?
                    .wait()
                    .await?;
            }
            let memberships = Memberships::new(opened.matrix_db());
            let a = user_id!("@a:example.com");
            let mut sharing = memberships.sharing_a_room(a).await?;
            sharing.sort_unstable();
            assert_eq!(
                sharing,
                ["@a:example.com", "@b:example.com", "@c:example.com"]
            );
            let lonely = user_id!("@z:example.com");
            assert_eq!(memberships.sharing_a_room(lonely).await?, [lonely]);

            let members = memberships.encrypted_room_members(a, last).await?;
            assert_eq!(members.len(), 1, "{members:?}");
            assert_eq!(members[0].other, "@b:example.com");
            assert_eq!(members[0].mine.0, "join");
            assert_eq!(members[0].theirs, ("join".to_owned(), 3));
            assert_eq!(members[0].encrypted_at, 4);
            Ok(())
        }
    }

    crate::store::tests::on_both_backends!(
        cases: [who_shares_a_room_and_an_encrypted_one],
    );
}
