//! Two-backend tests of the user-data stores that have no test module of their own (profiles,
//! filters, presence) and of what only shows under concurrency (key claims), each test body
//! run on SQLite and on PostgreSQL (`crate::store::tests`). The stores' other tests run on both
//! backends in their own modules ([`test_support::fixture_on`](super::test_support::fixture_on)).

mod cases {
    use std::collections::{BTreeMap, BTreeSet};

    use ruma::api::client::filter::FilterDefinition;
    use ruma::presence::PresenceState;
    use ruma::serde::Raw;
    use ruma::{OneTimeKeyAlgorithm, owned_device_id, owned_mxc_uri, owned_user_id, user_id};
    use tokio_util::sync::CancellationToken;

    use super::super::test_support::fixture_on;
    use super::super::{Filters, KeyUpload, Profile, ProfileField, Profiles};
    use crate::config::PresenceConfig;
    use crate::store::accounts::{AccountStore, NewAccount};
    use crate::store::tests::Place;

    pub(super) async fn profile_fields_are_set_and_removed_independently(
        place: Place,
    ) -> anyhow::Result<()> {
        let opened = place.open().await?;
        let db = opened.matrix_db();
        let accounts = AccountStore::new(db.clone());
        let p = Profiles::new(db, accounts.clone(), "example.com".try_into()?);
        let alice = user_id!("@alice:example.com");
        assert_eq!(p.profile(alice).await?, Profile::default());
        assert!(!p.exists(alice).await?);
        p.set(alice, ProfileField::DisplayName(Some("Alice")))
            .await?;
        let avatar = owned_mxc_uri!("mxc://example.com/abc");
        p.set(alice, ProfileField::AvatarUrl(Some(&avatar))).await?;
        p.set(alice, ProfileField::DisplayName(None)).await?;
        let got = p.profile(alice).await?;
        assert_eq!(got.displayname, None);
        assert_eq!(got.avatar_url, Some(avatar));
        assert!(p.exists(alice).await?);

        // A local account exists for the profile API without a profile; a remote user of the
        // same localpart does not.
        let bob = NewAccount {
            localpart: "bob",
            password_hash: None,
            external_subject: None,
        };
        accounts.create_account(bob, None, 1).await?;
        assert!(p.exists(user_id!("@bob:example.com")).await?);
        assert!(!p.exists(user_id!("@bob:elsewhere.org")).await?);
        Ok(())
    }

    /// Each change counts a version; a user's member events are behind until the re-send of
    /// the latest version is marked done (the re-send of an older one does not clear it).
    pub(super) async fn profile_changes_are_behind_until_their_re_send_is_done(
        place: Place,
    ) -> anyhow::Result<()> {
        let opened = place.open().await?;
        let db = opened.matrix_db();
        let p = Profiles::new(db.clone(), AccountStore::new(db), "example.com".try_into()?);
        let (alice, bob) = (user_id!("@alice:example.com"), user_id!("@bob:example.com"));
        assert_eq!(p.versioned(alice).await?, (Profile::default(), 0));
        assert!(p.members_behind("", 10).await?.is_empty());
        p.set(alice, ProfileField::DisplayName(Some("A"))).await?;
        p.set(bob, ProfileField::DisplayName(Some("B"))).await?;
        let (profile, v1) = p.versioned(alice).await?;
        assert_eq!((profile.displayname.as_deref(), v1), (Some("A"), 1));
        assert_eq!(
            p.members_behind("", 10).await?,
            [alice.as_str(), bob.as_str()]
        );
        assert_eq!(p.members_behind("", 1).await?, [alice.as_str()]);
        assert_eq!(p.members_behind(alice.as_str(), 10).await?, [bob.as_str()]);
        // A change during alice's re-send: its end does not clear the newer one.
        p.set(alice, ProfileField::DisplayName(Some("A2"))).await?;
        p.members_done(alice, v1).await?;
        assert_eq!(
            p.members_behind("", 10).await?,
            [alice.as_str(), bob.as_str()]
        );
        let (_, v2) = p.versioned(alice).await?;
        assert_eq!(v2, 2);
        p.members_done(alice, v2).await?;
        p.members_done(alice, v1).await?;
        assert_eq!(p.members_behind("", 10).await?, [bob.as_str()]);
        Ok(())
    }

    pub(super) async fn a_filter_is_found_by_its_owner_only(place: Place) -> anyhow::Result<()> {
        let opened = place.open().await?;
        let filters = Filters::new(opened.matrix_db());
        let mut def = FilterDefinition::default();
        def.event_fields = Some(vec!["type".to_owned()]);
        let a = user_id!("@a:example.com");
        let id = filters.create(a, &def).await?;
        let other = filters.create(a, &FilterDefinition::default()).await?;
        assert_ne!(id, other);
        let got = filters.get(a, &id).await?.expect("a's filter");
        assert_eq!(got.event_fields, def.event_fields);
        assert!(
            filters
                .get(user_id!("@b:example.com"), &id)
                .await?
                .is_none()
        );
        assert!(filters.get(a, "nope").await?.is_none());
        assert!(filters.get(a, "999").await?.is_none());
        opened.close().await;

        // Stored, not only cached.
        let opened = place.open().await?;
        let filters = Filters::new(opened.matrix_db());
        let got = filters.get(a, &id).await?.expect("a's filter after reopen");
        assert_eq!(got.event_fields, def.event_fields);
        Ok(())
    }

