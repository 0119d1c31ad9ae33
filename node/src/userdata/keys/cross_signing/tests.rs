use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use ruma::signatures::{Ed25519KeyPair, sign_json};
use ruma::{CanonicalJsonObject, device_id, owned_device_id, user_id};
use serde_json::json;

use super::super::super::test_support::fixture_on;
use super::super::KeyUpload;
use super::*;
use crate::store::tests::Place;

mod cases {
    use super::*;

    /// A key pair whose key ID is `ed25519:<name>` (`None`: its public key), and its public key.
    fn pair(name: Option<&str>) -> (Ed25519KeyPair, String) {
        let der = Ed25519KeyPair::generate();
        let public = STANDARD_NO_PAD.encode(
            Ed25519KeyPair::from_der(&der, String::new())
                .unwrap()
                .public_key(),
        );
        let version = name.map_or_else(|| public.clone(), str::to_owned);
        (Ed25519KeyPair::from_der(&der, version).unwrap(), public)
    }

    fn obj(value: serde_json::Value) -> CanonicalJsonObject {
        serde_json::from_value(value).unwrap()
    }

    fn raw_of<T>(object: &CanonicalJsonObject) -> Raw<T> {
        Raw::from_json_string(signed::canonical(object)).unwrap()
    }

    fn signing_key(user: &str, usage: &str, public: &str) -> CanonicalJsonObject {
        obj(
            json!({"user_id": user, "usage": [usage], "keys": {format!("ed25519:{public}"): public}}),
        )
    }

    async fn signature_rows(db: &Db) -> i64 {
        on_db!(db, |e| sqlx::query_scalar(
            "SELECT COUNT(*) FROM key_signatures"
        )
        .fetch_one(e)
        .await
        .unwrap())
    }

    pub(super) async fn signatures_are_merged_into_queries_and_dropped_with_their_device_or_key(
        place: Place,
    ) -> anyhow::Result<()> {
        let f = fixture_on(place).await?;
        let keys = f.data.keys();
        let cs = keys.cross_signing();
        let alice = user_id!("@alice:example.com");
        let (device_pair, device_pub) = pair(Some("DEV"));
        let mut device = obj(json!({
            "user_id": alice, "device_id": "DEV", "algorithms": ["m.megolm.v1.aes-sha2"],
            "keys": {"ed25519:DEV": device_pub},
        }));
        sign_json(alice.as_str(), &device_pair, &mut device).unwrap();
        let upload = KeyUpload {
            device_keys: Some(raw_of(&device)),
            ..KeyUpload::default()
        };
        keys.upload(alice, device_id!("DEV"), upload).await.unwrap();

        let (master_pair, master_pub) = pair(None);
        let (ssk_pair, ssk_pub) = pair(None);
        let mut ssk = signing_key(alice.as_str(), "self_signing", &ssk_pub);
        sign_json(alice.as_str(), &master_pair, &mut ssk).unwrap();
        let master = signing_key(alice.as_str(), "master", &master_pub);
        let checked = cs
            .check(alice, Some(&raw_of(&master)), Some(&raw_of(&ssk)), None)
            .await
            .unwrap();
        assert!(
            !checked.replaces_keys,
            "the first keys need no authentication"
        );
        cs.store(checked).await.unwrap();

        // The self-signing key signs the device; the device signs the master key.
        let mut signed_device = device.clone();
        sign_json(alice.as_str(), &ssk_pair, &mut signed_device).unwrap();
        let mut signed_master = master.clone();
        sign_json(alice.as_str(), &device_pair, &mut signed_master).unwrap();
        let mut batch = SignedKeys::new();
        batch.add_device_keys(owned_device_id!("DEV"), raw_of(&signed_device));
        batch.add_cross_signing_keys(master_pub.clone().into(), raw_of(&signed_master));
        let failures = cs
            .upload_signatures(alice, &BTreeMap::from([(alice.to_owned(), batch)]))
            .await
            .unwrap();
        assert!(failures.is_empty(), "{failures:?}");
        assert_eq!(signature_rows(&f.db).await, 2);

        let wanted = BTreeMap::from([(alice.to_owned(), Vec::new())]);
        let found = keys.query(alice, &wanted).await.unwrap();
        let served =
            signed::object(found.device_keys[alice][device_id!("DEV")].json().get()).unwrap();
        let ssk_id = format!("ed25519:{ssk_pub}");
        assert!(signed::signature(&served, alice.as_str(), &ssk_id).is_some());
        let served = signed::object(found.signing_keys.master_keys[alice].json().get()).unwrap();
        assert!(signed::signature(&served, alice.as_str(), "ed25519:DEV").is_some());
        assert!(found.signing_keys.self_signing_keys.contains_key(alice));

        // A new self-signing key needs authentication, and drops what the old one signed.
        let (_, new_pub) = pair(None);
        let mut new_ssk = signing_key(alice.as_str(), "self_signing", &new_pub);
        sign_json(alice.as_str(), &master_pair, &mut new_ssk).unwrap();
        let checked = cs
            .check(alice, None, Some(&raw_of(&new_ssk)), None)
            .await
            .unwrap();
        assert!(checked.replaces_keys);
        cs.store(checked).await.unwrap();
        assert_eq!(signature_rows(&f.db).await, 1);

        // Deleting the device drops its signature of the master key.
        f.data
            .devices()
            .delete(alice, &[owned_device_id!("DEV")])
            .await
            .unwrap();
        assert_eq!(signature_rows(&f.db).await, 0);
        Ok(())
    }
}

crate::store::tests::on_both_backends!(cases: [signatures_are_merged_into_queries_and_dropped_with_their_device_or_key]);
