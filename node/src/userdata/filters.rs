//! [`Filters`]: sync filters uploaded by users (`POST /user/{userId}/filter`), kept as the JSON
//! of ruma's `FilterDefinition` under a numeric ID. A filter belongs to its uploader.

use ruma::UserId;
use ruma::api::client::filter::FilterDefinition;
use sqlx::sqlite::SqlitePool;

use super::{from_json, to_json};
use crate::store::StoreError;

/// The filter store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Filters {
    pool: SqlitePool,
}

impl Filters {
    pub(super) fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }

    /// Stores `filter` for `user`; returns its ID.
    pub async fn create(
        &self,
        user: &UserId,
        filter: &FilterDefinition,
    ) -> Result<String, StoreError> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO filters (user_id, json) VALUES (?, ?) RETURNING filter_id",
        )
        .bind(user.as_str())
        .bind(to_json(filter)?)
        .fetch_one(&self.pool)
        .await?;
        Ok(id.to_string())
    }

    /// The filter `id` of `user`, if that user uploaded it.
    pub async fn get(
        &self,
        user: &UserId,
        id: &str,
    ) -> Result<Option<FilterDefinition>, StoreError> {
        let Ok(id) = id.parse::<i64>() else {
            return Ok(None);
        };
        let json: Option<String> =
            sqlx::query_scalar("SELECT json FROM filters WHERE filter_id = ? AND user_id = ?")
                .bind(id)
                .bind(user.as_str())
                .fetch_optional(&self.pool)
                .await?;
        json.map(|j| from_json(&j)).transpose()
    }
}

#[cfg(test)]
mod tests {
    use ruma::user_id;

    use super::super::test_support::fixture;
    use super::*;

    #[tokio::test]
    async fn a_filter_is_found_by_its_owner_only() {
        let f = fixture().await;
        let filters = f.data.filters();
        let mut def = FilterDefinition::default();
        def.event_fields = Some(vec!["type".to_owned()]);
        let id = filters
            .create(user_id!("@a:example.com"), &def)
            .await
            .unwrap();
        let got = filters
            .get(user_id!("@a:example.com"), &id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.event_fields, def.event_fields);
        assert!(
            filters
                .get(user_id!("@b:example.com"), &id)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            filters
                .get(user_id!("@a:example.com"), "nope")
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            filters
                .get(user_id!("@a:example.com"), "999")
                .await
                .unwrap()
                .is_none()
        );
    }
}
