//! [`Keys`]: end-to-end encryption keys. Device identity keys (ruma's `DeviceKeys`, as signed by
//! the device), one-time keys (each handed out once by a claim) and fallback keys (one per
//! algorithm, handed out when no one-time key is left, then marked used, kept until replaced).
//! A claim that hands out keys takes a stream position that wakes their owners, so that their
//! next `/sync` reports the new one-time key counts and unused fallback key algorithms.
//!
//! A device-key upload that changes a device's keys, and a device deletion, are device-list
//! changes: each is recorded at its stream position, and the users sharing a room with the
//! owner (and the owner) are woken, so that `/sync` reports `device_lists.changed` and
//! `GET /keys/changes` answers between two tokens ([`Keys::changed_users`]: each user sharing a
//! room with the caller looked up by an index, whatever the range). Cross-signing keys and
//! signatures ([`CrossSigning`], in `keys/cross_signing.rs`) are device-list changes too; a query
//! answers them with the device keys, the signatures uploaded for a key merged into it.
//! Memberships change device lists as well: who now shares an encrypted room with a user, and who
//! shares none any more ([`DeviceListChanges`], in `keys/device_lists.rs`).

mod cross_signing;
mod device_lists;
mod signed;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use ruma::api::client::keys::claim_keys::v3::OneTimeKeys;
use ruma::encryption::{DeviceKeys, OneTimeKey};
use ruma::serde::Raw;
use ruma::{
    DeviceId, OneTimeKeyAlgorithm, OwnedDeviceId, OwnedOneTimeKeyId, OwnedUserId, UInt, UserId,
};

use super::memberships::{Memberships, sharing_a_room_sql};
use super::{Write, commit, raw, user_ids};
use crate::locks::lock;
use crate::store::StoreError;
use crate::store::accounts::AccountStore;
use crate::store::db::{Conn, Db, on_conn, on_db};
use crate::stream::StreamWriter;

pub use cross_signing::{
    CrossSigning, CrossSigningError, QueriedSigningKeys, SignatureFailure, SignatureFailureKind,
};
pub use device_lists::DeviceListChanges;

/// What one `POST /keys/upload` carries (checked by the handler).
#[derive(Debug, Default)]
pub struct KeyUpload {
    pub device_keys: Option<Raw<DeviceKeys>>,
    pub one_time_keys: BTreeMap<OwnedOneTimeKeyId, Raw<OneTimeKey>>,
    pub fallback_keys: BTreeMap<OwnedOneTimeKeyId, Raw<OneTimeKey>>,
}

/// Device keys of users, by user and device.
pub type DeviceKeysByUser = BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, Raw<DeviceKeys>>>;

/// What a key query answers: device keys and cross-signing keys, with the signatures the
/// asking user may see.
#[derive(Debug, Default)]
pub struct QueriedKeys {
    pub device_keys: DeviceKeysByUser,
    pub signing_keys: QueriedSigningKeys,
}

/// What every `/sync` answer tells a device about its own keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceKeyCounts {
    /// Unclaimed one-time keys by algorithm (`signed_curve25519` always present).
    pub one_time: BTreeMap<OneTimeKeyAlgorithm, UInt>,
    /// Algorithms of fallback keys no claim has handed out yet.
    pub unused_fallback: Vec<OneTimeKeyAlgorithm>,
}

/// The counts last read for each device, with the stream position of the `/sync` that read
/// them.
type CountsByDevice = HashMap<OwnedUserId, HashMap<OwnedDeviceId, (i64, DeviceKeyCounts)>>;

/// The key store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Keys {
    db: Db,
    stream: StreamWriter,
    memberships: Memberships,
    cross_signing: CrossSigning,
    sync_counts: Arc<Mutex<CountsByDevice>>,
}

impl Keys {
    pub(super) fn new(
        db: Db,
        stream: StreamWriter,
        memberships: Memberships,
        accounts: AccountStore,
    ) -> Self {
        Self {
            cross_signing: CrossSigning::new(
                db.clone(),
                stream.clone(),
                memberships.clone(),
                accounts,
            ),
            db,
            stream,
            memberships,
            sync_counts: Arc::default(),
        }
    }

