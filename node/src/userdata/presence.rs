//! [`Presence`]: each user's presence (`online`, `unavailable`, `offline`), status message and
//! the time they were last active, kept in the `presence` table through the stream writer.
//! Storing it wakes the user and everyone sharing a room with them; `/sync` reports the presence
//! of those users that changed since its token (all of it on an initial sync).
//!
//! What changes often stays in memory ([`live::LiveMap`]): a `/sync` ([`Presence::syncing`])
//! refreshes the user's activity and writes only when the state changes (or an idle user becomes
//! active again), so a client syncing in a loop does not write each time, and no `/sync` reads
//! the database for presence once the user is known. Presence times out by itself
//! ([`Presence::run`], a periodic sweep owned by the node; thresholds in
//! `[matrix.presence]`): an `online` user inactive for the idle timeout stays `online` with
//! `currently_active: false` (and `last_active_ago` growing); a user with no `/sync` in progress
//! who has neither ended one nor been active for the offline timeout goes `offline`. Both are
//! stored and reported like any change.
//!
//! Several nodes (a cluster) each keep their own [`LiveMap`]; with [`Presence::announce`] taken
//! (`crate::cluster`), each node tells the others, every sweep, which users have a `/sync` in
//! progress on it, and each write it stored; [`Presence::apply_remote`] applies what the others
//! tell, so that a user syncing through one node does not time out on another that knew them
//! (from a `/sync` there, or as online at its start), and each node decides from the state
//! stored last. A lost notice is made good by the next sweep's.
//!
//! Presence writes are decided under the [`LiveMap`] lock and queued in that order in the same
//! critical section; one writer task ([`Presence::run`], owned by the node, which also applies
//! the timeouts) stores them one after the other, so the table always ends with the state
//! decided last, and no lock is held while the database is written. A caller that must know its
//! write is stored (a presence `PUT`, a `/sync` that changes the state) waits for its turn.
//!
//! Nothing a failed database leaves is permanent: a write that could not be stored (a timeout,
//! or a request's, whose caller gets the error) is decided again by the next sweep, or by the
//! user's next `/sync`, until it is stored (`live`'s module docs); the users online before the
//! start, if they cannot be read then, are read again at each sweep until they are, so that
//! they time out.

mod live;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use ruma::presence::PresenceState;
use ruma::serde::Raw;
use ruma::{OwnedUserId, UserId};
use serde_json::json;
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;

use super::memberships::{Memberships, sharing_a_room_sql};
use super::{Arg, Upsert, commit};
use crate::clock::{Clock, Ticker};
use crate::config::PresenceConfig;
use crate::locks::lock;
use crate::store::StoreError;
use crate::store::db::{Db, on_db};
use crate::stream::StreamWriter;
use live::{LiveMap, View, Write};

/// A user's stored presence, with what this run knows of their activity.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredPresence {
    pub user_id: String,
    pub presence: String,
    pub status_msg: Option<String>,
    /// When the user was last active (unix ms).
    pub last_active_ms: i64,
    /// `online` and active within the idle timeout.
    #[sqlx(skip)]
    pub currently_active: bool,
}

impl StoredPresence {
    /// Milliseconds since the user was last active, at `now_ms` (unix ms).
    pub fn last_active_ago(&self, now_ms: i64) -> u64 {
        u64::try_from(now_ms - self.last_active_ms).unwrap_or(0)
    }

    /// The row completed with what this run knows of the user.
    fn with(mut self, view: Option<View>) -> Self {
        if let Some(view) = view {
            self.last_active_ms = self.last_active_ms.max(view.last_active_ms);
            self.currently_active = view.currently_active;
        }
        self
    }

    /// The `m.presence` event of this presence, at `now_ms`.
    fn event(&self, now_ms: i64) -> Result<Raw<ruma::events::presence::PresenceEvent>, StoreError> {
        let mut content = json!({
            "presence": self.presence,
            "last_active_ago": self.last_active_ago(now_ms),
            "currently_active": self.currently_active,
        });
        if let Some(msg) = &self.status_msg {
            content["status_msg"] = msg.as_str().into();
        }
        Raw::new(&json!({"type": "m.presence", "sender": self.user_id, "content": content}))
            .map(Raw::cast_unchecked)
            .map_err(|e| StoreError::Corrupt {
                what: "presence of",
                id: self.user_id.clone(),
                source: Box::new(e),
            })
    }
}

/// The presence store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Presence {
    db: Db,
    stream: StreamWriter,
    memberships: Memberships,
    live: Arc<Mutex<LiveMap>>,
    /// Decided writes in decision order, for the writer task.
    queue: Arc<Mutex<WriteQueue>>,
    /// Wakes the writer task when a write was queued.
    queued: Arc<Notify>,
    clock: Clock,
    /// Where this node's notices for the other nodes go, once a cluster took them.
    outbound: Arc<std::sync::OnceLock<tokio::sync::mpsc::Sender<PresenceNotice>>>,
}

