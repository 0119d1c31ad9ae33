//! [`Receipts`]: read receipts (`m.read`, and `m.read.private` which only its author sees), the
//! latest per user, type and thread in each room, written through the stream writer so that
//! `/sync` reports them as the room's `m.receipt` ephemeral event.

use std::collections::BTreeMap;

use ruma::events::AnySyncEphemeralRoomEvent;
use ruma::events::receipt::{Receipt, ReceiptEventContent, ReceiptThread, ReceiptType};
use ruma::serde::Raw;
use ruma::{EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedUserId, RoomId, UInt, UserId};

use super::{Arg, Upsert, commit_in_room, content_event, now_ms};
use crate::store::StoreError;
use crate::store::db::{Db, on_db};
use crate::stream::StreamWriter;

/// Upserts one receipt: room, user, type, thread, event, time, stream position.
const PUT: &str = "INSERT INTO receipts (room_id, user_id, type, thread, event_id, ts, stream) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (room_id, user_id, type, thread) \
     DO UPDATE SET event_id = excluded.event_id, ts = excluded.ts, stream = excluded.stream";

/// The receipt store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Receipts {
    db: Db,
    stream: StreamWriter,
}

impl Receipts {
    pub(super) fn new(db: Db, stream: StreamWriter) -> Self {
        Self { db, stream }
    }

    /// Records `user`'s receipt of `kind` for `event` in `room`, replacing their previous one
    /// of that kind and thread; wakes `wake` (the room's joined members, or only the user for a
    /// private receipt). Returns the stream position.
    pub async fn set(
        &self,
        room: &RoomId,
        user: &UserId,
        kind: &ReceiptType,
        thread: &ReceiptThread,
        event: &EventId,
        wake: Vec<OwnedUserId>,
    ) -> Result<i64, StoreError> {
        let op = Upsert {
            sql: PUT,
            args: vec![
                Arg::Text(room.as_str().to_owned()),
                Arg::Text(user.as_str().to_owned()),
                Arg::Text(kind.as_str().to_owned()),
                Arg::Text(thread.as_str().unwrap_or_default().to_owned()),
                Arg::Text(event.as_str().to_owned()),
                Arg::Int(now_ms()),
            ],
        };
        commit_in_room(&self.stream, op, wake, room).await
    }

    /// The `m.receipt` event `user` sees for the receipts of `room` changed in `(since, upto]`
    /// (all of them when `since` is 0), if any.
    pub(super) async fn changes(
        &self,
        user: &UserId,
        room: &RoomId,
        since: i64,
        upto: i64,
    ) -> Result<Option<Raw<AnySyncEphemeralRoomEvent>>, StoreError> {
        let rows: Vec<(String, String, String, String, i64)> =
            on_db!(&self.db, |e| sqlx::query_as(
                "SELECT user_id, type, thread, event_id, ts FROM receipts \
             WHERE room_id = $1 AND stream > $2 AND stream <= $3 AND (type = $4 OR user_id = $5) \
             ORDER BY stream",
            )
            .bind(room.as_str())
            .bind(since)
            .bind(upto)
            .bind(ReceiptType::Read.as_str())
            .bind(user.as_str())
            .fetch_all(e)
            .await?);
        if rows.is_empty() {
            return Ok(None);
        }
        let mut content = BTreeMap::<OwnedEventId, BTreeMap<_, BTreeMap<_, _>>>::new();
        for (user, kind, thread, event, ts) in rows {
            let (Ok(user), Ok(event)) =
                (OwnedUserId::try_from(user), OwnedEventId::try_from(event))
            else {
                continue;
            };
            let ts = u64::try_from(ts)
                .ok()
                .and_then(UInt::new)
                .unwrap_or_default();
            let mut receipt = Receipt::new(MilliSecondsSinceUnixEpoch(ts));
            receipt.thread =
                ReceiptThread::try_from((!thread.is_empty()).then_some(thread)).unwrap_or_default();
            content
                .entry(event)
                .or_default()
                .entry(ReceiptType::from(kind))
                .or_default()
                .insert(user, receipt);
        }
        content_event("m.receipt", &ReceiptEventContent(content)).map(Some)
    }

    /// The event of `user`'s latest `m.read` receipt in `room` (unthreaded or main thread).
    pub async fn read_receipt(
        &self,
        user: &UserId,
        room: &RoomId,
    ) -> Result<Option<OwnedEventId>, StoreError> {
        let event: Option<String> = on_db!(&self.db, |e| sqlx::query_scalar(
            "SELECT event_id FROM receipts WHERE room_id = $1 AND user_id = $2 AND type = $3 \
             AND thread IN ('', 'main') ORDER BY stream DESC LIMIT 1",
        )
        .bind(room.as_str())
        .bind(user.as_str())
        .bind(ReceiptType::Read.as_str())
        .fetch_optional(e)
        .await?);
        Ok(event.and_then(|e| e.try_into().ok()))
    }
}

#[cfg(test)]
mod tests {
    use ruma::{event_id, room_id, user_id};

    use super::super::test_support::fixture_on;
    use super::*;
    use crate::store::tests::Place;

    mod cases {
        use super::*;

        pub(super) async fn private_receipts_are_seen_by_their_author_only(
            place: Place,
        ) -> anyhow::Result<()> {
            let f = fixture_on(place).await?;
            let r = f.data.receipts();
            let room = room_id!("!r:example.com");
            let (alice, bob) = (user_id!("@alice:example.com"), user_id!("@bob:example.com"));
            let unthreaded = ReceiptThread::Unthreaded;
            let p1 = r
                .set(
                    room,
                    alice,
                    &ReceiptType::Read,
                    &unthreaded,
                    event_id!("$e1"),
                    vec![],
                )
                .await
                .unwrap();
            let p2 = r
                .set(
                    room,
                    alice,
                    &ReceiptType::ReadPrivate,
                    &unthreaded,
                    event_id!("$e2"),
                    vec![],
                )
                .await
                .unwrap();
            let seen_by = |user| r.changes(user, room, 0, p2);
            let bob_sees = seen_by(bob).await.unwrap().unwrap();
            let content: ReceiptEventContent = bob_sees.get_field("content").unwrap().unwrap();
            assert_eq!(content.0.len(), 1);
            assert!(content.user_receipt(alice, ReceiptType::Read).is_some());
            let alice_sees = seen_by(alice).await.unwrap().unwrap();
            let content: ReceiptEventContent = alice_sees.get_field("content").unwrap().unwrap();
            assert_eq!(content.0.len(), 2);
            assert!(r.changes(bob, room, p1, p2).await.unwrap().is_none());
            assert_eq!(
                r.read_receipt(alice, room).await.unwrap().as_deref(),
                Some(event_id!("$e1"))
            );
            assert!(r.read_receipt(bob, room).await.unwrap().is_none());
            Ok(())
        }
    }

    crate::store::tests::on_both_backends!(cases: [private_receipts_are_seen_by_their_author_only]);
}
