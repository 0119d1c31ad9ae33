//! [`CrossSigning`]: users' cross-signing keys (`POST /keys/device_signing/upload`) and the
//! signatures uploaded for keys afterwards (`POST /keys/signatures/upload`).
//!
//! A user has at most one master, one self-signing and one user-signing key, each an ed25519
//! key named `ed25519:<public key>`. The self-signing and user-signing keys must carry a valid
//! signature by the master key (the one uploaded with them, else the stored one); no key may be
//! named like one of the user's devices. An upload that changes keys while a master key is
//! stored needs user-interactive authentication, which the handler asks for when
//! [`CheckedSigningKeys::replaces_keys`] says so; the first upload, or one of no new keys, needs
//! none. Replacing a key drops the signatures it made (and, for a master key, those it got).
//!
//! Signatures uploaded afterwards are checked against the stored object and the signer's key,
//! and kept apart from the objects they sign: a user's device keys signed by their self-signing
//! key, their master key signed by one of their devices, and another user's master key signed by
//! the uploader's user-signing key. `keys/query` merges them into the signed objects: those by
//! the key's owner for everyone, those by another user for that user only.
//!
//! Every change of keys or signatures is a device-list change of the user whose key it is.

use std::collections::{BTreeMap, BTreeSet};

use ruma::api::client::keys::upload_signatures::v3::SignedKeys;
use ruma::encryption::{CrossSigningKey, KeyUsage};
use ruma::serde::Raw;
use ruma::{OwnedUserId, UserId};

use super::super::memberships::Memberships;
use super::super::{Write, commit, raw};
use super::{record_change, signed};
use crate::store::StoreError;
use crate::store::accounts::AccountStore;
use crate::store::db::{Conn, Db, on_conn, on_db};
use crate::stream::StreamWriter;

/// What a cross-signing key is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Usage {
    Master,
    SelfSigning,
    UserSigning,
}

impl Usage {
    /// The name in the spec (the key's `usage`), also the stored one.
    fn as_str(self) -> &'static str {
        match self {
            Usage::Master => "master",
            Usage::SelfSigning => "self_signing",
            Usage::UserSigning => "user_signing",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [Usage::Master, Usage::SelfSigning, Usage::UserSigning]
            .into_iter()
            .find(|u| u.as_str() == s)
    }

    fn key_usage(self) -> KeyUsage {
        match self {
            Usage::Master => KeyUsage::Master,
            Usage::SelfSigning => KeyUsage::SelfSigning,
            Usage::UserSigning => KeyUsage::UserSigning,
        }
    }
}

/// Why a cross-signing key upload is refused.
#[derive(Debug, thiserror::Error)]
pub enum CrossSigningError {
    /// A key is malformed, of another user, or has the wrong usage.
    #[error("invalid {usage} key: {reason}")]
    InvalidKey { usage: &'static str, reason: String },
    /// A self-signing or user-signing key lacks a valid signature by the master key.
    #[error("{0}")]
    InvalidSignature(String),
    /// Self-signing or user-signing keys without any master key.
    #[error("no master key: upload one with the self-signing and user-signing keys")]
    MissingMaster,
    /// A key's public key is one of the user's device IDs.
    #[error("a cross-signing key may not be named like one of the user's devices")]
    NamedLikeADevice,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A stored key: its public key (unpadded base64) and its object in canonical JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StoredKey {
    public: String,
    json: String,
}

/// An upload checked by [`CrossSigning::check`], to give to [`CrossSigning::store`].
#[derive(Debug)]
pub struct CheckedSigningKeys {
    user: OwnedUserId,
    keys: Vec<(Usage, StoredKey)>,
    /// The upload changes keys while a master key is stored: user-interactive authentication
    /// is needed.
    pub replaces_keys: bool,
}

/// Why one signature of a `keys/signatures/upload` was refused: its kind (mapped to an
/// `errcode` by `matrix/error.rs`) and the message.
#[derive(Debug, PartialEq, Eq)]
pub struct SignatureFailure {
    pub kind: SignatureFailureKind,
    pub error: String,
}

/// The kinds of [`SignatureFailure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureFailureKind {
    /// The signature is missing or wrong.
    InvalidSignature,
    /// The signed key is unknown.
    UnknownKey,
    /// The signed object is not a JSON object.
    BadJson,
}

impl SignatureFailure {
    fn invalid(error: impl Into<String>) -> Self {
        Self {
            kind: SignatureFailureKind::InvalidSignature,
            error: error.into(),
        }
    }

