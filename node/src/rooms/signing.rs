//! [`ServerKey`]: the server's ed25519 signing key, generated on first start and persisted in the
//! database (`server_keys`: `rethink.db`, or with `store.url` the PostgreSQL database, where the
//! nodes of a cluster share it), the hashing and signing of new PDUs with it (room version 11:
//! content hash, signature under the server name, event ID as the reference hash), and its
//! publication in the Matrix server-key format ([`ServerKey::published`], served at
//! `GET /_matrix/key/v2/server`).

use std::time::{SystemTime, UNIX_EPOCH};

use sha2::Digest as _;

use ruma::canonical_json::{CanonicalJsonObject, CanonicalJsonValue};
use ruma::room_version_rules::RoomVersionRules;
use ruma::serde::Base64;
use ruma::signatures::{Ed25519KeyPair, hash_and_sign_event, reference_hash, sign_json};
use ruma::{OwnedEventId, OwnedServerName};

use super::error::RoomError;
use crate::store::StoreError;
use crate::store::db::{Db, Tx, on_tx};

/// The key's version: `ed25519:<version>`.
const KEY_VERSION_PREFIX: &str = "a_";

/// The server's signing key.
pub struct ServerKey {
    server_name: OwnedServerName,
    pair: Ed25519KeyPair,
    /// The SHA-256 of the key's secret bytes: what [`ServerKey::derived_secret`] derives from.
    seed: [u8; 32],
}

impl std::fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerKey")
            .field("server_name", &self.server_name)
            .field("key_id", &self.key_id())
            .finish_non_exhaustive()
    }
}

impl ServerKey {
    /// Loads the server's key, generating and storing one on first start. On PostgreSQL the
    /// table is locked meanwhile, so that nodes starting at once on one database end up with one
    /// key (the first stored).
    pub async fn load_or_generate(
        db: &Db,
        server_name: OwnedServerName,
    ) -> Result<Self, StoreError> {
        let mut tx = db.begin().await?;
        if let Tx::Postgres(pg) = &mut tx {
            // Readers go on; a second writer waits for this transaction.
            sqlx::query("LOCK TABLE server_keys IN SHARE ROW EXCLUSIVE MODE")
                .execute(&mut **pg)
                .await?;
        }
        let stored: Option<(String, Vec<u8>)> = on_tx!(&mut tx, |c| sqlx::query_as(
            "SELECT key_id, pkcs8 FROM server_keys ORDER BY created_at, key_id LIMIT 1"
        )
        .fetch_optional(c)
        .await?);
        let (version, pkcs8) = match stored {
            Some((key_id, pkcs8)) => (
                key_id
                    .strip_prefix("ed25519:")
                    .unwrap_or(&key_id)
                    .to_owned(),
                pkcs8,
            ),
            None => {
                let pkcs8 = Ed25519KeyPair::generate().to_vec();
                let version = format!(
                    "{KEY_VERSION_PREFIX}{}",
                    Base64::<ruma::serde::base64::UrlSafe, _>::new(&pkcs8[pkcs8.len() - 4..])
                );
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0);
                on_tx!(&mut tx, |c| sqlx::query(
                    "INSERT INTO server_keys (key_id, pkcs8, created_at) VALUES ($1, $2, $3)"
                )
                .bind(format!("ed25519:{version}"))
                .bind(&pkcs8)
                .bind(now)
                .execute(c)
                .await?
                .rows_affected());
                tracing::info!(key = %version, "generated the server's ed25519 signing key");
                (version, pkcs8)
            }
        };
        tx.commit().await?;
        let pair =
            Ed25519KeyPair::from_der(&pkcs8, version.clone()).map_err(|e| StoreError::Corrupt {
                what: "server key",
                id: version,
                source: e.into(),
            })?;
        let seed = sha2::Sha256::digest(&pkcs8).into();
        Ok(ServerKey {
            server_name,
            pair,
            seed,
        })
    }

    /// A secret of this server for `purpose`, derived from the key's secret bytes: the same on
    /// every node that shares the key (the nodes of a cluster), different for another purpose,
    /// and not computable from anything the server publishes.
    pub fn derived_secret(&self, purpose: &str) -> [u8; 32] {
        let mut h = sha2::Sha256::new();
        h.update(b"rethink-node derived secret\0");
        h.update(self.seed);
        h.update(purpose.as_bytes());
        h.finalize().into()
    }

    /// `ed25519:<version>`.
    pub fn key_id(&self) -> String {
        format!("ed25519:{}", self.pair.version())
    }

    /// The key as the Matrix server-key API publishes it (`GET /_matrix/key/v2/server`): the
    /// server name, `verify_keys` (`ed25519:<version>` → unpadded base64 public key), no old
    /// keys, valid until `valid_until_ts` (unix ms), signed by the key itself.
    pub fn published(&self, valid_until_ts: u64) -> Result<CanonicalJsonObject, RoomError> {
        let public = Base64::<ruma::serde::base64::Standard, _>::new(self.pair.public_key());
        let mut key = CanonicalJsonObject::new();
        key.insert(
            "key".to_owned(),
            CanonicalJsonValue::String(public.encode()),
        );
        let mut verify_keys = CanonicalJsonObject::new();
        verify_keys.insert(self.key_id(), CanonicalJsonValue::Object(key));
        let valid_until = ruma::UInt::try_from(valid_until_ts).unwrap_or(ruma::UInt::MAX);
        let mut object = CanonicalJsonObject::new();
        object.insert(
            "server_name".to_owned(),
            CanonicalJsonValue::String(self.server_name.to_string()),
        );
        object.insert(
            "valid_until_ts".to_owned(),
            CanonicalJsonValue::Integer(valid_until.into()),
        );
        object.insert(
            "verify_keys".to_owned(),
            CanonicalJsonValue::Object(verify_keys),
        );
        object.insert(
            "old_verify_keys".to_owned(),
            CanonicalJsonValue::Object(CanonicalJsonObject::new()),
        );
        sign_json(self.server_name.as_str(), &self.pair, &mut object)
            .map_err(RoomError::Signing)?;
        Ok(object)
    }

    /// Signs `object` as Matrix signs JSON (the stub catalogue's descriptors): canonical JSON
    /// without `signatures` and `unsigned`, the signature added under
    /// `signatures.<server name>.<key id>`.
    pub fn sign_json(&self, object: &mut CanonicalJsonObject) -> Result<(), RoomError> {
        sign_json(self.server_name.as_str(), &self.pair, object).map_err(RoomError::Signing)
    }

    /// Adds the content hash and the server's signature to `pdu`, and returns its event ID (the
    /// reference hash).
    pub fn hash_and_sign(
        &self,
        pdu: &mut CanonicalJsonObject,
        rules: &RoomVersionRules,
    ) -> Result<OwnedEventId, RoomError> {
        hash_and_sign_event(self.server_name.as_str(), &self.pair, pdu, &rules.redaction).map_err(
            |e| match e {
                ruma::signatures::JsonError::PduTooLarge => RoomError::TooLarge,
                other => RoomError::Signing(other),
            },
        )?;
        let hash = reference_hash(pdu, rules).map_err(|e| match e {
            ruma::signatures::JsonError::PduTooLarge => RoomError::TooLarge,
            other => RoomError::Signing(other),
        })?;
        OwnedEventId::try_from(format!("${hash}")).map_err(|source| RoomError::Identifier {
            what: "event ID",
            source,
        })
    }
}

