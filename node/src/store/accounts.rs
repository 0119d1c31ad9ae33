//! Matrix accounts, devices and access tokens, in SQLite or PostgreSQL ([`Db`]).
//!
//! The tables come from `migrations/0002_accounts.sql` (SQLite, `rethink.db`) and
//! `pg_migrations/0007_matrix_accounts.sql` (PostgreSQL); one SQL text serves both. Secrets never reach this module: callers pass argon2 PHC strings for
//! passwords and SHA-256 digests for access tokens. Account creation relies on the database's
//! unique constraints, so two racing registrations of one name cannot both succeed.
//!
//! These writes are rare (registration, login, logout) and are committed at once, outside the
//! group-commit writer that serves the message hot path.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::StoreError;
use super::db::{Db, Tx, on_db, on_tx};
use crate::locks::lock;

/// Access to the account tables. Cheap to clone (it wraps the connection pool).
///
/// Access tokens are looked up on every authenticated request, so their owners are cached in
/// memory. Every write that removes a token (a device deleted, a device logged in again)
/// goes through this store and drops the device's cached tokens; a lookup that raced with such a
/// write does not cache its (possibly stale) answer (a generation counter tells).
#[derive(Debug, Clone)]
pub struct AccountStore {
    db: Db,
    tokens: Arc<TokenCache>,
}

#[derive(Debug, Default)]
struct TokenCache {
    owners: Mutex<HashMap<[u8; 32], TokenOwner>>,
    generation: AtomicU64,
}

impl TokenCache {
    /// Drops the cached tokens of `localpart`'s `device` (every device with `None`).
    fn forget(&self, localpart: &str, device: Option<&str>) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        lock(&self.owners).retain(|_, owner| {
            owner.localpart != localpart || device.is_some_and(|d| owner.device_id != d)
        });
    }
}

/// A stored account.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AccountRecord {
    pub localpart: String,
    /// argon2 PHC string; `None` when the account has no password (created by a JWT login).
    pub password_hash: Option<String>,
    /// The verified identity (`user://idp/sub`) the account belongs to, if any.
    pub external_subject: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
}

/// An account to create.
#[derive(Debug, Clone, Copy)]
pub struct NewAccount<'a> {
    pub localpart: &'a str,
    pub password_hash: Option<&'a str>,
    pub external_subject: Option<&'a str>,
}

/// A device to create (or reuse) with a fresh access token.
#[derive(Debug, Clone, Copy)]
pub struct NewDevice<'a> {
    pub device_id: &'a str,
    /// Used only when the device is new.
    pub display_name: Option<&'a str>,
    /// SHA-256 of the access token.
    pub token_hash: &'a [u8; 32],
}

/// Whom an access token belongs to.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TokenOwner {
    pub localpart: String,
    pub device_id: String,
}

/// A stored device.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DeviceRecord {
    pub device_id: String,
    pub display_name: Option<String>,
}

impl AccountStore {
    pub fn new(db: impl Into<Db>) -> Self {
        Self {
            db: db.into(),
            tokens: Arc::default(),
        }
    }