    /// The device's key counts for a `/sync` answer covering the stream up to `upto`. Every
    /// change of them (an upload, a claim) marks the owner's global data as changed, so with
    /// `fresh` (the caller's global data changed since its token) they are read from the store,
    /// and otherwise the counts last read are answered without asking the database (read once
    /// if this run has none). A read never replaces one made for a later position.
    pub async fn sync_counts(
        &self,
        user: &UserId,
        device: &DeviceId,
        fresh: bool,
        upto: i64,
    ) -> Result<DeviceKeyCounts, StoreError> {
        if !fresh
            && let Some((_, counts)) = lock(&self.sync_counts)
                .get(user)
                .and_then(|devices| devices.get(device))
        {
            return Ok(counts.clone());
        }
        let counts = DeviceKeyCounts {
            one_time: self.counts(user, device).await?,
            unused_fallback: self.unused_fallback_key_types(user, device).await?,
        };
        let mut known = lock(&self.sync_counts);
        let devices = known.entry(user.to_owned()).or_default();
        match devices.get(device) {
            Some((pos, newer)) if *pos > upto => return Ok(newer.clone()),
            _ => {
                devices.insert(device.to_owned(), (upto, counts.clone()));
            }
        }
        Ok(counts)
    }

    /// Cross-signing keys and the signatures uploaded for keys.
    pub fn cross_signing(&self) -> &CrossSigning {
        &self.cross_signing
    }

    /// Stores what a device uploaded; returns its unclaimed one-time key counts. One-time keys
    /// already stored under the same ID are kept; a fallback key replaces the device's previous
    /// one of its algorithm.
    pub async fn upload(
        &self,
        user: &UserId,
        device: &DeviceId,
        upload: KeyUpload,
    ) -> Result<BTreeMap<OneTimeKeyAlgorithm, UInt>, StoreError> {
        let wake = match &upload.device_keys {
            Some(_) => self.memberships.sharing_a_room(user).await?,
            None => Vec::new(),
        };
        let keys = |map: BTreeMap<OwnedOneTimeKeyId, Raw<OneTimeKey>>| {
            map.into_iter()
                .map(|(id, key)| {
                    let algorithm = id.algorithm().as_str().to_owned();
                    (id.to_string(), algorithm, key.json().get().to_owned())
                })
                .collect()
        };
        let op = Upload {
            user: user.as_str().to_owned(),
            device: device.as_str().to_owned(),
            device_keys: upload.device_keys.map(|k| k.json().get().to_owned()),
            one_time_keys: keys(upload.one_time_keys),
            fallback_keys: keys(upload.fallback_keys),
        };
        commit(&self.stream, op, wake).await?;
        self.counts(user, device).await
    }

    /// The unclaimed one-time keys of a device, by algorithm (`signed_curve25519` always
    /// present).
    pub async fn counts(
        &self,
        user: &UserId,
        device: &DeviceId,
    ) -> Result<BTreeMap<OneTimeKeyAlgorithm, UInt>, StoreError> {
        let rows: Vec<(String, i64)> = on_db!(&self.db, |e| sqlx::query_as(
            "SELECT algorithm, COUNT(*) FROM one_time_keys \
             WHERE user_id = $1 AND device_id = $2 AND fallback = 0 GROUP BY algorithm",
        )
        .bind(user.as_str())
        .bind(device.as_str())
        .fetch_all(e)
        .await?);
        let mut counts = BTreeMap::from([(OneTimeKeyAlgorithm::SignedCurve25519, UInt::MIN)]);
        for (algorithm, n) in rows {
            let n = u64::try_from(n)
                .ok()
                .and_then(UInt::new)
                .unwrap_or(UInt::MAX);
            counts.insert(algorithm.as_str().into(), n);
        }
        Ok(counts)
    }

    /// The algorithms of the device's fallback keys that no claim has handed out yet.
    pub async fn unused_fallback_key_types(
        &self,
        user: &UserId,
        device: &DeviceId,
    ) -> Result<Vec<OneTimeKeyAlgorithm>, StoreError> {
        let rows: Vec<String> = on_db!(&self.db, |e| sqlx::query_scalar(
            "SELECT DISTINCT algorithm FROM one_time_keys \
             WHERE user_id = $1 AND device_id = $2 AND fallback = 1 AND used = 0 \
             ORDER BY algorithm",
        )
        .bind(user.as_str())
        .bind(device.as_str())
        .fetch_all(e)
        .await?);
        Ok(rows.into_iter().map(|a| a.as_str().into()).collect())
    }