#[cfg(test)]
mod backend_tests {
    //! The server key on both backends (`crate::store::tests`).

    mod cases {
        use super::super::ServerKey;
        use crate::store::tests::Place;

        pub(in super::super) async fn the_key_is_generated_once_and_kept(
            place: Place,
        ) -> anyhow::Result<()> {
            let opened = place.open().await?;
            let db = opened.matrix_db();
            let name: ruma::OwnedServerName = "example.com".try_into()?;
            let (a, b) = if db.is_postgres() {
                // Nodes starting at once on one database: one key. (A SQLite file has one node.)
                let (a, b) = tokio::join!(
                    ServerKey::load_or_generate(&db, name.clone()),
                    ServerKey::load_or_generate(&db, name.clone())
                );
                (a?, b?)
            } else {
                let a = ServerKey::load_or_generate(&db, name.clone()).await?;
                (a, ServerKey::load_or_generate(&db, name.clone()).await?)
            };
            assert_eq!(a.key_id(), b.key_id());
            assert!(a.key_id().starts_with("ed25519:a_"), "{}", a.key_id());
            // Every node sharing the key derives the same secrets (the node challenges one
            // issues, another checks), one per purpose.
            assert_eq!(a.derived_secret("x"), b.derived_secret("x"));
            assert_ne!(a.derived_secret("x"), a.derived_secret("y"));
            let published = a.published(1)?;
            opened.close().await;

            let opened = place.open().await?;
            let again = ServerKey::load_or_generate(&opened.matrix_db(), name).await?;
            assert_eq!(again.key_id(), a.key_id());
            assert_eq!(again.published(1)?, published);
            assert_eq!(again.derived_secret("x"), a.derived_secret("x"));
            Ok(())
        }
    }

    crate::store::tests::on_both_backends!(cases: [the_key_is_generated_once_and_kept]);
}
