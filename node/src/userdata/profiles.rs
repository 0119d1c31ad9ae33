//! [`Profiles`]: display names and avatar URLs. A user exists for the profile API when it is a
//! local account or has a stored profile; a user without a stored profile has an empty one.
//! Stored in SQLite or PostgreSQL ([`Db`]; `profiles` of `migrations/0004_userdata.sql` and
//! `pg_migrations/0008_matrix_profiles_filters.sql`). Each change counts a version
//! (`members_version`; `migrations/0013_profile_members.sql`, `pg_migrations/0016`) that the
//! re-send of the user's member events marks done (`members_done`) once every joined room has
//! the profile: [`Profiles::members_behind`] are the users whose re-send has not finished.

use ruma::{MxcUri, OwnedMxcUri, OwnedServerName, UserId};

use crate::store::StoreError;
use crate::store::accounts::AccountStore;
use crate::store::db::{Db, on_db};

/// A user's profile.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    pub displayname: Option<String>,
    pub avatar_url: Option<OwnedMxcUri>,
}

/// One field of a profile, as set by its owner: `None` removes it.
#[derive(Debug, Clone, Copy)]
pub enum ProfileField<'a> {
    DisplayName(Option<&'a str>),
    AvatarUrl(Option<&'a MxcUri>),
}

/// The profile store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Profiles {
    db: Db,
    accounts: AccountStore,
    server_name: OwnedServerName,
}

impl Profiles {
    pub(super) fn new(db: Db, accounts: AccountStore, server_name: OwnedServerName) -> Self {
        Self {
            db,
            accounts,
            server_name,
        }
    }

    /// Whether `user` is known here: a local account, or a user with a stored profile.
    pub async fn exists(&self, user: &UserId) -> Result<bool, StoreError> {
        if user.server_name() == self.server_name
            && self.accounts.account(user.localpart()).await?.is_some()
        {
            return Ok(true);
        }
        let row: Option<String> = on_db!(&self.db, |e| sqlx::query_scalar(
            "SELECT user_id FROM profiles WHERE user_id = $1"
        )
        .bind(user.as_str())
        .fetch_optional(e)
        .await?);
        Ok(row.is_some())
    }

    /// The profile of `user` (empty when never set).
    pub async fn profile(&self, user: &UserId) -> Result<Profile, StoreError> {
        let row: Option<(Option<String>, Option<String>)> = on_db!(&self.db, |e| sqlx::query_as(
            "SELECT displayname, avatar_url FROM profiles WHERE user_id = $1"
        )
        .bind(user.as_str())
        .fetch_optional(e)
        .await?);
        let Some((displayname, avatar_url)) = row else {
            return Ok(Profile::default());
        };
        Ok(Profile {
            displayname,
            avatar_url: avatar_url.map(OwnedMxcUri::from),
        })
    }

    /// The profile of `user` and its version (the count of its changes; 0 when never set).
    pub async fn versioned(&self, user: &UserId) -> Result<(Profile, i64), StoreError> {
        let row: Option<(Option<String>, Option<String>, i64)> =
            on_db!(&self.db, |e| sqlx::query_as(
                "SELECT displayname, avatar_url, members_version FROM profiles WHERE user_id = $1"
            )
            .bind(user.as_str())
            .fetch_optional(e)
            .await?);
        let Some((displayname, avatar_url, version)) = row else {
            return Ok((Profile::default(), 0));
        };
        let profile = Profile {
            displayname,
            avatar_url: avatar_url.map(OwnedMxcUri::from),
        };
        Ok((profile, version))
    }

    /// Sets (or with `None` removes) one field of `user`'s profile; its member events are then
    /// behind ([`Profiles::members_behind`]) until a re-send marks the change done.
    pub async fn set(&self, user: &UserId, field: ProfileField<'_>) -> Result<(), StoreError> {
        let (sql, value) = match field {
            ProfileField::DisplayName(name) => (
                "INSERT INTO profiles (user_id, displayname, members_version) VALUES ($1, $2, 1) \
                 ON CONFLICT (user_id) DO UPDATE SET displayname = excluded.displayname, \
                 members_version = profiles.members_version + 1",
                name,
            ),
            ProfileField::AvatarUrl(url) => (
                "INSERT INTO profiles (user_id, avatar_url, members_version) VALUES ($1, $2, 1) \
                 ON CONFLICT (user_id) DO UPDATE SET avatar_url = excluded.avatar_url, \
                 members_version = profiles.members_version + 1",
                url.map(MxcUri::as_str),
            ),
        };
        on_db!(&self.db, |e| sqlx::query(sql)
            .bind(user.as_str())
            .bind(value)
            .execute(e)
            .await?
            .rows_affected());
        Ok(())
    }

    /// The users whose member events are behind their profile: a change whose re-send has not
    /// finished (the node stopped or died during it), at most `limit`, after `after`, as stored
    /// (the caller pages on them, and parses them).
    pub async fn members_behind(&self, after: &str, limit: u32) -> Result<Vec<String>, StoreError> {
        let users: Vec<String> = on_db!(&self.db, |e| sqlx::query_scalar(
            "SELECT user_id FROM profiles WHERE members_version > members_done \
             AND user_id > $1 ORDER BY user_id LIMIT $2"
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(e)
        .await?);
        Ok(users)
    }

    /// The re-send of `user`'s member events for the profile of `version` has finished.
    pub async fn members_done(&self, user: &UserId, version: i64) -> Result<(), StoreError> {
        on_db!(&self.db, |e| sqlx::query(
            "UPDATE profiles SET members_done = $2 WHERE user_id = $1 AND members_done < $2"
        )
        .bind(user.as_str())
        .bind(version)
        .execute(e)
        .await?
        .rows_affected());
        Ok(())
    }
}
