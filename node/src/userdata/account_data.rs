//! [`AccountData`]: global and per-room account data, the latest content of each type, written
//! through the stream writer so that `/sync` reports each change once. Global data is stored
//! under the room ID `''`.

use ruma::events::{AnyGlobalAccountDataEvent, AnyRoomAccountDataEvent};
use ruma::serde::Raw;
use ruma::{RoomId, UserId};
use serde_json::value::RawValue;

use super::{Arg, Upsert, commit, commit_in_room, stored_event, stored_json};
use crate::store::StoreError;
use crate::store::db::{Db, on_db};
use crate::stream::StreamWriter;

/// The room ID under which global account data is stored.
const GLOBAL: &str = "";

/// Upserts one entry: user, room, type, content, stream position.
const PUT: &str = "INSERT INTO account_data (user_id, room_id, type, content, stream) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, room_id, type) \
     DO UPDATE SET content = excluded.content, stream = excluded.stream";

/// The account data store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AccountData {
    db: Db,
    stream: StreamWriter,
}

impl AccountData {
    pub(super) fn new(db: Db, stream: StreamWriter) -> Self {
        Self { db, stream }
    }

    /// Sets the content of `kind` for `user`, globally (`room` `None`) or in `room`; wakes the
    /// user's `/sync`. Returns the stream position.
    pub async fn set(
        &self,
        user: &UserId,
        room: Option<&RoomId>,
        kind: &str,
        content: &RawValue,
    ) -> Result<i64, StoreError> {
        let op = Upsert {
            sql: PUT,
            args: vec![
                Arg::Text(user.as_str().to_owned()),
                Arg::Text(room.map_or(GLOBAL, |r| r.as_str()).to_owned()),
                Arg::Text(kind.to_owned()),
                Arg::Text(content.get().to_owned()),
            ],
        };
        match room {
            Some(room) => commit_in_room(&self.stream, op, vec![user.to_owned()], room).await,
            None => commit(&self.stream, op, vec![user.to_owned()]).await,
        }
    }

    /// The content of `kind` for `user` (global when `room` is `None`), if set.
    pub async fn get(
        &self,
        user: &UserId,
        room: Option<&RoomId>,
        kind: &str,
    ) -> Result<Option<Box<RawValue>>, StoreError> {
        let content: Option<String> = on_db!(&self.db, |e| {
            sqlx::query_scalar(
            "SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND type = $3",
        )
        .bind(user.as_str())
        .bind(room.map_or(GLOBAL, |r| r.as_str()))
        .bind(kind)
        .fetch_optional(e)
        .await?
        });
        content.map(stored_json).transpose()
    }

    /// The user's global account data events: all of them when `since` is 0, else those
    /// changed in `(since, upto]`.
    pub(super) async fn global_changes(
        &self,
        user: &UserId,
        since: i64,
        upto: i64,
    ) -> Result<Vec<Raw<AnyGlobalAccountDataEvent>>, StoreError> {
        self.changes(user, GLOBAL, since, upto).await
    }

    /// The user's account data events in `room`: all of them when `since` is 0, else those
    /// changed in `(since, upto]`.
    pub(super) async fn room_changes(
        &self,
        user: &UserId,
        room: &RoomId,
        since: i64,
        upto: i64,
    ) -> Result<Vec<Raw<AnyRoomAccountDataEvent>>, StoreError> {
        self.changes(user, room.as_str(), since, upto).await
    }

    async fn changes<T>(
        &self,
        user: &UserId,
        room: &str,
        since: i64,
        upto: i64,
    ) -> Result<Vec<Raw<T>>, StoreError> {
        let rows: Vec<(String, String)> = on_db!(&self.db, |e| sqlx::query_as(
            "SELECT type, content FROM account_data \
             WHERE user_id = $1 AND room_id = $2 AND stream > $3 AND stream <= $4 \
             ORDER BY stream",
        )
        .bind(user.as_str())
        .bind(room)
        .bind(since)
        .bind(upto)
        .fetch_all(e)
        .await?);
        rows.into_iter().map(stored_event).collect()
    }
}

#[cfg(test)]
mod tests {
    use ruma::{room_id, user_id};

    use super::super::test_support::fixture_on;
    use super::*;
    use crate::store::tests::Place;

    mod cases {
        use super::*;

        fn json(s: &str) -> Box<RawValue> {
            RawValue::from_string(s.to_owned()).unwrap()
        }

        pub(super) async fn changes_are_reported_between_positions(
            place: Place,
        ) -> anyhow::Result<()> {
            let f = fixture_on(place).await?;
            let ad = f.data.account_data();
            let alice = user_id!("@alice:example.com");
            let room = room_id!("!r:example.com");
            let p1 = ad
                .set(alice, None, "m.a", &json(r#"{"n":1}"#))
                .await
                .unwrap();
            let p2 = ad
                .set(alice, Some(room), "m.b", &json(r#"{"n":2}"#))
                .await
                .unwrap();
            let p3 = ad
                .set(alice, None, "m.c", &json(r#"{"n":3}"#))
                .await
                .unwrap();
            assert!(p1 < p2 && p2 < p3);

            let all = ad.global_changes(alice, 0, p3).await.unwrap();
            assert_eq!(all.len(), 2);
            let later = ad.global_changes(alice, p1, p3).await.unwrap();
            assert_eq!(later.len(), 1);
            assert_eq!(
                later[0].get_field::<String>("type").unwrap().as_deref(),
                Some("m.c")
            );
            let in_room = ad.room_changes(alice, room, 0, p3).await.unwrap();
            assert_eq!(in_room.len(), 1);
            assert!(
                ad.room_changes(alice, room, p2, p3)
                    .await
                    .unwrap()
                    .is_empty()
            );

            let got = ad.get(alice, None, "m.a").await.unwrap().unwrap();
            assert_eq!(got.get(), r#"{"n":1}"#);
            assert!(ad.get(alice, Some(room), "m.a").await.unwrap().is_none());
            assert!(
                ad.get(user_id!("@bob:example.com"), None, "m.a")
                    .await
                    .unwrap()
                    .is_none()
            );
            Ok(())
        }
    }

    crate::store::tests::on_both_backends!(cases: [changes_are_reported_between_positions]);
}
