//! [`Filters`]: sync filters uploaded by users (`POST /user/{userId}/filter`), kept as the JSON
//! of ruma's `FilterDefinition` under a numeric ID. A filter belongs to its uploader.
//!
//! `/sync` names its filter on every request, by ID or inline as JSON; [`Filters::for_sync`]
//! answers both from memory after the first time. Stored filters never change, so the caches
//! need no invalidation; each is bounded and starts afresh when full. Stored in SQLite or
//! PostgreSQL ([`Db`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ruma::api::client::filter::FilterDefinition;
use ruma::{OwnedUserId, UserId};

use super::{from_json, to_json};
use crate::locks::lock;
use crate::store::StoreError;
use crate::store::db::{Db, on_db};

/// Stored filters kept in memory, by owner and ID.
const MAX_CACHED_BY_ID: usize = 4096;
/// Inline filters kept parsed, by their query text.
const MAX_CACHED_INLINE: usize = 512;

/// A parsed filter shared by the requests that name it.
pub(crate) type SharedFilter = Arc<FilterDefinition>;

/// The filter store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Filters {
    db: Db,
    by_id: Arc<Mutex<HashMap<(OwnedUserId, i64), SharedFilter>>>,
    /// Inline filter text (form-encoded) → its definition.
    inline: Arc<Mutex<HashMap<String, SharedFilter>>>,
}

impl Filters {
    pub(super) fn new(db: Db) -> Self {
        Self {
            db,
            by_id: Arc::default(),
            inline: Arc::default(),
        }
    }

    /// The filter a `/sync` names with its `filter` parameter: a value starting with `{` is a
    /// filter definition as JSON (as the spec tells servers to read it), anything else the ID of
    /// one of `user`'s stored filters. `encoded` is the parameter's value as it appears in the
    /// query string (form-encoded): an inline filter is cached by it, decoded and parsed only the
    /// first time. `None`: no such stored filter.
    pub async fn for_sync(
        &self,
        user: &UserId,
        encoded: &str,
    ) -> Result<Option<SharedFilter>, FilterError> {
        if let Some(known) = lock(&self.inline).get(encoded) {
            return Ok(Some(Arc::clone(known)));
        }
        let decoded = decode(encoded);
        if !decoded.trim_start().starts_with('{') {
            return Ok(self.get_shared(user, &decoded).await?);
        }
        let parsed = Arc::new(parse_inline(&decoded)?);
        let mut cache = lock(&self.inline);
        if cache.len() >= MAX_CACHED_INLINE {
            cache.clear();
        }
        cache.insert(encoded.to_owned(), Arc::clone(&parsed));
        Ok(Some(parsed))
    }

    /// Stores `filter` for `user`; returns its ID.
    pub async fn create(
        &self,
        user: &UserId,
        filter: &FilterDefinition,
    ) -> Result<String, StoreError> {
        let json = to_json(filter)?;
        let id: i64 = on_db!(&self.db, |e| sqlx::query_scalar(
            "INSERT INTO filters (user_id, json) VALUES ($1, $2) RETURNING filter_id",
        )
        .bind(user.as_str())
        .bind(&json)
        .fetch_one(e)
        .await?);
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
        let json: Option<String> = on_db!(&self.db, |e| sqlx::query_scalar(
            "SELECT json FROM filters WHERE filter_id = $1 AND user_id = $2"
        )
        .bind(id)
        .bind(user.as_str())
        .fetch_optional(e)
        .await?);
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
/// Why an inline `/sync` filter is refused.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("the inline filter is not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error("the inline filter is not a filter definition: {0}")]
    BadJson(#[source] serde_json::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An inline filter definition.
fn parse_inline(json: &str) -> Result<FilterDefinition, FilterError> {
    serde_json::from_str(json).map_err(|e| {
        if serde_json::from_str::<serde::de::IgnoredAny>(json).is_ok() {
            FilterError::BadJson(e)
        } else {
            FilterError::NotJson(e)
        }
    })
}

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
        // Another user's ID, an unknown ID, and text that is not an ID.
        let bob = user_id!("@b:example.com");
        assert!(filters.for_sync(bob, &id).await.unwrap().is_none());
        assert!(filters.for_sync(alice, "999").await.unwrap().is_none());
        assert!(filters.for_sync(alice, "nope").await.unwrap().is_none());
        // A value starting with `{` is inline JSON, however bad (form-encoded or not).
        for not_json in ["{not json", "%7Bbad", "+%7B"] {
            assert!(
                matches!(
                    filters.for_sync(alice, not_json).await,
                    Err(FilterError::NotJson(_))
                ),
                "{not_json}"
            );
        }
        assert!(matches!(
            filters.for_sync(alice, "%7B%22room%22%3A5%7D").await,
            Err(FilterError::BadJson(_))
        ));
    }
}