    /// What `viewer` asks of the asked devices (every device of a user asked with none): their
    /// device keys, and their owners' cross-signing keys (the user-signing key only of the
    /// viewer), each with the signatures uploaded for it by its owner or by the viewer.
    pub async fn query(
        &self,
        viewer: &UserId,
        wanted: &BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>,
    ) -> Result<QueriedKeys, StoreError> {
        let mut out = QueriedKeys::default();
        for (user, devices) in wanted {
            let seen = self.cross_signing.signatures_seen(user, viewer).await?;
            let rows: Vec<(String, String)> = on_db!(&self.db, |e| sqlx::query_as(
                "SELECT device_id, json FROM device_keys WHERE user_id = $1"
            )
            .bind(user.as_str())
            .fetch_all(e)
            .await?);
            let mut found = BTreeMap::new();
            for (device, json) in rows {
                let json = cross_signing::merged(&json, &device, &seen)?;
                let device = OwnedDeviceId::from(device);
                if devices.is_empty() || devices.contains(&device) {
                    found.insert(device, raw(json)?);
                }
            }
            out.device_keys.insert(user.clone(), found);
            self.cross_signing
                .query_into(user, viewer, &seen, &mut out.signing_keys)
                .await?;
        }
        Ok(out)
    }

    /// Hands out one key per asked device: a one-time key of the algorithm, which is removed,
    /// or else the device's fallback key of the algorithm, which is marked used. Devices without
    /// either are left out. The owners of the keys handed out are woken.
    pub async fn claim(
        &self,
        wanted: &BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, OneTimeKeyAlgorithm>>,
    ) -> Result<BTreeMap<OwnedUserId, OneTimeKeys>, StoreError> {
        let mut out = BTreeMap::new();
        let mut owners = Vec::new();
        for (user, devices) in wanted {
            let mut by_device = BTreeMap::new();
            for (device, algorithm) in devices {
                if let Some((id, json)) = self.take_key(user, device, algorithm).await? {
                    let Ok(id) = OwnedOneTimeKeyId::try_from(id) else {
                        continue;
                    };
                    let key: BTreeMap<_, _> = [(id, raw(json)?)].into();
                    by_device.insert(device.clone(), key);
                }
            }
            if !by_device.is_empty() {
                owners.push(user.clone());
            }
            out.insert(user.clone(), by_device);
        }
        if !owners.is_empty() {
            commit(&self.stream, KeysClaimed, owners).await?;
        }
        Ok(out)
    }

    async fn take_key(
        &self,
        user: &UserId,
        device: &DeviceId,
        algorithm: &OneTimeKeyAlgorithm,
    ) -> Result<Option<(String, String)>, StoreError> {
        // One statement: two claims never get the same key. SQLite runs one write at a time
        // and finds the row by its rowid; PostgreSQL has no rowid, and a claim running at the
        // same time skips the key another one is deleting (rather than waiting for it and then
        // finding nothing).
        let one_time: Option<(String, String)> = match &self.db {
            Db::Sqlite(e) => {
                sqlx::query_as(
                    "DELETE FROM one_time_keys WHERE rowid = (SELECT rowid FROM one_time_keys \
                     WHERE user_id = $1 AND device_id = $2 AND fallback = 0 AND algorithm = $3 \
                     ORDER BY key_id LIMIT 1) RETURNING key_id, json",
                )
                .bind(user.as_str())
                .bind(device.as_str())
                .bind(algorithm.as_str())
                .fetch_optional(e)
                .await?
            }
            Db::Postgres(e) => {
                sqlx::query_as(
                    "DELETE FROM one_time_keys \
                     WHERE user_id = $1 AND device_id = $2 AND fallback = 0 AND key_id = \
                     (SELECT key_id FROM one_time_keys \
                     WHERE user_id = $1 AND device_id = $2 AND fallback = 0 AND algorithm = $3 \
                     ORDER BY key_id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING key_id, json",
                )
                .bind(user.as_str())
                .bind(device.as_str())
                .bind(algorithm.as_str())
                .fetch_optional(e)
                .await?
            }
        };
        if one_time.is_some() {
            return Ok(one_time);
        }
        Ok(on_db!(&self.db, |e| sqlx::query_as(
            "UPDATE one_time_keys SET used = 1 \
             WHERE user_id = $1 AND device_id = $2 AND fallback = 1 AND algorithm = $3 \
             RETURNING key_id, json",
        )
        .bind(user.as_str())
        .bind(device.as_str())
        .bind(algorithm.as_str())
        .fetch_optional(e)
        .await?))
    }

