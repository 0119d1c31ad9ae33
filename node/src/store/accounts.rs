//! Matrix accounts, devices and access tokens in SQLite.
//!
//! The tables come from `migrations/0002_accounts.sql` and live in the node's database file
//! beside the sessions. Secrets never reach this module: callers pass argon2 PHC strings for
//! passwords and SHA-256 digests for access tokens. Account creation relies on the database's
//! unique constraints, so two racing registrations of one name cannot both succeed.
//!
//! These writes are rare (registration, login, logout) and are committed at once, outside the
//! group-commit writer that serves the message hot path.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sqlx::sqlite::SqlitePool;

use super::StoreError;
use crate::locks::lock;

/// Access to the account tables. Cheap to clone (it wraps the connection pool).
///
/// Access tokens are looked up on every authenticated request, so their owners are cached in
/// memory. Every write that removes a token (a device deleted, a device logged in again)
/// goes through this store and drops the device's cached tokens; a lookup that raced with such a
/// write does not cache its (possibly stale) answer (a generation counter tells).
#[derive(Debug, Clone)]
pub struct AccountStore {
    pool: SqlitePool,
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
    pub fn new(pool: SqlitePool) -> Self {
        Self {
            pool,
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
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO accounts (localpart, password_hash, external_subject, created_at) \
             VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(account.localpart)
        .bind(account.password_hash)
        .bind(account.external_subject)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
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
        Ok(sqlx::query_as(
            "SELECT localpart, password_hash, external_subject, created_at \
             FROM accounts WHERE localpart = ?",
        )
        .bind(localpart)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The localpart of the account that belongs to a verified identity.
    pub async fn localpart_for_subject(&self, subject: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT localpart FROM accounts WHERE external_subject = ?")
                .bind(subject)
                .fetch_optional(&self.pool)
                .await?,
        )
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
        let mut tx = self.pool.begin().await?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM accounts WHERE localpart = ?")
            .bind(localpart)
            .fetch_optional(&mut *tx)
            .await?;
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
        let owner: Option<TokenOwner> =
            sqlx::query_as("SELECT localpart, device_id FROM access_tokens WHERE token_hash = ?")
                .bind(token_hash.as_slice())
                .fetch_optional(&self.pool)
                .await?;
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
        sqlx::query("DELETE FROM devices WHERE localpart = ? AND device_id = ?")
            .bind(localpart)
            .bind(device_id)
            .execute(&self.pool)
            .await?;
        self.tokens.forget(localpart, Some(device_id));
        Ok(())
    }

    /// Deletes every device of an account and so every access token.
    pub async fn delete_all_devices(&self, localpart: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM devices WHERE localpart = ?")
            .bind(localpart)
            .execute(&self.pool)
            .await?;
        self.tokens.forget(localpart, None);
        Ok(())
    }

    /// One device of an account.
    pub async fn device(
        &self,
        localpart: &str,
        device_id: &str,
    ) -> Result<Option<DeviceRecord>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT device_id, display_name FROM devices WHERE localpart = ? AND device_id = ?",
        )
        .bind(localpart)
        .bind(device_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Sets (or with `None` removes) the display name of a device; `false` when the device
    /// does not exist.
    pub async fn set_device_display_name(
        &self,
        localpart: &str,
        device_id: &str,
        display_name: Option<&str>,
    ) -> Result<bool, StoreError> {
        let changed = sqlx::query(
            "UPDATE devices SET display_name = ? WHERE localpart = ? AND device_id = ?",
        )
        .bind(display_name)
        .bind(localpart)
        .bind(device_id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(changed > 0)
    }

    /// Deletes devices of an account (unknown IDs are skipped) and so their access tokens, in
    /// one transaction.
    pub async fn delete_devices(
        &self,
        localpart: &str,
        device_ids: &[&str],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for device_id in device_ids {
            sqlx::query("DELETE FROM devices WHERE localpart = ? AND device_id = ?")
                .bind(localpart)
                .bind(device_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        for device_id in device_ids {
            self.tokens.forget(localpart, Some(device_id));
        }
        Ok(())
    }

    /// The devices of an account, by device ID.
    pub async fn devices(&self, localpart: &str) -> Result<Vec<DeviceRecord>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT device_id, display_name FROM devices WHERE localpart = ? ORDER BY device_id",
        )
        .bind(localpart)
        .fetch_all(&self.pool)
        .await?)
    }
}

/// Creates the device unless it exists, then replaces its access token.
async fn add_device(
    tx: &mut sqlx::SqliteConnection,
    localpart: &str,
    device: NewDevice<'_>,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO devices (localpart, device_id, display_name, created_at) \
         VALUES (?, ?, ?, ?) ON CONFLICT (localpart, device_id) DO NOTHING",
    )
    .bind(localpart)
    .bind(device.device_id)
    .bind(device.display_name)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM access_tokens WHERE localpart = ? AND device_id = ?")
        .bind(localpart)
        .bind(device.device_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO access_tokens (token_hash, localpart, device_id, created_at) \
         VALUES (?, ?, ?, ?)",
    )
    .bind(device.token_hash.as_slice())
    .bind(localpart)
    .bind(device.device_id)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use tempfile::TempDir;

    use super::*;
    use crate::store::sqlite::SqliteStore;

    async fn store() -> (TempDir, SqliteStore, AccountStore) {
        let dir = TempDir::new().unwrap();
        let sqlite = SqliteStore::open(dir.path()).await.unwrap();
        let accounts = AccountStore::new(sqlite.pool().clone());
        (dir, sqlite, accounts)
    }

    fn alice() -> NewAccount<'static> {
        NewAccount {
            localpart: "alice",
            password_hash: Some("$argon2id$stub"),
            external_subject: None,
        }
    }