    /// Creates an account, and with it a first device and access token when `device` is given,
    /// in one transaction. Returns `false` (and changes nothing) when the localpart, or the
    /// external subject, already belongs to an account.
    pub async fn create_account(
        &self,
        account: NewAccount<'_>,
        device: Option<NewDevice<'_>>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.db.begin().await?;
        let inserted = on_tx!(&mut tx, |c| sqlx::query(
            "INSERT INTO accounts (localpart, password_hash, external_subject, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(account.localpart)
        .bind(account.password_hash)
        .bind(account.external_subject)
        .bind(now)
        .execute(c)
        .await?
        .rows_affected());
        if inserted == 0 {
            return Ok(false);
        }
        if let Some(device) = device {
            add_device(&mut tx, account.localpart, device, now).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// The account with this localpart.
    pub async fn account(&self, localpart: &str) -> Result<Option<AccountRecord>, StoreError> {
        Ok(on_db!(&self.db, |e| sqlx::query_as(
            "SELECT localpart, password_hash, external_subject, created_at \
             FROM accounts WHERE localpart = $1",
        )
        .bind(localpart)
        .fetch_optional(e)
        .await?))
    }

    /// The localpart of the account that belongs to a verified identity.
    pub async fn localpart_for_subject(&self, subject: &str) -> Result<Option<String>, StoreError> {
        Ok(on_db!(&self.db, |e| sqlx::query_scalar(
            "SELECT localpart FROM accounts WHERE external_subject = $1"
        )
        .bind(subject)
        .fetch_optional(e)
        .await?))
    }

    /// Logs a device in: creates it unless it exists (an existing device keeps its display
    /// name), revokes the device's previous access token and stores the new one. Returns
    /// `false` when the account does not exist.
    pub async fn login_device(
        &self,
        localpart: &str,
        device: NewDevice<'_>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.db.begin().await?;
        let exists: Option<String> = on_tx!(&mut tx, |c| sqlx::query_scalar(
            "SELECT localpart FROM accounts WHERE localpart = $1"
        )
        .bind(localpart)
        .fetch_optional(c)
        .await?);
        if exists.is_none() {
            return Ok(false);
        }
        add_device(&mut tx, localpart, device, now).await?;
        tx.commit().await?;
        self.tokens.forget(localpart, Some(device.device_id));
        Ok(true)
    }

    /// The owner of an access token, by the token's SHA-256.
    pub async fn token_owner(
        &self,
        token_hash: &[u8; 32],
    ) -> Result<Option<TokenOwner>, StoreError> {
        if let Some(owner) = lock(&self.tokens.owners).get(token_hash) {
            return Ok(Some(owner.clone()));
        }
        let generation = self.tokens.generation.load(Ordering::SeqCst);
        let owner: Option<TokenOwner> = on_db!(&self.db, |e| sqlx::query_as(
            "SELECT localpart, device_id FROM access_tokens WHERE token_hash = $1"
        )
        .bind(token_hash.as_slice())
        .fetch_optional(e)
        .await?);
        if let Some(owner) = &owner {
            let mut owners = lock(&self.tokens.owners);
            if self.tokens.generation.load(Ordering::SeqCst) == generation {
                owners.insert(*token_hash, owner.clone());
            }
        }
        Ok(owner)
    }

    /// Deletes a device and so its access token.
    pub async fn delete_device(&self, localpart: &str, device_id: &str) -> Result<(), StoreError> {
        on_db!(&self.db, |e| sqlx::query(
            "DELETE FROM devices WHERE localpart = $1 AND device_id = $2"
        )
        .bind(localpart)
        .bind(device_id)
        .execute(e)
        .await?
        .rows_affected());
        self.tokens.forget(localpart, Some(device_id));
        Ok(())
    }

    /// Deletes every device of an account and so every access token.
    pub async fn delete_all_devices(&self, localpart: &str) -> Result<(), StoreError> {
        on_db!(&self.db, |e| sqlx::query(
            "DELETE FROM devices WHERE localpart = $1"
        )
        .bind(localpart)
        .execute(e)
        .await?
        .rows_affected());
        self.tokens.forget(localpart, None);
        Ok(())
    }

    /// One device of an account.
    pub async fn device(
        &self,
        localpart: &str,
        device_id: &str,
    ) -> Result<Option<DeviceRecord>, StoreError> {
        Ok(on_db!(&self.db, |e| sqlx::query_as(
            "SELECT device_id, display_name FROM devices WHERE localpart = $1 AND device_id = $2",
        )
        .bind(localpart)
        .bind(device_id)
        .fetch_optional(e)
        .await?))
    }

    /// Sets (or with `None` removes) the display name of a device; `false` when the device
    /// does not exist.
    pub async fn set_device_display_name(
        &self,
        localpart: &str,
        device_id: &str,
        display_name: Option<&str>,
    ) -> Result<bool, StoreError> {
        let changed = on_db!(&self.db, |e| sqlx::query(
            "UPDATE devices SET display_name = $1 WHERE localpart = $2 AND device_id = $3",
        )
        .bind(display_name)
        .bind(localpart)
        .bind(device_id)
        .execute(e)
        .await?
        .rows_affected());
        Ok(changed > 0)
    }

    /// Deletes devices of an account (unknown IDs are skipped) and so their access tokens, in
    /// one transaction.
    pub async fn delete_devices(
        &self,
        localpart: &str,
        device_ids: &[&str],
    ) -> Result<(), StoreError> {
        let mut tx = self.db.begin().await?;
        for device_id in device_ids {
            on_tx!(&mut tx, |c| sqlx::query(
                "DELETE FROM devices WHERE localpart = $1 AND device_id = $2"
            )
            .bind(localpart)
            .bind(*device_id)
            .execute(c)
            .await?
            .rows_affected());
        }
        tx.commit().await?;
        for device_id in device_ids {
            self.tokens.forget(localpart, Some(device_id));
        }
        Ok(())
    }

    /// The devices of an account, by device ID.
    pub async fn devices(&self, localpart: &str) -> Result<Vec<DeviceRecord>, StoreError> {
        Ok(on_db!(&self.db, |e| sqlx::query_as(
            "SELECT device_id, display_name FROM devices WHERE localpart = $1 ORDER BY device_id",
        )
        .bind(localpart)
        .fetch_all(e)
        .await?))
    }
}

/// Creates the device unless it exists, then replaces its access token.
async fn add_device(
    tx: &mut Tx,
    localpart: &str,
    device: NewDevice<'_>,
    now: i64,
) -> Result<(), StoreError> {
    on_tx!(tx, |c| {
        sqlx::query(
            "INSERT INTO devices (localpart, device_id, display_name, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (localpart, device_id) DO NOTHING",
        )
        .bind(localpart)
        .bind(device.device_id)
        .bind(device.display_name)
        .bind(now)
        .execute(&mut *c)
        .await?;
        sqlx::query("DELETE FROM access_tokens WHERE localpart = $1 AND device_id = $2")
            .bind(localpart)
            .bind(device.device_id)
            .execute(&mut *c)
            .await?;
        sqlx::query(
            "INSERT INTO access_tokens (token_hash, localpart, device_id, created_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(device.token_hash.as_slice())
        .bind(localpart)
        .bind(device.device_id)
        .bind(now)
        .execute(&mut *c)
        .await?;
    });
    Ok(())
}
