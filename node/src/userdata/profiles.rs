//! [`Profiles`]: display names and avatar URLs. A user exists for the profile API when it is a
//! local account or has a stored profile; a user without a stored profile has an empty one.

use ruma::{MxcUri, OwnedMxcUri, OwnedServerName, UserId};
use sqlx::sqlite::SqlitePool;

use crate::store::StoreError;
use crate::store::accounts::AccountStore;

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
    pool: SqlitePool,
    accounts: AccountStore,
    server_name: OwnedServerName,
}

impl Profiles {
    pub(super) fn new(
        pool: SqlitePool,
        accounts: AccountStore,
        server_name: OwnedServerName,
    ) -> Self {
        Self {
            pool,
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
        let row: Option<i64> = sqlx::query_scalar("SELECT 1 FROM profiles WHERE user_id = ?")
            .bind(user.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// The profile of `user` (empty when never set).
    pub async fn profile(&self, user: &UserId) -> Result<Profile, StoreError> {
        let row: Option<(Option<String>, Option<String>)> =
            sqlx::query_as("SELECT displayname, avatar_url FROM profiles WHERE user_id = ?")
                .bind(user.as_str())
                .fetch_optional(&self.pool)
                .await?;
        let Some((displayname, avatar_url)) = row else {
            return Ok(Profile::default());
        };
        Ok(Profile {
            displayname,
            avatar_url: avatar_url.map(OwnedMxcUri::from),
        })
    }

    /// Sets (or with `None` removes) one field of `user`'s profile.
    pub async fn set(&self, user: &UserId, field: ProfileField<'_>) -> Result<(), StoreError> {
        let (sql, value) = match field {
            ProfileField::DisplayName(name) => (
                "INSERT INTO profiles (user_id, displayname) VALUES (?, ?) \
                 ON CONFLICT (user_id) DO UPDATE SET displayname = excluded.displayname",
                name,
            ),
            ProfileField::AvatarUrl(url) => (
                "INSERT INTO profiles (user_id, avatar_url) VALUES (?, ?) \
                 ON CONFLICT (user_id) DO UPDATE SET avatar_url = excluded.avatar_url",
                url.map(MxcUri::as_str),
            ),
        };
        sqlx::query(sql)
            .bind(user.as_str())
            .bind(value)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use ruma::{owned_mxc_uri, user_id};

    use super::super::test_support::fixture;
    use super::*;

    #[tokio::test]
    async fn fields_are_set_and_removed_independently() {
        let f = fixture().await;
        let p = f.data.profiles();
        let alice = user_id!("@alice:example.com");
        assert_eq!(p.profile(alice).await.unwrap(), Profile::default());
        assert!(!p.exists(alice).await.unwrap());
        let name = ProfileField::DisplayName(Some("Alice"));
        p.set(alice, name).await.unwrap();
        let avatar = owned_mxc_uri!("mxc://example.com/abc");
        p.set(alice, ProfileField::AvatarUrl(Some(&avatar)))
            .await
            .unwrap();
        p.set(alice, ProfileField::DisplayName(None)).await.unwrap();
        let got = p.profile(alice).await.unwrap();
        assert_eq!(got.displayname, None);
        assert_eq!(got.avatar_url, Some(avatar));
        assert!(p.exists(alice).await.unwrap());
    }
}
