//! [`Presence`]: each user's presence (`online`, `unavailable`, `offline`), status message and
//! the time it was last set, kept in the `presence` table through the stream writer. Setting it
//! wakes the user and everyone sharing a room with them; `/sync` reports the presence of those
//! users that changed since its token (all of it on an initial sync).
//!
//! `/sync`'s `set_presence` writes only when the state differs from the stored one (the current
//! states are remembered in memory), so a client syncing in a loop does not write each time.
//! Presence does not time out: a user stays `online` until they (or a sync) set another state.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use ruma::presence::PresenceState;
use ruma::serde::Raw;
use ruma::{OwnedUserId, UserId};
use serde_json::json;
use sqlx::sqlite::SqlitePool;

use super::memberships::{Memberships, sharing_a_room_sql};
use super::{Arg, Upsert, commit};
use crate::store::StoreError;
use crate::stream::StreamWriter;
use crate::sync::lock;

/// A user's stored presence.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredPresence {
    pub user_id: String,
    pub presence: String,
    pub status_msg: Option<String>,
    pub last_active_ms: i64,
}

impl StoredPresence {
    /// Milliseconds since the presence was set.
    pub fn last_active_ago(&self) -> u64 {
        u64::try_from(now_ms() - self.last_active_ms).unwrap_or(0)
    }

    /// The `m.presence` event of this presence.
    fn event(&self) -> Result<Raw<ruma::events::presence::PresenceEvent>, StoreError> {
        let mut content = json!({
            "presence": self.presence,
            "last_active_ago": self.last_active_ago(),
            "currently_active": self.presence == PresenceState::Online.as_str(),
        });
        if let Some(msg) = &self.status_msg {
            content["status_msg"] = msg.as_str().into();
        }
        Raw::new(&json!({"type": "m.presence", "sender": self.user_id, "content": content}))
            .map(Raw::cast_unchecked)
            .map_err(|e| {
                StoreError::Database(sqlx::Error::Protocol(format!("presence event: {e}")))
            })
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The presence store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Presence {
    pool: SqlitePool,
    stream: StreamWriter,
    memberships: Memberships,
    /// The presence state last stored for each user this run has seen.
    current: std::sync::Arc<Mutex<HashMap<OwnedUserId, Option<String>>>>,
}

impl Presence {
    pub(super) fn new(pool: SqlitePool, stream: StreamWriter, memberships: Memberships) -> Self {
        Self {
            pool,
            stream,
            memberships,
            current: Default::default(),
        }
    }

    /// Sets `user`'s presence and status message; wakes them and those sharing a room.
    pub async fn set(
        &self,
        user: &UserId,
        presence: &PresenceState,
        status_msg: Option<&str>,
    ) -> Result<(), StoreError> {
        self.store(user, presence, Some(status_msg)).await
    }

    /// `/sync`'s `set_presence`: sets the state, keeping the status message, unless it is the
    /// stored one.
    pub async fn set_if_changed(
        &self,
        user: &UserId,
        presence: &PresenceState,
    ) -> Result<(), StoreError> {
        let known = lock(&self.current).get(user).cloned();
        let current = match known {
            Some(current) => current,
            None => {
                let current = self.get(user).await?.map(|s| s.presence);
                lock(&self.current).insert(user.to_owned(), current.clone());
                current
            }
        };
        if current.as_deref() == Some(presence.as_str()) {
            return Ok(());
        }
        self.store(user, presence, None).await
    }

    /// Stores `user`'s presence with a new status message, or (`None`) the stored one.
    async fn store(
        &self,
        user: &UserId,
        presence: &PresenceState,
        status_msg: Option<Option<&str>>,
    ) -> Result<(), StoreError> {
        let write = Upsert {
            sql: "INSERT INTO presence (user_id, presence, status_msg, last_active_ms, stream) \
                  VALUES (?1, ?2, ?3, ?4, ?6) ON CONFLICT (user_id) DO UPDATE SET \
                  presence = excluded.presence, \
                  status_msg = CASE WHEN ?5 THEN presence.status_msg \
                               ELSE excluded.status_msg END, \
                  last_active_ms = excluded.last_active_ms, stream = excluded.stream",
            args: vec![
                Arg::Text(user.to_string()),
                Arg::Text(presence.as_str().to_owned()),
                Arg::OptText(status_msg.flatten().map(str::to_owned)),
                Arg::Int(now_ms()),
                Arg::Int(i64::from(status_msg.is_none())),
            ],
        };
        let wake = self.memberships.sharing_a_room(user).await?;
        commit(&self.stream, write, wake).await?;
        lock(&self.current).insert(user.to_owned(), Some(presence.as_str().to_owned()));
        Ok(())
    }

    /// `user`'s stored presence, if ever set.
    pub async fn get(&self, user: &UserId) -> Result<Option<StoredPresence>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT user_id, presence, status_msg, last_active_ms FROM presence WHERE user_id = ?",
        )
        .bind(user.as_str())
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The presence of `user` and those sharing a room with them, set in `(since, upto]` (all
    /// of it for `since` 0).
    pub(super) async fn changes(
        &self,
        user: &UserId,
        since: i64,
        upto: i64,
    ) -> Result<Vec<Raw<ruma::events::presence::PresenceEvent>>, StoreError> {
        let rows: Vec<StoredPresence> = sqlx::query_as(concat!(
            "SELECT user_id, presence, status_msg, last_active_ms FROM presence \
             WHERE stream > ? AND stream <= ? AND user_id IN (",
            sharing_a_room_sql!(),
            ") ORDER BY user_id"
        ))
        .bind(since)
        .bind(upto)
        .bind(user.as_str())
        .bind(user.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(StoredPresence::event).collect()
    }
}