    fn device<'a>(id: &'a str, hash: &'a [u8; 32]) -> NewDevice<'a> {
        NewDevice {
            device_id: id,
            display_name: Some("laptop"),
            token_hash: hash,
        }
    }

    #[tokio::test]
    async fn a_localpart_or_subject_is_taken_once() {
        let (_dir, _sqlite, s) = store().await;
        assert!(s.create_account(alice(), None, 1).await.unwrap());
        assert!(!s.create_account(alice(), None, 2).await.unwrap());
        let linked = NewAccount {
            localpart: "bob",
            password_hash: None,
            external_subject: Some("user://idp.example.org/bob"),
        };
        assert!(s.create_account(linked, None, 3).await.unwrap());
        let again = NewAccount {
            localpart: "bob2",
            ..linked
        };
        assert!(!s.create_account(again, None, 4).await.unwrap());
        assert_eq!(
            s.localpart_for_subject("user://idp.example.org/bob")
                .await
                .unwrap()
                .as_deref(),
            Some("bob")
        );
        let rec = s.account("alice").await.unwrap().unwrap();
        assert_eq!(rec.password_hash.as_deref(), Some("$argon2id$stub"));
        assert_eq!(rec.created_at, 1);
        assert!(s.account("carol").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_new_login_on_a_device_replaces_its_token() {
        let (_dir, _sqlite, s) = store().await;
        let (t1, t2, t3) = ([1; 32], [2; 32], [3; 32]);
        assert!(
            s.create_account(alice(), Some(device("DEV1", &t1)), 1)
                .await
                .unwrap()
        );
        assert!(
            s.login_device("alice", device("DEV1", &t2), 2)
                .await
                .unwrap()
        );
        assert!(s.token_owner(&t1).await.unwrap().is_none());
        let owner = s.token_owner(&t2).await.unwrap().unwrap();
        assert_eq!(
            (owner.localpart.as_str(), owner.device_id.as_str()),
            ("alice", "DEV1")
        );
        assert!(
            s.login_device("alice", device("DEV2", &t3), 3)
                .await
                .unwrap()
        );
        assert_eq!(s.devices("alice").await.unwrap().len(), 2);
        assert!(
            !s.login_device("nobody", device("X", &[9; 32]), 4)
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn deleting_devices_revokes_their_tokens() {
        let (_dir, _sqlite, s) = store().await;
        let (t1, t2) = ([1; 32], [2; 32]);
        s.create_account(alice(), Some(device("DEV1", &t1)), 1)
            .await
            .unwrap();
        s.login_device("alice", device("DEV2", &t2), 2)
            .await
            .unwrap();
        s.delete_device("alice", "DEV1").await.unwrap();
        assert!(s.token_owner(&t1).await.unwrap().is_none());
        assert!(s.token_owner(&t2).await.unwrap().is_some());
        s.delete_all_devices("alice").await.unwrap();
        assert!(s.token_owner(&t2).await.unwrap().is_none());
        assert!(s.devices("alice").await.unwrap().is_empty());
        assert!(s.account("alice").await.unwrap().is_some());
    }
}