    /// Users whose device list changed in `(since, upto]` among `user` and those sharing a
    /// room with `user` now, sorted.
    ///
    /// Driven by those users, not by the changes: for each, the last change up to `upto` is
    /// read from the index `device_list_changes_by_user (user_id, stream)` (SQLite's `0012`,
    /// PostgreSQL's `0015`), one entry, and kept if it is after `since`. So the cost is bounded
    /// by the number of users sharing a room (the largest possible answer) whatever the range:
    /// `since` the first token reads no more than a short range. A correlated scalar subquery
    /// rather than `EXISTS`: PostgreSQL turns an `EXISTS` into a semi join, and a generic plan
    /// of the prepared statement (default selectivities) then hashes every change of the range.
    ///
    /// The plans. SQLite (`EXPLAIN QUERY PLAN`): `CO-ROUTINE u` (the union, by
    /// `memberships_by_user` and the memberships' primary key), `SCAN u`, `CORRELATED SCALAR
    /// SUBQUERY`: `SEARCH c USING COVERING INDEX device_list_changes_by_user (user_id=? AND
    /// stream<?)` (a `SeekLE` that stops at the first entry), `USE TEMP B-TREE FOR ORDER BY`.
    /// PostgreSQL 15 (`EXPLAIN`, custom and generic plans alike): `Sort` over `Subquery Scan on
    /// u` (a `HashAggregate` of the union) filtered by `SubPlan`: `Limit`, `Index Only Scan
    /// Backward using device_list_changes_by_user`, `Index Cond: user_id = u.user_id AND stream
    /// <= $2`, one row per user.
    pub async fn changed_users(
        &self,
        user: &UserId,
        since: i64,
        upto: i64,
    ) -> Result<Vec<OwnedUserId>, StoreError> {
        let users: Vec<String> = on_db!(&self.db, |e| sqlx::query_scalar(concat!(
            "WITH u (user_id) AS (",
            sharing_a_room_sql!("$3", "$3"),
            ") SELECT u.user_id FROM u \
             WHERE (SELECT MAX(c.stream) FROM device_list_changes c \
             WHERE c.user_id = u.user_id AND c.stream <= $2) > $1 \
             ORDER BY u.user_id"
        ))
        .bind(since)
        .bind(upto)
        .bind(user.as_str())
        .fetch_all(e)
        .await?);
        Ok(user_ids(users))
    }

    /// Removes the keys and waiting to-device messages of deleted devices and records the
    /// device-list change.
    pub(super) async fn devices_deleted(
        &self,
        user: &UserId,
        devices: &[OwnedDeviceId],
    ) -> Result<(), StoreError> {
        if devices.is_empty() {
            return Ok(());
        }
        let wake = self.memberships.sharing_a_room(user).await?;
        let op = DevicesDeleted {
            user: user.as_str().to_owned(),
            devices: devices.iter().map(|d| d.as_str().to_owned()).collect(),
        };
        commit(&self.stream, op, wake).await?;
        if let Some(known) = lock(&self.sync_counts).get_mut(user) {
            for device in devices {
                known.remove(device);
            }
        }
        Ok(())
    }
}

/// A key upload: `(key ID, algorithm, JSON)` per one-time or fallback key.
#[derive(Clone)]
struct Upload {
    user: String,
    device: String,
    device_keys: Option<String>,
    one_time_keys: Vec<(String, String, String)>,
    fallback_keys: Vec<(String, String, String)>,
}