    fn unknown_key() -> Self {
        Self {
            kind: SignatureFailureKind::UnknownKey,
            error: "no such key: a device ID of yours, or the public key of a master key".into(),
        }
    }
}

/// The refused signatures of a `keys/signatures/upload`, by user and key ID.
pub(crate) type SignatureFailures = BTreeMap<OwnedUserId, BTreeMap<String, SignatureFailure>>;

/// Cross-signing keys by user, as `keys/query` answers them.
pub(crate) type SigningKeysByUser = BTreeMap<OwnedUserId, Raw<CrossSigningKey>>;

/// The cross-signing keys of queried users, with the signatures the asking user may see.
#[derive(Debug, Default)]
pub struct QueriedSigningKeys {
    pub master_keys: SigningKeysByUser,
    pub self_signing_keys: SigningKeysByUser,
    /// The asking user's own only.
    pub user_signing_keys: SigningKeysByUser,
}

/// A stored signature as `(signed key, signer user, signer key ID, signature)`.
pub(super) type SignatureRow = (String, String, String, String);

/// The cross-signing store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct CrossSigning {
    db: Db,
    stream: StreamWriter,
    memberships: Memberships,
    accounts: AccountStore,
}

impl CrossSigning {
    pub(super) fn new(
        db: Db,
        stream: StreamWriter,
        memberships: Memberships,
        accounts: AccountStore,
    ) -> Self {
        Self {
            accounts,
            db,
            stream,
            memberships,
        }
    }

    /// Checks the keys `user` uploads (each optional).
    pub async fn check(
        &self,
        user: &UserId,
        master: Option<&Raw<CrossSigningKey>>,
        self_signing: Option<&Raw<CrossSigningKey>>,
        user_signing: Option<&Raw<CrossSigningKey>>,
    ) -> Result<CheckedSigningKeys, CrossSigningError> {
        let stored = self.stored(user).await?;
        let devices = self.accounts.devices(user.localpart()).await?;
        let uploaded = [
            (Usage::Master, master),
            (Usage::SelfSigning, self_signing),
            (Usage::UserSigning, user_signing),
        ];
        let mut keys = Vec::new();
        let mut objects = Vec::new();
        for (usage, raw) in uploaded {
            let Some(raw) = raw else { continue };
            let (object, public) = parse_key(user, usage, raw)?;
            if devices.iter().any(|d| d.device_id == public) {
                return Err(CrossSigningError::NamedLikeADevice);
            }
            let json = signed::canonical(&object);
            objects.push((usage, object));
            keys.push((usage, StoredKey { public, json }));
        }
        let master_public = keys
            .iter()
            .chain(stored.iter())
            .find(|(usage, _)| *usage == Usage::Master)
            .map(|(_, key)| key.public.clone());
        for (usage, object) in objects.iter().filter(|(u, _)| *u != Usage::Master) {
            let Some(master) = &master_public else {
                return Err(CrossSigningError::MissingMaster);
            };
            let sig = signed::signature(object, user.as_str(), &format!("ed25519:{master}"));
            if !sig.is_some_and(|sig| signed::verifies(object, master, sig)) {
                return Err(CrossSigningError::InvalidSignature(format!(
                    "the {} key carries no valid signature by the master key",
                    usage.as_str()
                )));
            }
        }
        let has_master = stored.iter().any(|(u, _)| *u == Usage::Master);
        let replaces_keys = has_master
            && keys.iter().any(|(usage, key)| {
                stored
                    .iter()
                    .find(|(u, _)| u == usage)
                    .is_none_or(|(_, old)| old != key)
            });
        Ok(CheckedSigningKeys {
            user: user.to_owned(),
            keys,
            replaces_keys,
        })
    }

