//! Tests of the key store: one-time and fallback key claims, device-list changes.

use ruma::{device_id, owned_device_id, owned_user_id, user_id};

use super::super::test_support::fixture_on;
use super::*;
use crate::store::tests::Place;

mod cases {
    use super::*;

    fn otk(id: &str, key: &str) -> (OwnedOneTimeKeyId, Raw<OneTimeKey>) {
        (
            id.try_into().unwrap(),
            Raw::from_json_string(format!(r#"{{"key":"{key}","signatures":{{}}}}"#)).unwrap(),
        )
    }

    fn device_keys(user: &str, device: &str, key: &str) -> Raw<DeviceKeys> {
        Raw::from_json_string(format!(
        r#"{{"user_id":"{user}","device_id":"{device}","algorithms":["m.olm.v1.curve25519-aes-sha2"],"keys":{{"curve25519:{device}":"{key}"}},"signatures":{{}}}}"#
    ))
    .unwrap()
    }

    pub(super) async fn one_time_keys_are_claimed_once_then_the_fallback(
        place: Place,
    ) -> anyhow::Result<()> {
        let f = fixture_on(place).await?;
        let keys = f.data.keys();
        let alice = user_id!("@alice:example.com");
        let dev = device_id!("DEV");
        let counts = keys
            .upload(
                alice,
                dev,
                KeyUpload {
                    one_time_keys: [
                        otk("signed_curve25519:A", "a"),
                        otk("signed_curve25519:B", "b"),
                    ]
                    .into(),
                    fallback_keys: [otk("signed_curve25519:F", "f")].into(),
                    ..KeyUpload::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(
            counts[&OneTimeKeyAlgorithm::SignedCurve25519],
            UInt::from(2u32)
        );

        let wanted = BTreeMap::from([(
            owned_user_id!("@alice:example.com"),
            BTreeMap::from([(
                owned_device_id!("DEV"),
                OneTimeKeyAlgorithm::SignedCurve25519,
            )]),
        )]);
        let mut seen = Vec::new();
        for _ in 0..4 {
            let got = keys.claim(&wanted).await.unwrap();
            let key = got[alice][dev].keys().next().unwrap().to_string();
            seen.push(key);
        }
        assert_eq!(
            seen,
            [
                "signed_curve25519:A",
                "signed_curve25519:B",
                "signed_curve25519:F",
                "signed_curve25519:F"
            ]
        );
        assert_eq!(
            keys.counts(alice, dev).await.unwrap()[&OneTimeKeyAlgorithm::SignedCurve25519],
            UInt::MIN
        );
        Ok(())
    }

    pub(super) async fn a_fallback_key_is_unused_until_claimed_and_a_new_one_starts_unused(
        place: Place,
    ) -> anyhow::Result<()> {
        let f = fixture_on(place).await?;
        let keys = f.data.keys();
        let alice = user_id!("@alice:example.com");
        let dev = device_id!("DEV");
        let fallback = |id: &str, key: &str| KeyUpload {
            fallback_keys: [otk(id, key)].into(),
            ..KeyUpload::default()
        };
        let unused = || keys.unused_fallback_key_types(alice, dev);
        assert!(unused().await.unwrap().is_empty(), "none uploaded yet");
        keys.upload(alice, dev, fallback("signed_curve25519:F1", "f1"))
            .await
            .unwrap();
        assert_eq!(
            unused().await.unwrap(),
            [OneTimeKeyAlgorithm::SignedCurve25519]
        );

        let wanted = BTreeMap::from([(
            alice.to_owned(),
            BTreeMap::from([(dev.to_owned(), OneTimeKeyAlgorithm::SignedCurve25519)]),
        )]);
        let before = f.visible();
        keys.claim(&wanted).await.unwrap();
        assert!(
            unused().await.unwrap().is_empty(),
            "the fallback key was used"
        );
        assert!(
            f.visible() > before,
            "the claim took a position (waking alice)"
        );

        // The same key uploaded again stays used; a new one is unused and replaces it.
        keys.upload(alice, dev, fallback("signed_curve25519:F1", "f1"))
            .await
            .unwrap();
        assert!(unused().await.unwrap().is_empty());
        keys.upload(alice, dev, fallback("signed_curve25519:F2", "f2"))
            .await
            .unwrap();
        assert_eq!(
            unused().await.unwrap(),
            [OneTimeKeyAlgorithm::SignedCurve25519]
        );
        let got = keys.claim(&wanted).await.unwrap();
        assert_eq!(
            got[alice][dev]
                .keys()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["signed_curve25519:F2"]
        );
        Ok(())
    }

    pub(super) async fn device_key_changes_are_seen_by_room_mates_only(
        place: Place,
    ) -> anyhow::Result<()> {
        let f = fixture_on(place).await?;
        let keys = f.data.keys();
        let (alice, bob, carol) = (
            user_id!("@alice:example.com"),
            user_id!("@bob:example.com"),
            user_id!("@carol:example.com"),
        );
        f.join("!r:example.com", alice.as_str()).await;
        f.join("!r:example.com", bob.as_str()).await;
        let start = f.visible();
        let upload = || KeyUpload {
            device_keys: Some(device_keys(alice.as_str(), "DEV", "k1")),
            ..KeyUpload::default()
        };
        keys.upload(alice, device_id!("DEV"), upload())
            .await
            .unwrap();
        let after_first = f.visible();
        assert_eq!(
            keys.changed_users(bob, start, after_first).await.unwrap(),
            [alice]
        );
        assert_eq!(
            keys.changed_users(alice, start, after_first).await.unwrap(),
            [alice]
        );
        assert!(
            keys.changed_users(carol, start, after_first)
                .await
                .unwrap()
                .is_empty()
        );

        // The same keys again are no change.
        keys.upload(alice, device_id!("DEV"), upload())
            .await
            .unwrap();
        let after_same = f.visible();
        assert!(
            keys.changed_users(bob, after_first, after_same)
                .await
                .unwrap()
                .is_empty()
        );

        let wanted = BTreeMap::from([(alice.to_owned(), Vec::new())]);
        let query = || keys.query(bob, &wanted);
        assert_eq!(query().await.unwrap().device_keys[alice].len(), 1);
        f.data
            .devices()
            .delete(alice, &[owned_device_id!("DEV")])
            .await
            .unwrap();
        assert!(query().await.unwrap().device_keys[alice].is_empty());
        let after_delete = f.visible();
        assert_eq!(
            keys.changed_users(bob, after_same, after_delete)
                .await
                .unwrap(),
            [alice]
        );
        Ok(())
    }

    pub(super) async fn key_changes_reach_no_further_than_the_visible_position(
        place: Place,
    ) -> anyhow::Result<()> {
        let f = fixture_on(place).await?;
        let keys = f.data.keys();
        let (alice, bob, carol) = (
            user_id!("@alice:example.com"),
            user_id!("@bob:example.com"),
            user_id!("@carol:example.com"),
        );
        for user in [alice, bob, carol] {
            f.join("!r:example.com", user.as_str()).await;
        }
        let start = f.visible();
        keys.upload(
            alice,
            device_id!("DEV"),
            KeyUpload {
                device_keys: Some(device_keys(alice.as_str(), "DEV", "k1")),
                ..KeyUpload::default()
            },
        )
        .await?;
        let now = f.visible();
        // A change past the visible position (being committed, or another node's not read
        // yet): no answer up to a token far beyond the stream names it.
        on_db!(&f.db, |e| sqlx::query(
            "INSERT INTO device_list_changes (stream, user_id) VALUES ($1, $2)",
        )
        .bind(now + 10)
        .bind(carol.as_str())
        .execute(e)
        .await?
        .rows_affected());
        let current = keys.device_list_changes(bob, start, now).await?;
        assert_eq!(current.changed, [alice]);
        for far in [now + 10, 1_000_000, i64::MAX] {
            assert_eq!(
                keys.device_list_changes(bob, start, far).await?,
                current,
                "to = {far}"
            );
        }
        // From the first token, and from or past the end: the same, and nothing.
        assert_eq!(keys.device_list_changes(bob, 0, i64::MAX).await?, current);
        for from in [now, now + 5, i64::MAX] {
            assert_eq!(
                keys.device_list_changes(bob, from, i64::MAX).await?,
                DeviceListChanges::default(),
                "from = {from}"
            );
        }
        Ok(())
    }
}

crate::store::tests::on_both_backends!(cases: [one_time_keys_are_claimed_once_then_the_fallback, a_fallback_key_is_unused_until_claimed_and_a_new_one_starts_unused, device_key_changes_are_seen_by_room_mates_only, key_changes_reach_no_further_than_the_visible_position]);