/// What one node of a cluster tells the others of presence ([`Presence::announce`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PresenceNotice {
    /// These users (with when they were last active) have a `/sync` in progress on the node
    /// at `at_ms`.
    Syncing {
        users: Vec<(String, i64)>,
        at_ms: i64,
    },
    /// The node stored this presence of `user`.
    Stored {
        user: String,
        state: String,
        last_active_ms: i64,
        active: bool,
    },
}

/// Presence writes decided and not yet stored.
#[derive(Debug, Default)]
struct WriteQueue {
    writes: VecDeque<Queued>,
    /// The writer task has stopped: nothing more is queued.
    closed: bool,
}

/// One decided write: for `user`, with a new status message or (`None`) the stored one, and
/// who waits for it to be stored (no one for a timeout).
#[derive(Debug)]
struct Queued {
    user: OwnedUserId,
    write: Write,
    status_msg: Option<Option<String>>,
    done: Option<oneshot::Sender<Result<(), StoreError>>>,
}

/// A `/sync` in progress that keeps its user from going offline; it ends when dropped.
#[derive(Debug)]
#[must_use = "the sync counts until this is dropped"]
pub struct Syncing {
    live: Arc<Mutex<LiveMap>>,
    user: Option<OwnedUserId>,
    clock: Clock,
}

impl Drop for Syncing {
    fn drop(&mut self) {
        if let Some(user) = self.user.take() {
            lock(&self.live).sync_ended(&user, self.clock.unix_ms());
        }
    }
}

impl Presence {
    pub(super) fn new(
        db: Db,
        stream: StreamWriter,
        memberships: Memberships,
        clock: Clock,
    ) -> Self {
        Self {
            db,
            stream,
            memberships,
            live: Default::default(),
            queue: Default::default(),
            queued: Default::default(),
            clock,
            outbound: Default::default(),
        }
    }

    /// The notices of this node's presence for the other nodes of a cluster (once: `None`
    /// the second time), up to 1,024 (`ANNOUNCE_QUEUE`) waiting; more are dropped.
    pub fn announce(&self) -> Option<tokio::sync::mpsc::Receiver<PresenceNotice>> {
        let (tx, rx) = tokio::sync::mpsc::channel(super::ANNOUNCE_QUEUE);
        self.outbound.set(tx).ok().map(|()| rx)
    }

    /// Applies a notice of another node (see the module docs).
    pub fn apply_remote(&self, notice: PresenceNotice) {
        let mut live = lock(&self.live);
        match notice {
            PresenceNotice::Syncing { users, at_ms } => {
                for (user, last_active_ms) in users {
                    if let Ok(user) = UserId::parse(user.as_str()) {
                        live.synced_elsewhere(&user, last_active_ms, at_ms);
                    }
                }
            }
            PresenceNotice::Stored {
                user,
                state,
                last_active_ms,
                active,
            } => {
                if let Ok(user) = UserId::parse(user.as_str()) {
                    let write = Write {
                        state: PresenceState::from(state.as_str()),
                        last_active_ms,
                    };
                    live.stored_elsewhere(&user, &write, active);
                }
            }
        }
    }

    /// Tells the other nodes (if any) which users have a `/sync` in progress here.
    fn tell_syncing(&self) {
        if self.outbound.get().is_none() {
            return;
        }
        let users: Vec<(String, i64)> = lock(&self.live)
            .syncing_users()
            .into_iter()
            .map(|(u, at)| (u.to_string(), at))
            .collect();
        if !users.is_empty() {
            let at_ms = self.clock.unix_ms();
            self.tell(|| PresenceNotice::Syncing { users, at_ms });
        }
    }

    /// Tells the other nodes (if any) `notice`.
    fn tell(&self, notice: impl FnOnce() -> PresenceNotice) {
        if let Some(outbound) = self.outbound.get() {
            let _ = outbound.try_send(notice());
        }
    }

    /// Queues `write` (decided while `_decided`, the live map's guard, is held: the queue keeps
    /// decision order); the receiver resolves once it is stored.
    fn enqueue(
        &self,
        _decided: &std::sync::MutexGuard<'_, LiveMap>,
        user: &UserId,
        write: Write,
        status_msg: Option<Option<&str>>,
    ) -> oneshot::Receiver<Result<(), StoreError>> {
        let (done, stored) = oneshot::channel();
        let mut queue = lock(&self.queue);
        if queue.closed {
            let _ = done.send(Err(StoreError::WriterStopped));
        } else {
            queue.writes.push_back(Queued {
                user: user.to_owned(),
                write,
                status_msg: status_msg.map(|m| m.map(str::to_owned)),
                done: Some(done),
            });
            self.queued.notify_one();
        }
        stored
    }

