//! The presence writer over a database that fails, then serves again, on both backends: the
//! `presence` table renamed away makes every read and write of it fail (as a database outage
//! does, for presence), renamed back it serves. The writer runs on the fixture's manual clock;
//! `advance` returns once the sweeps it made due are done.

mod cases {
    use std::time::Duration;

    use ruma::presence::PresenceState;
    use ruma::user_id;
    use tokio_util::sync::CancellationToken;

    use crate::config::PresenceConfig;
    use crate::store::db::{Db, on_db};
    use crate::store::tests::Place;
    use crate::userdata::test_support::{Fixture, fixture_on};

    /// Offline after 30 s; a sweep every 5 s.
    fn config() -> PresenceConfig {
        PresenceConfig {
            idle_timeout: Duration::from_secs(300),
            offline_timeout: Duration::from_secs(30),
        }
    }

    /// Renames the `presence` table to `to` (from `from`).
    async fn rename(db: &Db, from: &str, to: &str) {
        let sql = format!("ALTER TABLE {from} RENAME TO {to}");
        on_db!(db, |e| sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .execute(e)
            .await
            .unwrap()
            .rows_affected());
    }

    /// The stored state of `user` in `table`.
    async fn state_in(f: &Fixture, table: &str, user: &str) -> Option<String> {
        let sql = format!("SELECT presence FROM {table} WHERE user_id = $1");
        on_db!(&f.db, |e| sqlx::query_scalar(sqlx::AssertSqlSafe(
            sql.clone()
        ))
        .bind(user)
        .fetch_optional(e)
        .await
        .unwrap())
    }

    /// A timeout whose write failed stays due: the next sweep stores it once the database
    /// serves (the user was forgotten before, and stayed `online` for everyone).
    pub(super) async fn a_timeout_the_database_failed_is_stored_by_a_later_sweep(
        place: Place,
    ) -> anyhow::Result<()> {
        let f = fixture_on(place).await?;
        let presence = f.data.presence().clone();
        let stop = CancellationToken::new();
        let writer = tokio::spawn(presence.clone().run(config(), stop.clone()));
        let alice = user_id!("@alice:example.com");
        presence.set(alice, &PresenceState::Online, None).await?;

        rename(&f.db, "presence", "presence_away").await;
        f.clock.advance(Duration::from_secs(30)).await;
        assert_eq!(
            state_in(&f, "presence_away", alice.as_str())
                .await
                .as_deref(),
            Some("online"),
            "the offline timeout could not be stored"
        );
        rename(&f.db, "presence_away", "presence").await;
        f.clock.advance(Duration::from_secs(5)).await;
        let stored = presence.get(alice).await?.expect("alice's presence");
        assert_eq!(stored.presence, "offline");

        stop.cancel();
        writer.await?;
        Ok(())
    }

    /// The users online before the start, unread because the database failed then, are read by
    /// a later sweep and time out (they were never read before, and stayed `online`).
    pub(super) async fn users_online_before_a_failed_start_are_read_later_and_time_out(
        place: Place,
    ) -> anyhow::Result<()> {
        let f = fixture_on(place).await?;
        let alice = user_id!("@alice:example.com");
        on_db!(&f.db, |e| sqlx::query(
            "INSERT INTO presence (user_id, presence, status_msg, last_active_ms, stream) \
             VALUES ($1, 'online', NULL, 0, 0)",
        )
        .bind(alice.as_str())
        .execute(e)
        .await?
        .rows_affected());
        rename(&f.db, "presence", "presence_away").await;
        let presence = f.data.presence().clone();
        let stop = CancellationToken::new();
        let writer = tokio::spawn(presence.clone().run(config(), stop.clone()));
        // The start's read failed, and this sweep's too.
        f.clock.advance(Duration::from_secs(5)).await;

        rename(&f.db, "presence_away", "presence").await;
        f.clock.advance(Duration::from_secs(5)).await;
        assert_eq!(
            state_in(&f, "presence", alice.as_str()).await.as_deref(),
            Some("online"),
            "one offline timeout from when alice was read"
        );
        f.clock.advance(Duration::from_secs(30)).await;
        let stored = presence.get(alice).await?.expect("alice's presence");
        assert_eq!(stored.presence, "offline");

        stop.cancel();
        writer.await?;
        Ok(())
    }
}

crate::store::tests::on_both_backends!(
    cases: [
        a_timeout_the_database_failed_is_stored_by_a_later_sweep,
        users_online_before_a_failed_start_are_read_later_and_time_out,
    ],
);