    /// Stores checked keys; wakes the users sharing a room with their owner.
    pub async fn store(&self, checked: CheckedSigningKeys) -> Result<(), StoreError> {
        if checked.keys.is_empty() {
            return Ok(());
        }
        let wake = self.memberships.sharing_a_room(&checked.user).await?;
        let op = StoreKeys {
            user: checked.user.to_string(),
            keys: checked
                .keys
                .into_iter()
                .map(|(usage, key)| (usage.as_str(), key.public, key.json))
                .collect(),
        };
        commit(&self.stream, op, wake).await?;
        Ok(())
    }

    /// Checks and stores the signatures `signer` uploads; returns those refused.
    pub async fn upload_signatures(
        &self,
        signer: &UserId,
        signed_keys: &BTreeMap<OwnedUserId, SignedKeys>,
    ) -> Result<SignatureFailures, StoreError> {
        let signer_keys = self.stored(signer).await?;
        let mut failures = SignatureFailures::new();
        let mut rows = Vec::new();
        for (target, keys) in signed_keys {
            let target_keys = self.stored(target).await?;
            for (key_id, json) in keys.iter() {
                let signed = Signed {
                    signer,
                    signer_keys: &signer_keys,
                    target,
                    target_keys: &target_keys,
                    key_id,
                };
                match self.check_signatures(&signed, json.get()).await? {
                    Ok(found) => rows.extend(found.into_iter().map(|r| (target.clone(), r))),
                    Err(failure) => {
                        failures
                            .entry(target.clone())
                            .or_default()
                            .insert(key_id.to_owned(), failure);
                    }
                }
            }
        }
        if rows.is_empty() {
            return Ok(failures);
        }
        let targets: BTreeSet<OwnedUserId> = rows.iter().map(|(t, _)| t.clone()).collect();
        let mut wake = BTreeSet::from([signer.to_owned()]);
        for target in &targets {
            wake.extend(self.memberships.sharing_a_room(target).await?);
        }
        let op = StoreSignatures {
            rows: rows
                .into_iter()
                .map(|(target, row)| (target.to_string(), row))
                .collect(),
        };
        commit(&self.stream, op, wake.into_iter().collect()).await?;
        Ok(failures)
    }

    /// The signatures of one uploaded object (`json`) that `signed.signer` may make, checked;
    /// or why they are refused.
    async fn check_signatures(
        &self,
        signed: &Signed<'_>,
        json: &str,
    ) -> Result<Result<Vec<SignatureRow>, SignatureFailure>, StoreError> {
        let Some(uploaded) = signed::object(json) else {
            return Ok(Err(SignatureFailure {
                kind: SignatureFailureKind::BadJson,
                error: "the signed key is not a JSON object".into(),
            }));
        };
        let (stored_json, signing_keys) = match self.signed_object(signed).await? {
            Ok(found) => found,
            Err(failure) => return Ok(Err(failure)),
        };
        let Some(stored) = signed::object(&stored_json) else {
            return Err(StoreError::Database(sqlx::Error::Decode(
                "a stored key is not a JSON object".into(),
            )));
        };
        if signed::signed_part(&stored) != signed::signed_part(&uploaded) {
            return Ok(Err(SignatureFailure::invalid(
                "the signed object differs from the stored key",
            )));
        }
        let mut rows = Vec::new();
        for (key_id, sig) in signed::signatures_by(&uploaded, signed.signer.as_str()) {
            let Some((_, public)) = signing_keys.iter().find(|(id, _)| id == key_id) else {
                continue;
            };
            if !signed::verifies(&stored, public, sig) {
                return Ok(Err(SignatureFailure::invalid(format!(
                    "the signature by {key_id} is not valid"
                ))));
            }
            rows.push((
                signed.key_id.to_owned(),
                signed.signer.to_string(),
                key_id.to_owned(),
                sig.to_owned(),
            ));
        }
        if rows.is_empty() {
            return Ok(Err(SignatureFailure::invalid(
                "no signature by a key of yours that may sign this key",
            )));
        }
        Ok(Ok(rows))
    }