    pub(super) async fn presence_is_stored_and_seen_by_room_mates_only(
        place: Place,
    ) -> anyhow::Result<()> {
        let f = fixture_on(place).await?;
        let presence = f.data.presence().clone();
        let stop = CancellationToken::new();
        let writer = tokio::spawn(
            presence
                .clone()
                .run(PresenceConfig::default(), stop.clone()),
        );
        let (alice, bob, carol) = (
            user_id!("@alice:example.com"),
            user_id!("@bob:example.com"),
            user_id!("@carol:example.com"),
        );
        f.join("!r:example.com", alice.as_str()).await;
        f.join("!r:example.com", bob.as_str()).await;
        let start = f.visible();
        assert!(presence.get(alice).await?.is_none());
        presence
            .set(alice, &PresenceState::Unavailable, Some("lunch"))
            .await?;
        let stored = presence.get(alice).await?.expect("alice's presence");
        assert_eq!(
            (stored.presence.as_str(), stored.status_msg.as_deref()),
            ("unavailable", Some("lunch"))
        );

        // A sync changes the state and keeps the status message.
        let syncing = presence.syncing(alice, &PresenceState::Online).await?;
        let stored = presence.get(alice).await?.expect("alice's presence");
        assert_eq!(
            (stored.presence.as_str(), stored.status_msg.as_deref()),
            ("online", Some("lunch"))
        );
        let upto = f.visible();
        let seen = presence.changes(bob, start, upto).await?;
        assert_eq!(seen.len(), 1, "bob shares a room with alice");
        let event = seen[0].deserialize()?;
        assert_eq!(event.sender, alice);
        assert_eq!(event.content.status_msg.as_deref(), Some("lunch"));
        assert!(presence.changes(carol, start, upto).await?.is_empty());
        assert!(presence.changes(bob, upto, upto).await?.is_empty());

        // A set without a status message removes it.
        presence.set(alice, &PresenceState::Online, None).await?;
        let stored = presence.get(alice).await?.expect("alice's presence");
        assert_eq!(stored.status_msg, None);
        drop(syncing);
        stop.cancel();
        writer.await?;
        Ok(())
    }

    pub(super) async fn concurrent_claims_hand_out_every_one_time_key_once(
        place: Place,
    ) -> anyhow::Result<()> {
        const KEYS: usize = 16;
        let f = fixture_on(place).await?;
        let keys = f.data.keys().clone();
        let (alice, dev) = (
            owned_user_id!("@alice:example.com"),
            owned_device_id!("DEV"),
        );
        let key = |id: String| {
            let json = format!(r#"{{"key":"{id}","signatures":{{}}}}"#);
            (id.try_into().unwrap(), Raw::from_json_string(json).unwrap())
        };
        let upload = KeyUpload {
            one_time_keys: (0..KEYS)
                .map(|i| key(format!("signed_curve25519:K{i:02}")))
                .collect(),
            fallback_keys: [key("signed_curve25519:F".to_owned())].into(),
            ..KeyUpload::default()
        };
        keys.upload(&alice, &dev, upload).await?;
        let wanted = BTreeMap::from([(
            alice.clone(),
            BTreeMap::from([(dev.clone(), OneTimeKeyAlgorithm::SignedCurve25519)]),
        )]);
        let claims: Vec<_> = (0..KEYS)
            .map(|_| {
                let (keys, wanted) = (keys.clone(), wanted.clone());
                tokio::spawn(async move { keys.claim(&wanted).await })
            })
            .collect();
        let mut got = BTreeSet::new();
        for claim in claims {
            let claimed = claim.await??;
            for id in claimed[&alice][&dev].keys() {
                assert!(got.insert(id.to_string()), "{id} handed out twice");
            }
        }
        let expected: BTreeSet<String> = (0..KEYS)
            .map(|i| format!("signed_curve25519:K{i:02}"))
            .collect();
        assert_eq!(
            got, expected,
            "every one-time key once, and no fallback key yet"
        );
        Ok(())
    }
}

crate::store::tests::on_both_backends!(
    cases: [
        profile_fields_are_set_and_removed_independently,
        profile_changes_are_behind_until_their_re_send_is_done,
        a_filter_is_found_by_its_owner_only,
        presence_is_stored_and_seen_by_room_mates_only,
        concurrent_claims_hand_out_every_one_time_key_once,
    ],
);
