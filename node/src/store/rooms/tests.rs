//! The room tables through the stream writer, each test body on SQLite and on PostgreSQL
//! (`crate::store::tests`): events read back in stream order, an event that fails rolled back
//! alone, transaction uniqueness and pruning, aliases and bridges.

mod cases {
    use serde_json::json;

    use super::super::*;
    use crate::store::StreamOp;
    use crate::store::tests::{Opened, Place};
    use crate::stream::StreamWriter;
    use crate::stream::tests::{in_one_group, stream_db};

    const ROOM: &str = "!room:example.com";
    const ALICE: &str = "@alice:example.com";
    const BOB: &str = "@bob:example.com";

    /// An event of `ROOM` (`$<name>`), sent by `sender`, accepted at `received_ms`.
    fn event(name: &str, kind: &str, state_key: Option<&str>, sender: &str) -> AppendEvent {
        let mut pdu = json!({
            "room_id": ROOM,
            "sender": sender,
            "origin_server_ts": 1,
            "type": kind,
            "content": {"body": name},
            "depth": 1,
        });
        if let Some(key) = state_key {
            pdu["state_key"] = json!(key);
        }
        AppendEvent {
            event_id: format!("${name}"),
            room_id: ROOM.to_owned(),
            kind: kind.to_owned(),
            state_key: state_key.map(str::to_owned),
            prev_event: None,
            sender: sender.to_owned(),
            json: pdu.to_string(),
            txn: None,
            txn_expired_before: 0,
            received_ms: 1_000,
            membership: None,
            create_version: None,
            redaction: None,
        }
    }

    fn create() -> AppendEvent {
        AppendEvent {
            create_version: Some("10".to_owned()),
            ..event("create", "m.room.create", Some(""), ALICE)
        }
    }

    fn join(user: &str) -> AppendEvent {
        AppendEvent {
            membership: Some("join".to_owned()),
            ..event(&format!("join{user}"), "m.room.member", Some(user), user)
        }
    }

    fn message(name: &str, sender: &str) -> AppendEvent {
        event(name, "m.room.message", None, sender)
    }

    /// A message sent in client transaction `txn` of ALICE's device `D`.
    fn sent(name: &str, txn: &str, received_ms: i64) -> AppendEvent {
        AppendEvent {
            txn: Some(("D".to_owned(), "send", txn.to_owned())),
            received_ms,
            ..message(name, ALICE)
        }
    }

    async fn open(place: &Place) -> anyhow::Result<(Opened, StreamWriter, RoomStore)> {
        let opened = place.open().await?;
        let (stream, _task) = StreamWriter::start(stream_db(&opened)).await?;
        let rooms = RoomStore::new(opened.matrix_db());
        Ok((opened, stream, rooms))
    }

    async fn append(stream: &StreamWriter, op: AppendEvent) -> anyhow::Result<i64> {
        Ok(stream
            .submit(Box::new(op), Vec::new())
            .await?
            .wait()
            .await?)
    }

    fn ids(pdus: &[Pdu]) -> Vec<&str> {
        pdus.iter().map(|p| p.event_id.as_str()).collect()
    }