    /// Waits for a queued write to be stored.
    async fn stored(stored: oneshot::Receiver<Result<(), StoreError>>) -> Result<(), StoreError> {
        stored.await.unwrap_or(Err(StoreError::WriterStopped))
    }

    /// Sets `user`'s presence and status message (activity); wakes them and those sharing a
    /// room.
    pub async fn set(
        &self,
        user: &UserId,
        presence: &PresenceState,
        status_msg: Option<&str>,
    ) -> Result<(), StoreError> {
        let stored = {
            let mut live = lock(&self.live);
            let write = live.set(user, presence, self.clock.unix_ms());
            self.enqueue(&live, user, write, Some(status_msg))
        };
        Self::stored(stored).await
    }

    /// A `/sync` of `user` with `set_presence` `requested` starts: refreshes the user's activity
    /// (`online`), stores the state, keeping the status message, when it changes, and counts the
    /// sync (`online` or `unavailable`) until the returned guard is dropped.
    pub async fn syncing(
        &self,
        user: &UserId,
        requested: &PresenceState,
    ) -> Result<Syncing, StoreError> {
        if !lock(&self.live).knows(user) {
            let stored = self.row(user).await?;
            let state = stored
                .as_ref()
                .map(|s| PresenceState::from(s.presence.as_str()));
            let last_active = stored.map_or(0, |s| s.last_active_ms);
            lock(&self.live).learn(user, state, last_active, false, self.clock.unix_ms());
        }
        let (counts, wants) = lock(&self.live).sync_started(user, requested, self.clock.unix_ms());
        let guard = Syncing {
            live: Arc::clone(&self.live),
            user: counts.then(|| user.to_owned()),
            clock: self.clock.clone(),
        };
        if wants {
            let stored = {
                let mut live = lock(&self.live);
                live.sync_write(user, requested)
                    .map(|write| self.enqueue(&live, user, write, None))
            };
            if let Some(stored) = stored {
                Self::stored(stored).await?;
            }
        }
        Ok(guard)
    }

    /// Stores `write` for `user` with a new status message, or (`None`) the stored one. On
    /// failure the user's presence is marked not stored, to be written again
    /// ([`LiveMap::store_failed`]).
    async fn store(
        &self,
        user: &UserId,
        write: &Write,
        status_msg: Option<Option<&str>>,
    ) -> Result<(), StoreError> {
        let upsert = Upsert {
            sql: "INSERT INTO presence (user_id, presence, status_msg, last_active_ms, stream) \
                  VALUES ($1, $2, $3, $4, $6) ON CONFLICT (user_id) DO UPDATE SET \
                  presence = excluded.presence, \
                  status_msg = CASE WHEN $5 = 1 THEN presence.status_msg \
                               ELSE excluded.status_msg END, \
                  last_active_ms = excluded.last_active_ms, stream = excluded.stream",
            args: vec![
                Arg::Text(user.to_string()),
                Arg::Text(write.state.as_str().to_owned()),
                Arg::OptText(status_msg.flatten().map(str::to_owned)),
                Arg::Int(write.last_active_ms),
                Arg::Int(i64::from(status_msg.is_none())),
            ],
        };
        let stored = async {
            let wake = self.memberships.sharing_a_room(user).await?;
            commit(&self.stream, upsert, wake).await
        }
        .await;
        if stored.is_err() {
            lock(&self.live).store_failed(user);
        }
        stored.map(|_| ())
    }

    /// `user`'s stored row, if any.
    async fn row(&self, user: &UserId) -> Result<Option<StoredPresence>, StoreError> {
        Ok(on_db!(&self.db, |e| sqlx::query_as(
            "SELECT user_id, presence, status_msg, last_active_ms FROM presence WHERE user_id = $1",
        )
        .bind(user.as_str())
        .fetch_optional(e)
        .await?))
    }

    /// `user`'s presence, if ever set.
    pub async fn get(&self, user: &UserId) -> Result<Option<StoredPresence>, StoreError> {
        let row = self.row(user).await?;
        Ok(row.map(|r| r.with(lock(&self.live).view(user))))
    }

    /// The presence of `user` and those sharing a room with them, set in `(since, upto]` (all
    /// of it for `since` 0).
    pub(super) async fn changes(
        &self,
        user: &UserId,
        since: i64,
        upto: i64,
    ) -> Result<Vec<Raw<ruma::events::presence::PresenceEvent>>, StoreError> {
        let rows: Vec<StoredPresence> = on_db!(&self.db, |e| sqlx::query_as(concat!(
            "SELECT user_id, presence, status_msg, last_active_ms FROM presence \
             WHERE stream > $1 AND stream <= $2 AND user_id IN (",
            sharing_a_room_sql!("$3", "$3"),
            ") ORDER BY user_id"
        ))
        .bind(since)
        .bind(upto)
        .bind(user.as_str())
        .fetch_all(e)
        .await?);
        let rows: Vec<StoredPresence> = {
            let live = lock(&self.live);
            rows.into_iter()
                .map(|r| {
                    let view = UserId::parse(r.user_id.as_str())
                        .ok()
                        .and_then(|u| live.view(&u));
                    r.with(view)
                })
                .collect()
        };
        let now = self.clock.unix_ms();
        rows.iter().map(|r| r.event(now)).collect()
    }