impl Write for Upload {
    async fn apply(self, mut conn: Conn<'_>, pos: i64) -> Result<(), sqlx::Error> {
        if let Some(json) = &self.device_keys {
            let stored: Option<String> = on_conn!(&mut conn, |e| sqlx::query_scalar(
                "SELECT json FROM device_keys WHERE user_id = $1 AND device_id = $2",
            )
            .bind(&self.user)
            .bind(&self.device)
            .fetch_optional(e)
            .await?);
            if stored.as_ref() != Some(json) {
                on_conn!(&mut conn, |e| sqlx::query(
                    "INSERT INTO device_keys (user_id, device_id, json, stream) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, device_id) \
                     DO UPDATE SET json = excluded.json, stream = excluded.stream",
                )
                .bind(&self.user)
                .bind(&self.device)
                .bind(json)
                .bind(pos)
                .execute(e)
                .await?
                .rows_affected());
                record_change(&mut conn, pos, &self.user).await?;
            }
        }
        for key in &self.one_time_keys {
            self.insert_key(
                &mut conn,
                "INSERT INTO one_time_keys (user_id, device_id, key_id, algorithm, fallback, json) \
                 VALUES ($1, $2, $3, $4, 0, $5) ON CONFLICT DO NOTHING",
                key,
            )
            .await?;
        }
        for key in &self.fallback_keys {
            // The same key again keeps its row (and whether it was used); another replaces it.
            let (id, algorithm, json) = key;
            on_conn!(&mut conn, |e| sqlx::query(
                "DELETE FROM one_time_keys \
                 WHERE user_id = $1 AND device_id = $2 AND fallback = 1 AND algorithm = $3 \
                 AND NOT (key_id = $4 AND json = $5)",
            )
            .bind(&self.user)
            .bind(&self.device)
            .bind(algorithm)
            .bind(id)
            .bind(json)
            .execute(e)
            .await?
            .rows_affected());
            self.insert_key(
                &mut conn,
                "INSERT INTO one_time_keys (user_id, device_id, key_id, algorithm, fallback, json) \
                 VALUES ($1, $2, $3, $4, 1, $5) ON CONFLICT DO NOTHING",
                key,
            )
            .await?;
        }
        Ok(())
    }
}

impl Upload {
    /// Runs `sql`, an insert of one key `(key ID, algorithm, JSON)` of the uploading device.
    async fn insert_key(
        &self,
        conn: &mut Conn<'_>,
        sql: &'static str,
        (id, algorithm, json): &(String, String, String),
    ) -> Result<(), sqlx::Error> {
        on_conn!(conn, |e| sqlx::query(sql)
            .bind(&self.user)
            .bind(&self.device)
            .bind(id)
            .bind(algorithm)
            .bind(json)
            .execute(e)
            .await?
            .rows_affected());
        Ok(())
    }
}

/// A claim handed out keys: nothing to write, but the position it takes wakes the owners, whose
/// next `/sync` reports their remaining keys.
#[derive(Clone)]
struct KeysClaimed;

impl Write for KeysClaimed {
    async fn apply(self, _conn: Conn<'_>, _pos: i64) -> Result<(), sqlx::Error> {
        Ok(())
    }
}

/// Devices of a user were deleted.
#[derive(Clone)]
struct DevicesDeleted {
    user: String,
    devices: Vec<String>,
}

impl Write for DevicesDeleted {
    async fn apply(self, mut conn: Conn<'_>, pos: i64) -> Result<(), sqlx::Error> {
        for device in &self.devices {
            for sql in [
                "DELETE FROM device_keys WHERE user_id = $1 AND device_id = $2",
                "DELETE FROM one_time_keys WHERE user_id = $1 AND device_id = $2",
                "DELETE FROM to_device WHERE user_id = $1 AND device_id = $2",
            ] {
                on_conn!(&mut conn, |e| sqlx::query(sql)
                    .bind(&self.user)
                    .bind(device)
                    .execute(e)
                    .await?
                    .rows_affected());
            }
            cross_signing::devices_deleted(&mut conn, &self.user, device).await?;
        }
        record_change(&mut conn, pos, &self.user).await
    }
}

/// Records a change of `user`'s device list at `pos`.
async fn record_change(conn: &mut Conn<'_>, pos: i64, user: &str) -> Result<(), sqlx::Error> {
    on_conn!(conn, |e| sqlx::query(
        "INSERT INTO device_list_changes (stream, user_id) VALUES ($1, $2) \
         ON CONFLICT DO NOTHING",
    )
    .bind(pos)
    .bind(user)
    .execute(e)
    .await?
    .rows_affected());
    Ok(())
}

#[cfg(test)]
mod tests;