    /// The stored object a signature is for, and the signer's keys that may sign it
    /// (`(ed25519:<name>, public key)`): their own device by their self-signing key, their own
    /// master key by their devices, another user's master key by their user-signing key.
    async fn signed_object(
        &self,
        signed: &Signed<'_>,
    ) -> Result<Result<(String, Vec<(String, String)>), SignatureFailure>, StoreError> {
        let key_of = |keys: &[(Usage, StoredKey)], usage: Usage| {
            keys.iter()
                .find(|(u, _)| *u == usage)
                .map(|(_, k)| k.clone())
        };
        let by = |key: StoredKey| vec![(format!("ed25519:{}", key.public), key.public)];
        let master =
            key_of(signed.target_keys, Usage::Master).filter(|m| m.public == signed.key_id);
        if signed.target == signed.signer {
            if let Some(device) = self.device_keys(signed.signer, signed.key_id).await? {
                return Ok(match key_of(signed.signer_keys, Usage::SelfSigning) {
                    Some(ssk) => Ok((device, by(ssk))),
                    None => Err(SignatureFailure::invalid(
                        "upload a self-signing key before signing your devices",
                    )),
                });
            }
            return Ok(match master {
                Some(master) => Ok((master.json, self.device_signing_keys(signed.signer).await?)),
                None => Err(SignatureFailure::unknown_key()),
            });
        }
        Ok(
            match (master, key_of(signed.signer_keys, Usage::UserSigning)) {
                (Some(master), Some(usk)) => Ok((master.json, by(usk))),
                (Some(_), None) => Err(SignatureFailure::invalid(
                    "upload a user-signing key before signing other users' keys",
                )),
                (None, _) => Err(SignatureFailure::unknown_key()),
            },
        )
    }

    /// The stored device keys of one device.
    async fn device_keys(&self, user: &UserId, device: &str) -> Result<Option<String>, StoreError> {
        Ok(on_db!(&self.db, |e| sqlx::query_scalar(
            "SELECT json FROM device_keys WHERE user_id = $1 AND device_id = $2"
        )
        .bind(user.as_str())
        .bind(device)
        .fetch_optional(e)
        .await?))
    }

    /// The ed25519 keys of a user's devices, as `(ed25519:<device ID>, public key)`.
    async fn device_signing_keys(
        &self,
        user: &UserId,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let rows: Vec<(String, String)> = on_db!(&self.db, |e| sqlx::query_as(
            "SELECT device_id, json FROM device_keys WHERE user_id = $1"
        )
        .bind(user.as_str())
        .fetch_all(e)
        .await?);
        Ok(rows
            .into_iter()
            .filter_map(|(device, json)| {
                let key_id = format!("ed25519:{device}");
                let value: serde_json::Value = serde_json::from_str(&json).ok()?;
                let public = value["keys"][&key_id].as_str()?.to_owned();
                Some((key_id, public))
            })
            .collect())
    }

    /// A user's stored keys.
    async fn stored(&self, user: &UserId) -> Result<Vec<(Usage, StoredKey)>, StoreError> {
        let rows: Vec<(String, String, String)> = on_db!(&self.db, |e| sqlx::query_as(
            "SELECT usage, public_key, json FROM cross_signing_keys WHERE user_id = $1 \
             ORDER BY usage",
        )
        .bind(user.as_str())
        .fetch_all(e)
        .await?);
        Ok(rows
            .into_iter()
            .filter_map(|(usage, public, json)| {
                Some((Usage::parse(&usage)?, StoredKey { public, json }))
            })
            .collect())
    }