    /// The presence writer: stores the queued writes in order, and queues the timeouts due every
    /// `config.sweep_interval()`, until `stop` (the node stops it once no request is left); what
    /// is queued by then is stored first. First learns the users the store has as not `offline`
    /// (from before a restart): they have one offline timeout to sync again; if the store cannot
    /// be read, each sweep tries again until it is. (The ticker is made at once, before the task
    /// runs, so that a test's manual clock knows it from the start.)
    pub fn run(
        self,
        config: PresenceConfig,
        stop: CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static {
        let tick = self.clock.ticker(config.sweep_interval());
        async move {
            let restored = self.try_restore(&config).await;
            self.write_on(tick, &config, &stop, restored).await;
        }
    }

    /// The writer's loop (see [`Presence::run`]); `restored`: whether the users online before
    /// the start were read.
    async fn write_on(
        &self,
        mut tick: Ticker,
        config: &PresenceConfig,
        stop: &CancellationToken,
        mut restored: bool,
    ) {
        loop {
            let stopping = tokio::select! {
                () = stop.cancelled() => true,
                () = self.queued.notified() => false,
                () = tick.tick() => {
                    if !restored {
                        restored = self.try_restore(config).await;
                    }
                    let due = self.queue_timeouts(config);
                    if due > 0 {
                        tracing::debug!(changes = due, "presence timeouts applied");
                    }
                    self.tell_syncing();
                    false
                }
            };
            if stopping {
                lock(&self.queue).closed = true;
            }
            self.store_queued().await;
            if stopping {
                return;
            }
        }
    }

    /// Stores the queued writes, in order, until none is left.
    async fn store_queued(&self) {
        loop {
            let Some(next) = lock(&self.queue).writes.pop_front() else {
                return;
            };
            let stored = self
                .store(
                    &next.user,
                    &next.write,
                    next.status_msg.as_ref().map(|m| m.as_deref()),
                )
                .await;
            if stored.is_ok() {
                self.tell(|| PresenceNotice::Stored {
                    user: next.user.to_string(),
                    state: next.write.state.as_str().to_owned(),
                    last_active_ms: next.write.last_active_ms,
                    active: lock(&self.live).is_active(&next.user),
                });
            }
            match next.done {
                Some(done) => {
                    let _ = done.send(stored);
                }
                None => {
                    if let Err(e) = stored {
                        tracing::warn!(user = %next.user, error = %e, "presence: storing a timeout failed (stored again at the next sweep)");
                    }
                }
            }
        }
    }

    /// [`Self::restore`]; whether it was done (a failure is logged).
    async fn try_restore(&self, config: &PresenceConfig) -> bool {
        match self.restore(config).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "presence: the users online before the start were not read (read again at the next sweep)");
                false
            }
        }
    }

    /// Learns every user stored as not `offline`.
    async fn restore(&self, config: &PresenceConfig) -> Result<(), StoreError> {
        let rows: Vec<(String, String, i64)> = on_db!(&self.db, |e| {
            sqlx::query_as(
            "SELECT user_id, presence, last_active_ms FROM presence WHERE presence <> 'offline'",
        )
        .fetch_all(e)
        .await?
        });
        let now = self.clock.unix_ms();
        let idle = i64::try_from(config.idle_timeout.as_millis()).unwrap_or(i64::MAX);
        let mut live = lock(&self.live);
        for (user, state, last_active) in rows {
            if let Ok(user) = UserId::parse(user.as_str()) {
                let active = now.saturating_sub(last_active) < idle;
                live.learn(
                    &user,
                    Some(PresenceState::from(state.as_str())),
                    last_active,
                    active,
                    now,
                );
            }
        }
        Ok(())
    }

    /// Queues the timeouts due now, and the writes to make again; returns how many.
    fn queue_timeouts(&self, config: &PresenceConfig) -> usize {
        let mut live = lock(&self.live);
        let due = live.due(
            config.idle_timeout,
            config.offline_timeout,
            self.clock.unix_ms(),
        );
        let count = due.len();
        let mut queue = lock(&self.queue);
        for (user, write) in due {
            tracing::debug!(%user, state = write.state.as_str(), "presence timed out");
            queue.writes.push_back(Queued {
                user,
                write,
                status_msg: None,
                done: None,
            });
        }
        count
    }
}
