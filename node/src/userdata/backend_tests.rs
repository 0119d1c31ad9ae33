//! The user-data stores ported to [`Db`](crate::store::db::Db) (profiles, filters), each test
//! body run on SQLite and on PostgreSQL (`crate::store::tests`).

mod cases {
    use ruma::api::client::filter::FilterDefinition;
    use ruma::{owned_mxc_uri, user_id};

    use super::super::{Filters, Profile, ProfileField, Profiles};
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
}

crate::store::tests::on_both_backends!(
    cases: [
        profile_fields_are_set_and_removed_independently,
        a_filter_is_found_by_its_owner_only,
    ],
);