    /// The signatures of `user`'s keys that `viewer` may see: those by `user`, and those by
    /// `viewer`.
    pub(super) async fn signatures_seen(
        &self,
        user: &UserId,
        viewer: &UserId,
    ) -> Result<Vec<SignatureRow>, StoreError> {
        Ok(on_db!(&self.db, |e| sqlx::query_as(
            "SELECT target_key, signer_user, signer_key, signature FROM key_signatures \
             WHERE target_user = $1 AND signer_user IN ($1, $2) \
             ORDER BY target_key, signer_user, signer_key",
        )
        .bind(user.as_str())
        .bind(viewer.as_str())
        .fetch_all(e)
        .await?))
    }

    /// Adds `user`'s keys, with the signatures `seen` of them, to `out` (the user-signing key
    /// only when `user` is `viewer`).
    pub(super) async fn query_into(
        &self,
        user: &UserId,
        viewer: &UserId,
        seen: &[SignatureRow],
        out: &mut QueriedSigningKeys,
    ) -> Result<(), StoreError> {
        for (usage, key) in self.stored(user).await? {
            let map = match usage {
                Usage::Master => &mut out.master_keys,
                Usage::SelfSigning => &mut out.self_signing_keys,
                Usage::UserSigning if user == viewer => &mut out.user_signing_keys,
                Usage::UserSigning => continue,
            };
            map.insert(user.to_owned(), raw(merged(&key.json, &key.public, seen)?)?);
        }
        Ok(())
    }
}

/// `json`, the stored object of key `name` (a device ID or public key), with the signatures of
/// it among `seen`.
pub(super) fn merged(json: &str, name: &str, seen: &[SignatureRow]) -> Result<String, StoreError> {
    let extra: Vec<(String, String, String)> = seen
        .iter()
        .filter(|(target, ..)| target == name)
        .map(|(_, user, key, sig)| (user.clone(), key.clone(), sig.clone()))
        .collect();
    signed::with_signatures(json, &extra).ok_or_else(|| {
        StoreError::Database(sqlx::Error::Decode(
            "a stored key is not a JSON object".into(),
        ))
    })
}

/// One uploaded signed object: whose key (`target`, `key_id`) and who signs it.
struct Signed<'a> {
    signer: &'a UserId,
    signer_keys: &'a [(Usage, StoredKey)],
    target: &'a UserId,
    target_keys: &'a [(Usage, StoredKey)],
    key_id: &'a str,
}

/// The object of an uploaded key, and its public key, after checking that it is `user`'s, has
/// the usage, and holds one ed25519 key named after itself.
fn parse_key(
    user: &UserId,
    usage: Usage,
    raw: &Raw<CrossSigningKey>,
) -> Result<(ruma::CanonicalJsonObject, String), CrossSigningError> {
    let invalid = |reason: &str| CrossSigningError::InvalidKey {
        usage: usage.as_str(),
        reason: reason.to_owned(),
    };
    let key: CrossSigningKey = raw.deserialize().map_err(|e| invalid(&e.to_string()))?;
    let object = signed::object(raw.json().get()).ok_or_else(|| invalid("not canonical JSON"))?;
    if key.user_id != user {
        return Err(invalid("it must be a key of the user making the request"));
    }
    if key.usage != [usage.key_usage()] {
        return Err(invalid(&format!(
            "its usage must be [\"{}\"]",
            usage.as_str()
        )));
    }
    let mut entries = key.keys.iter();
    let (Some((id, public)), None) = (entries.next(), entries.next()) else {
        return Err(invalid("it must hold exactly one key"));
    };
    if id.as_str() != format!("ed25519:{public}") || !signed::is_ed25519_key(public) {
        return Err(invalid(
            "its key must be an ed25519 public key named `ed25519:<public key>`",
        ));
    }
    Ok((object, public.clone()))
}