    pub(super) async fn events_are_read_back_in_stream_order(place: Place) -> anyhow::Result<()> {
        let (opened, stream, rooms) = open(&place).await?;
        let mut positions = Vec::new();
        for op in [
            create(),
            join(ALICE),
            message("m1", BOB),
            message("m2", ALICE),
        ] {
            positions.push(append(&stream, op).await?);
        }
        positions.push(append(&stream, message("m3", BOB)).await?);
        assert!(
            positions.windows(2).all(|w| w[1] == w[0] + 1),
            "{positions:?}"
        );
        let upto = stream.visible();
        assert_eq!(upto, *positions.last().unwrap());
        let order = ["$create", "$join@alice:example.com", "$m1", "$m2", "$m3"];

        let forwards = rooms.events(ROOM, 0, upto, 10, false).await?;
        assert_eq!(ids(&forwards), order);
        let streams: Vec<i64> = forwards.iter().map(|p| p.stream).collect();
        assert_eq!(streams, positions);
        let last_two = rooms.events(ROOM, 0, upto, 2, true).await?;
        assert_eq!(ids(&last_two), ["$m3", "$m2"]);
        let between = rooms.events_between(positions[1], positions[3], 10).await?;
        assert_eq!(ids(&between), ["$m1", "$m2"]);
        assert_eq!(rooms.count_from_others(ROOM, ALICE, 0, upto).await?, 2);

        let loaded = rooms.load_room(ROOM).await?.expect("the room");
        assert_eq!(loaded.version, "10");
        let mut state = ids(&loaded.state);
        state.sort_unstable();
        assert_eq!(state, ["$create", "$join@alice:example.com"]);
        assert_eq!(
            loaded.last.map(|p| p.event_id.to_string()),
            Some("$m3".into())
        );
        let before_join = rooms.state_upto(ROOM, positions[0]).await?;
        assert_eq!(ids(&before_join), ["$create"]);
        assert!(rooms.load_room("!nope:example.com").await?.is_none());

        let memberships = rooms.all_memberships().await?;
        assert_eq!(memberships.len(), 1);
        assert_eq!(memberships[0].0, ALICE);
        let row = &memberships[0].1;
        assert_eq!(
            (row.membership.as_str(), row.stream),
            ("join", positions[1])
        );
        assert!(!row.forgotten);
        rooms.forget(ROOM, ALICE).await?;
        assert!(rooms.all_memberships().await?[0].1.forgotten);
        drop(stream);
        opened.close().await;

        // Stored: a restarted writer continues after the room's last event.
        let (_opened, stream, rooms) = open(&place).await?;
        assert_eq!(stream.visible(), upto);
        let again = rooms.events(ROOM, 0, upto, 10, false).await?;
        assert_eq!(ids(&again), order);
        assert_eq!(append(&stream, message("m4", BOB)).await?, upto + 1);
        Ok(())
    }

    pub(super) async fn a_failed_event_is_rolled_back_alone(place: Place) -> anyhow::Result<()> {
        let (_opened, stream, rooms) = open(&place).await?;
        append(&stream, create()).await?;
        // The second event repeats the first one's live transaction: it fails after writing its
        // event row and the room's state, and none of that stays; the third commits.
        let repeated = AppendEvent {
            state_key: Some("".to_owned()),
            kind: "m.room.topic".to_owned(),
            ..sent("again", "t1", 1_001)
        };
        let ops: Vec<Box<dyn StreamOp>> = vec![
            Box::new(sent("first", "t1", 1_000)),
            Box::new(repeated),
            Box::new(message("after", BOB)),
        ];
        let results = in_one_group(&stream, ops).await?;
        let first = *results[0].as_ref().expect("the first event");
        assert!(
            matches!(results[1], Err(StoreError::Database(_))),
            "{results:?}"
        );
        assert_eq!(*results[2].as_ref().expect("the third event"), first + 1);
        assert!(rooms.event("$again").await?.is_none());
        let state = rooms.state_upto(ROOM, i64::MAX).await?;
        assert_eq!(
            ids(&state),
            ["$create"],
            "the failed event's state is undone"
        );
        let txn = rooms.txn_event(ROOM, ALICE, "D", "send", "t1", 0).await?;
        assert_eq!(txn.as_deref(), Some("$first"));
        let events = rooms.events(ROOM, 0, stream.visible(), 10, false).await?;
        assert_eq!(ids(&events), ["$create", "$first", "$after"]);
        Ok(())
    }

    pub(super) async fn two_events_on_one_predecessor_cannot_both_be_stored(
        place: Place,
    ) -> anyhow::Result<()> {
        let (_opened, stream, rooms) = open(&place).await?;
        append(&stream, create()).await?;
        let on_create = |name| AppendEvent {
            prev_event: Some("$create".to_owned()),
            ..message(name, BOB)
        };
        append(&stream, on_create("m1")).await?;
        // Built on the same predecessor (another node's stale image of the room): refused by
        // the `events_chain` index, as a unique violation.
        let refused = append(&stream, on_create("m2")).await.expect_err("a fork");
        let unique = refused.downcast_ref::<StoreError>().and_then(|e| match e {
            StoreError::Database(sqlx::Error::Database(db)) => Some(db.is_unique_violation()),
            _ => None,
        });
        assert_eq!(unique, Some(true), "{refused}");
        assert!(rooms.event("$m2").await?.is_none());
        // On the event that is now the last one, it is stored.
        append(
            &stream,
            AppendEvent {
                prev_event: Some("$m1".to_owned()),
                ..message("m2", BOB)
            },
        )
        .await?;
        let events = rooms.events(ROOM, 0, stream.visible(), 10, false).await?;
        assert_eq!(ids(&events), ["$create", "$m1", "$m2"]);
        Ok(())
    }

