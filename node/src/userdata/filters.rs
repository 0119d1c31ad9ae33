//! [`Filters`]: sync filters uploaded by users (`POST /user/{userId}/filter`), kept as the JSON
//! of ruma's `FilterDefinition` under a numeric ID. A filter belongs to its uploader.
//!
//! `/sync` names its filter on every request, by ID or inline as JSON; [`Filters::for_sync`]
//! answers both from memory after the first time. Stored filters never change, so the caches
//! need no invalidation; each is bounded and starts afresh when full.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ruma::api::client::filter::FilterDefinition;
use ruma::{OwnedUserId, UserId};
use sqlx::sqlite::SqlitePool;

use super::{from_json, to_json};
use crate::store::StoreError;
use crate::sync::lock;

/// Stored filters kept in memory, by owner and ID.
const MAX_CACHED_BY_ID: usize = 4096;
/// Inline filters kept parsed, by their query text.
const MAX_CACHED_INLINE: usize = 512;

/// A parsed filter shared by the requests that name it.
pub(crate) type SharedFilter = Arc<FilterDefinition>;

/// The filter store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Filters {
    pool: SqlitePool,
    by_id: Arc<Mutex<HashMap<(OwnedUserId, i64), SharedFilter>>>,
    /// Inline filter text → its definition, or `None` when the text is not a filter
    /// definition (then it is an ID).
    inline: Arc<Mutex<HashMap<String, Option<SharedFilter>>>>,
}

impl Filters {
    pub(super) fn new(pool: SqlitePool) -> Self {
        Self {
            pool,
            by_id: Arc::default(),
            inline: Arc::default(),
        }
    }

    /// The filter a `/sync` names with its `filter` parameter: a filter definition as JSON, or
    /// else the ID of one of `user`'s stored filters (as ruma reads the parameter). `encoded` is
    /// the parameter's value as it appears in the query string (form-encoded): it is the cache
    /// key, decoded only the first time. `None`: no such stored filter.
    pub async fn for_sync(
        &self,
        user: &UserId,
        encoded: &str,
    ) -> Result<Option<SharedFilter>, StoreError> {
        let known = lock(&self.inline).get(encoded).cloned();
        let inline = match known {
            Some(inline) => inline,
            None => {
                let parsed = serde_json::from_str::<FilterDefinition>(&decode(encoded))
                    .ok()
                    .map(Arc::new);
                let mut cache = lock(&self.inline);
                if cache.len() >= MAX_CACHED_INLINE {
                    cache.clear();
                }
                cache.insert(encoded.to_owned(), parsed.clone());
                parsed
            }
        };
        match inline {
            Some(filter) => Ok(Some(filter)),
            None => self.get_shared(user, &decode(encoded)).await,
        }
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
        Ok(self
            .get_shared(user, id)
            .await?
            .map(|f| FilterDefinition::clone(&f)))
    }

    /// [`Filters::get`], from memory after the first time.
    async fn get_shared(
        &self,
        user: &UserId,
        id: &str,
    ) -> Result<Option<SharedFilter>, StoreError> {
        let Ok(id) = id.parse::<i64>() else {
            return Ok(None);
        };
        let key = (user.to_owned(), id);
        if let Some(filter) = lock(&self.by_id).get(&key) {
            return Ok(Some(Arc::clone(filter)));
        }
        let json: Option<String> =
            sqlx::query_scalar("SELECT json FROM filters WHERE filter_id = ? AND user_id = ?")
                .bind(id)
                .bind(user.as_str())
                .fetch_optional(&self.pool)
                .await?;
        let Some(filter) = json.map(|j| from_json(&j)).transpose()? else {
            return Ok(None);
        };
        let filter = Arc::new(filter);
        let mut cache = lock(&self.by_id);
        if cache.len() >= MAX_CACHED_BY_ID {
            cache.clear();
        }
        cache.insert(key, Arc::clone(&filter));
        Ok(Some(filter))
    }
}

/// A form-encoded query value, decoded as a query parser does (`+` is a space).
fn decode(encoded: &str) -> String {
    form_urlencoded::parse(format!("v={encoded}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
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

    #[tokio::test]
    async fn sync_reads_a_filter_inline_or_by_its_owners_id() {
        let f = fixture().await;
        let filters = f.data.filters();
        let alice = user_id!("@a:example.com");
        let inline = "%7B%22room%22%3A%7B%22timeline%22%3A%7B%22limit%22%3A3%7D%7D%7D";
        for _ in 0..2 {
            let got = filters.for_sync(alice, inline).await.unwrap().unwrap();
            assert_eq!(got.room.timeline.limit.map(u64::from), Some(3));
        }
        let mut def = FilterDefinition::default();
        def.event_fields = Some(vec!["content".to_owned()]);
        let id = filters.create(alice, &def).await.unwrap();
        for _ in 0..2 {
            let got = filters.for_sync(alice, &id).await.unwrap().unwrap();
            assert_eq!(got.event_fields, def.event_fields);
        }
        // Another user's ID, an unknown ID, and text that is neither JSON nor an ID.
        let bob = user_id!("@b:example.com");
        assert!(filters.for_sync(bob, &id).await.unwrap().is_none());
        assert!(filters.for_sync(alice, "999").await.unwrap().is_none());
        assert!(
            filters
                .for_sync(alice, "{not json")
                .await
                .unwrap()
                .is_none()
        );
    }
}