/// New cross-signing keys of a user: `(usage, public key, JSON)` each.
#[derive(Clone)]
struct StoreKeys {
    user: String,
    keys: Vec<(&'static str, String, String)>,
}

impl Write for StoreKeys {
    async fn apply(self, mut conn: Conn<'_>, pos: i64) -> Result<(), sqlx::Error> {
        let mut changed = false;
        for (usage, public, json) in &self.keys {
            let old: Option<(String, String)> = on_conn!(&mut conn, |e| sqlx::query_as(
                "SELECT public_key, json FROM cross_signing_keys \
                 WHERE user_id = $1 AND usage = $2",
            )
            .bind(&self.user)
            .bind(usage)
            .fetch_optional(e)
            .await?);
            if old.as_ref().is_some_and(|(_, j)| j == json) {
                continue;
            }
            if let Some((old_public, _)) = old.filter(|(p, _)| p != public) {
                drop_signatures_of_key(&mut conn, &self.user, &old_public, *usage == "master")
                    .await?;
            }
            on_conn!(&mut conn, |e| sqlx::query(
                "INSERT INTO cross_signing_keys (user_id, usage, public_key, json, stream) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, usage) DO UPDATE SET \
                 public_key = excluded.public_key, json = excluded.json, stream = excluded.stream",
            )
            .bind(&self.user)
            .bind(usage)
            .bind(public)
            .bind(json)
            .bind(pos)
            .execute(e)
            .await?
            .rows_affected());
            changed = true;
        }
        if changed {
            record_change(&mut conn, pos, &self.user).await?;
        }
        Ok(())
    }
}

/// Deletes the signatures a replaced key of `user` made, and, for a master key, those it got.
async fn drop_signatures_of_key(
    conn: &mut Conn<'_>,
    user: &str,
    public: &str,
    master: bool,
) -> Result<(), sqlx::Error> {
    on_conn!(&mut *conn, |e| sqlx::query(
        "DELETE FROM key_signatures WHERE signer_user = $1 AND signer_key = $2"
    )
    .bind(user)
    .bind(format!("ed25519:{public}"))
    .execute(e)
    .await?
    .rows_affected());
    if master {
        on_conn!(&mut *conn, |e| sqlx::query(
            "DELETE FROM key_signatures WHERE target_user = $1 AND target_key = $2"
        )
        .bind(user)
        .bind(public)
        .execute(e)
        .await?
        .rows_affected());
    }
    Ok(())
}

/// Checked signatures: `(target user, signature row)` each.
#[derive(Clone)]
struct StoreSignatures {
    rows: Vec<(String, SignatureRow)>,
}

impl Write for StoreSignatures {
    async fn apply(self, mut conn: Conn<'_>, pos: i64) -> Result<(), sqlx::Error> {
        let mut changed = BTreeSet::new();
        for (target, (key, signer, signer_key, signature)) in &self.rows {
            let done = on_conn!(&mut conn, |e| sqlx::query(
                "INSERT INTO key_signatures \
                 (target_user, target_key, signer_user, signer_key, signature) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (target_user, target_key, signer_user, signer_key) \
                 DO UPDATE SET signature = excluded.signature \
                 WHERE key_signatures.signature <> excluded.signature",
            )
            .bind(target)
            .bind(key)
            .bind(signer)
            .bind(signer_key)
            .bind(signature)
            .execute(e)
            .await?
            .rows_affected());
            if done > 0 {
                changed.insert(target);
            }
        }
        for target in changed {
            record_change(&mut conn, pos, target).await?;
        }
        Ok(())
    }
}

/// Deletes the signatures of and by deleted devices of `user`.
pub(super) async fn devices_deleted(
    conn: &mut Conn<'_>,
    user: &str,
    device: &str,
) -> Result<(), sqlx::Error> {
    on_conn!(conn, |e| sqlx::query(
        "DELETE FROM key_signatures WHERE (target_user = $1 AND target_key = $2) \
         OR (signer_user = $1 AND signer_key = $3)",
    )
    .bind(user)
    .bind(device)
    .bind(format!("ed25519:{device}"))
    .execute(e)
    .await?
    .rows_affected());
    Ok(())
}

#[cfg(test)]
mod tests;