    pub(super) async fn transactions_are_unique_until_pruned(place: Place) -> anyhow::Result<()> {
        let (_opened, stream, rooms) = open(&place).await?;
        append(&stream, create()).await?;
        append(&stream, sent("old", "t1", 1_000)).await?;
        append(&stream, sent("new", "t2", 5_000)).await?;
        // The same key again while live: refused.
        let again = stream
            .submit(Box::new(sent("dup", "t1", 6_000)), Vec::new())
            .await?
            .wait()
            .await;
        assert!(matches!(again, Err(StoreError::Database(_))), "{again:?}");
        let recent = rooms.recent_txns(ROOM, 0, 10).await?;
        let recent: Vec<&str> = recent.iter().map(|t| t.event_id.as_str()).collect();
        assert_eq!(recent, ["$new", "$old"]);
        assert!(
            rooms
                .txn_event(ROOM, ALICE, "D", "send", "t1", 2_000)
                .await?
                .is_none(),
            "accepted before `since`"
        );

        // Past its retention (accepted before 2 000), the transaction is forgotten ...
        let prune = PruneTxns { before_ms: 2_000 };
        stream
            .submit(Box::new(prune), Vec::new())
            .await?
            .wait()
            .await?;
        assert!(
            rooms
                .txn_event(ROOM, ALICE, "D", "send", "t1", 0)
                .await?
                .is_none()
        );
        let kept = rooms.txn_event(ROOM, ALICE, "D", "send", "t2", 0).await?;
        assert_eq!(kept.as_deref(), Some("$new"));
        // ... and its ID makes a new event.
        append(&stream, sent("reused", "t1", 7_000)).await?;
        let reused = rooms.txn_event(ROOM, ALICE, "D", "send", "t1", 0).await?;
        assert_eq!(reused.as_deref(), Some("$reused"));

        // An expired transaction of the same key is replaced by the event that repeats it.
        let replacing = AppendEvent {
            txn_expired_before: 8_000,
            ..sent("replacing", "t1", 9_000)
        };
        append(&stream, replacing).await?;
        let replaced = rooms.txn_event(ROOM, ALICE, "D", "send", "t1", 0).await?;
        assert_eq!(replaced.as_deref(), Some("$replacing"));
        Ok(())
    }

    pub(super) async fn aliases_and_bridges(place: Place) -> anyhow::Result<()> {
        let (_opened, stream, rooms) = open(&place).await?;
        append(&stream, create()).await?;
        assert!(rooms.put_alias("#a:example.com", ROOM, ALICE).await?);
        assert!(!rooms.put_alias("#a:example.com", ROOM, BOB).await?);
        assert!(rooms.put_alias("#b:example.com", ROOM, BOB).await?);
        let (room, creator) = rooms.alias("#a:example.com").await?.expect("the alias");
        assert_eq!((room.as_str(), creator.as_str()), (ROOM, ALICE));
        assert_eq!(
            rooms.room_aliases(ROOM).await?,
            ["#a:example.com", "#b:example.com"]
        );
        rooms.delete_alias("#a:example.com").await?;
        assert!(rooms.alias("#a:example.com").await?.is_none());

        rooms.put_bridge("comm://example.com/o", ROOM).await?;
        rooms
            .put_bridge("comm://example.com/o", "!other:example.com")
            .await?;
        let bridged = rooms.bridged_room("comm://example.com/o").await?;
        assert_eq!(bridged.as_deref().map(|r| r.as_str()), Some(ROOM));
        let object = rooms.bridged_object(ROOM).await?;
        assert_eq!(object.as_deref(), Some("comm://example.com/o"));
        Ok(())
    }
}

crate::store::tests::on_both_backends!(
    cases: [
        events_are_read_back_in_stream_order,
        a_failed_event_is_rolled_back_alone,
        two_events_on_one_predecessor_cannot_both_be_stored,
        transactions_are_unique_until_pruned,
        aliases_and_bridges,
    ],
);
