//! [`UserData`]: what the node keeps per Matrix user besides rooms:
//! sync filters, profiles, account data, devices, end-to-end encryption keys, to-device
//! messages, receipts, presence (`0005_presence.sql`) and typing notifications.
//!
//! One submodule per concern, each owning its SQL, stored in SQLite (`rethink.db`; tables in
//! `migrations/0004_userdata.sql` to `0007_cross_signing.sql`, and
//! `0012_device_list_changes_by_user.sql`) or PostgreSQL (`store.url`;
//! `pg_migrations/0008_matrix_profiles_filters.sql`, `0011_matrix_userdata.sql` and
//! `0015_device_list_changes_by_user.sql`) through
//! [`Db`]: one SQL text with `$N` parameters for both engines, run with `on_db!` (reads) and
//! `on_conn!` (writes). Every write a `/sync` reports (account data, receipts, presence,
//! device-key changes, to-device messages) is a `Write` (for account data and receipts, one
//! `Upsert` statement) that goes through the [`StreamWriter`], which applies it on its
//! transaction's [`Conn`], and so takes a stream position; typing is in memory with its own serial
//! ([`UserData::typing_serial`]). [`UserData::sync_global`] and [`UserData::sync_room`] are what
//! `/sync` asks for, between two positions.
//!
//! Who shares a room with whom comes from `memberships.rs` (the room engine's table, in the same
//! database).
//!
//! Errors are the store's ([`StoreError`]): absence is an `Option`, and who may do what is
//! decided by the Matrix handlers.

mod account_data;

/// How many of this node's typing or presence notices may wait for the cluster's link to
/// publish them; when it cannot keep up (NATS down or slow) the newest are dropped, as a
/// lost notice would be (`cluster/notices.rs`): memory stays bounded whatever clients do.
const ANNOUNCE_QUEUE: usize = 1024;
mod devices;
mod filters;
mod keys;
mod memberships;
mod presence;
mod profiles;
mod receipts;
mod to_device;
mod typing;

use std::sync::Arc;

use futures_util::future::BoxFuture;
use ruma::events::{
    AnyGlobalAccountDataEvent, AnyRoomAccountDataEvent, AnySyncEphemeralRoomEvent, AnyToDeviceEvent,
};
use ruma::serde::Raw;
use ruma::{DeviceId, OwnedEventId, OwnedServerName, OwnedUserId, RoomId, UserId};
use serde_json::value::RawValue;

pub use account_data::AccountData;
pub use devices::Devices;
pub use filters::{FilterError, Filters};
pub use keys::{
    CrossSigning, CrossSigningError, DeviceKeyCounts, DeviceKeysByUser, DeviceListChanges,
    KeyUpload, Keys, QueriedKeys, QueriedSigningKeys, SignatureFailure, SignatureFailureKind,
};
use memberships::Memberships;
pub use presence::{Presence, PresenceNotice, StoredPresence};
pub use profiles::{Profile, ProfileField, Profiles};
pub use receipts::Receipts;
pub use to_device::{Cursor as ToDeviceCursor, MAX_PER_SYNC as TO_DEVICE_PER_SYNC, ToDevice};
pub use typing::{MAX_TIMEOUT as MAX_TYPING_TIMEOUT, Typing, TypingNotice};

use crate::clock::Clock;
use crate::store::StoreError;
use crate::store::accounts::AccountStore;
#[cfg(test)]
use crate::store::db::on_db;
use crate::store::db::{Conn, Db, on_conn};
use crate::stream::{StreamOp, StreamWriter, Touch};

/// The per-user data service. Cheap to clone; the node holds one.
#[derive(Debug, Clone)]
pub struct UserData {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    filters: Filters,
    profiles: Profiles,
    account_data: AccountData,
    devices: Devices,
    keys: Keys,
    to_device: ToDevice,
    receipts: Receipts,
    typing: Typing,
    presence: Presence,
}

/// What `/sync` reports outside rooms, for one device.
#[derive(Debug, Default)]
pub struct GlobalSync {
    /// Global account data: all of it on an initial sync, else what changed.
    pub account_data: Vec<Raw<AnyGlobalAccountDataEvent>>,
    /// To-device messages waiting for the device ([`TO_DEVICE_PER_SYNC`] at most).
    pub to_device: Vec<Raw<AnyToDeviceEvent>>,
    /// When more wait: the last one delivered (for the next sync's token).
    pub to_device_cursor: Option<ToDeviceCursor>,
    /// Users (the syncing one, or sharing a room with them) whose devices or keys changed.
    pub device_lists_changed: Vec<OwnedUserId>,
    /// Presence of the user and those sharing a room with them: all on an initial sync, else
    /// what changed.
    pub presence: Vec<Raw<ruma::events::presence::PresenceEvent>>,
}

/// What `/sync` reports in a room besides its timeline and state.
#[derive(Debug, Default)]
pub struct RoomExtras {
    /// The user's account data in the room.
    pub account_data: Vec<Raw<AnyRoomAccountDataEvent>>,
    /// `m.receipt` and `m.typing`.
    pub ephemeral: Vec<Raw<AnySyncEphemeralRoomEvent>>,
}

impl UserData {
    /// The service over the node's Matrix database (`db`: SQLite's `rethink.db`, or PostgreSQL
    /// with `store.url`) and its stream writer (which applies the writes on the same database);
    /// `accounts` is the node's one account store (one cache of access tokens: a device deleted
    /// here loses its token at once); `server_name` tells local users; `clock` times presence
    /// and typing.
    pub fn new(
        db: Db,
        accounts: AccountStore,
        stream: StreamWriter,
        server_name: OwnedServerName,
        clock: Clock,
    ) -> Self {
        let memberships = Memberships::new(db.clone());
        let keys = Keys::new(
            db.clone(),
            stream.clone(),
            memberships.clone(),
            accounts.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                filters: Filters::new(db.clone()),
                profiles: Profiles::new(db.clone(), accounts.clone(), server_name.clone()),
                account_data: AccountData::new(db.clone(), stream.clone()),
                devices: Devices::new(accounts.clone(), keys.clone()),
                keys,
                to_device: ToDevice::new(db.clone(), stream.clone(), accounts, server_name),
                receipts: Receipts::new(db.clone(), stream.clone()),
                presence: Presence::new(db, stream.clone(), memberships.clone(), clock.clone()),
                typing: Typing::new(stream, clock),
            }),
        }
    }

    /// Sync filters.
    pub fn filters(&self) -> &Filters {
        &self.inner.filters
    }

    /// Display names and avatars.
    pub fn profiles(&self) -> &Profiles {
        &self.inner.profiles
    }

    /// Global and per-room account data.
    pub fn account_data(&self) -> &AccountData {
        &self.inner.account_data
    }

    /// The devices of an account.
    pub fn devices(&self) -> &Devices {
        &self.inner.devices
    }

    /// End-to-end encryption keys and device-list changes.
    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// To-device messages.
    pub fn to_device(&self) -> &ToDevice {
        &self.inner.to_device
    }

    /// Read receipts.
    pub fn receipts(&self) -> &Receipts {
        &self.inner.receipts
    }

    /// Typing notifications (in memory).
    pub fn presence(&self) -> &Presence {
        &self.inner.presence
    }

    pub fn typing(&self) -> &Typing {
        &self.inner.typing
    }

    /// The profile of `user` (empty when never set).
    pub async fn profile(&self, user: &UserId) -> Result<Profile, StoreError> {
        self.inner.profiles.profile(user).await
    }

    /// The current typing serial: bumped on every change of anyone's typing in any room.
    pub fn typing_serial(&self) -> u64 {
        self.inner.typing.serial()
    }

    /// The event of the user's latest `m.read` receipt in the room (unthreaded or main thread).
    pub async fn read_receipt(
        &self,
        user: &UserId,
        room: &RoomId,
    ) -> Result<Option<OwnedEventId>, StoreError> {
        self.inner.receipts.read_receipt(user, room).await
    }

    /// What `/sync` reports outside rooms for `device` between stream positions `since`
    /// (exclusive; 0 for an initial sync) and `upto` (inclusive). To-device messages the
    /// previous sync delivered (at or below `since`, or up to its `to_device` cursor when it
    /// stopped early) are deleted here.
    pub async fn sync_global(
        &self,
        user: &UserId,
        device: &DeviceId,
        since: i64,
        to_device: Option<ToDeviceCursor>,
        upto: i64,
    ) -> Result<GlobalSync, StoreError> {
        let inner = &self.inner;
        let (to_device, to_device_cursor) = inner
            .to_device
            .take(user, device, since, to_device, upto)
            .await?;
        Ok(GlobalSync {
            account_data: inner.account_data.global_changes(user, since, upto).await?,
            to_device,
            to_device_cursor,
            device_lists_changed: if since == 0 {
                Vec::new()
            } else {
                inner.keys.changed_users(user, since, upto).await?
            },
            presence: inner.presence.changes(user, since, upto).await?,
        })
    }

    /// What `/sync` reports in `room` besides its timeline and state, between stream positions
    /// `since` (exclusive; 0 for an initial sync) and `upto` (inclusive), and typing changes
    /// after typing serial `since_typing`.
    pub async fn sync_room(
        &self,
        user: &UserId,
        room: &RoomId,
        since: i64,
        upto: i64,
        since_typing: u64,
    ) -> Result<RoomExtras, StoreError> {
        let inner = &self.inner;
        let account_data = inner
            .account_data
            .room_changes(user, room, since, upto)
            .await?;
        let mut ephemeral = Vec::new();
        if let Some(receipts) = inner.receipts.changes(user, room, since, upto).await? {
            ephemeral.push(receipts);
        }
        let typing_since = (since != 0).then_some(since_typing);
        if let Some(typing) = inner.typing.event(room, typing_since)? {
            ephemeral.push(typing);
        }
        Ok(RoomExtras {
            account_data,
            ephemeral,
        })
    }
}

/// A write of user data that `/sync` reports: applied by the stream writer inside its
/// transaction (`conn`, SQLite or PostgreSQL), at the write's stream position `pos`.
trait Write: Clone + Send + 'static {
    fn apply(
        self,
        conn: Conn<'_>,
        pos: i64,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
}

/// A [`Write`] as the stream writer's [`StreamOp`].
struct Op<W>(W);

impl<W: Write> StreamOp for Op<W> {
    fn apply<'c>(
        self: Box<Self>,
        conn: Conn<'c>,
        pos: i64,
    ) -> BoxFuture<'c, Result<(), sqlx::Error>> {
        Box::pin(self.0.apply(conn, pos))
    }

    fn try_clone(&self) -> Option<Box<dyn StreamOp>> {
        Some(Box::new(Op(self.0.clone())))
    }
}

/// A value bound to an [`Upsert`] statement.
#[derive(Clone)]
enum Arg {
    Text(String),
    OptText(Option<String>),
    Int(i64),
}

/// One statement (an upsert of the latest entry of its kind), its arguments bound in order and
/// then the stream position.
#[derive(Clone)]
struct Upsert {
    sql: &'static str,
    args: Vec<Arg>,
}

impl Write for Upsert {
    async fn apply(self, mut conn: Conn<'_>, pos: i64) -> Result<(), sqlx::Error> {
        // Expanded once per driver: the arguments are bound to that driver's query.
        on_conn!(&mut conn, |e| {
            let mut query = sqlx::query(self.sql);
            for arg in self.args {
                query = match arg {
                    Arg::Text(text) => query.bind(text),
                    Arg::OptText(text) => query.bind(text),
                    Arg::Int(n) => query.bind(n),
                };
            }
            query.bind(pos).execute(e).await?.rows_affected()
        });
        Ok(())
    }
}

/// Submits `write`, a change of global per-user data, to the stream writer and waits for its
/// position.
async fn commit(
    stream: &StreamWriter,
    write: impl Write,
    wake: Vec<OwnedUserId>,
) -> Result<i64, StoreError> {
    stream.submit(Box::new(Op(write)), wake).await?.wait().await
}

/// Submits `write`, a change of per-room user data of `room` (receipts, room account data),
/// and waits for its position.
async fn commit_in_room(
    stream: &StreamWriter,
    write: impl Write,
    wake: Vec<OwnedUserId>,
    room: &RoomId,
) -> Result<i64, StoreError> {
    let touch = Touch {
        users: wake.into(),
        room_events: None,
        room_extras: Some(room.to_owned()),
    };
    stream
        .submit_touch(Box::new(Op(write)), touch, None)
        .await?
        .wait()
        .await
}

/// An event of the kind that has only a type and content (account data, ephemeral events).
#[derive(serde::Serialize)]
struct TypeAndContent<'a, C: ?Sized> {
    #[serde(rename = "type")]
    kind: &'a str,
    content: &'a C,
}

/// `{"type": kind, "content": content}` as a `Raw` event.
fn content_event<T, C>(kind: &str, content: &C) -> Result<Raw<T>, StoreError>
where
    C: serde::Serialize + ?Sized,
{
    serde_json::value::to_raw_value(&TypeAndContent { kind, content })
        .map(Raw::from_json)
        .map_err(encode_error)
}

/// A `{"type": kind, "content": content}` event from a stored `(type, content JSON)` row.
fn stored_event<T>((kind, content): (String, String)) -> Result<Raw<T>, StoreError> {
    content_event(&kind, &*stored_json(content)?)
}

/// Stored JSON text. It was valid when stored: a failure means a damaged database.
fn stored_json(json: String) -> Result<Box<RawValue>, StoreError> {
    RawValue::from_string(json).map_err(decode_error)
}

/// Stored JSON as a `Raw`. It was valid when stored: a failure means a damaged database.
fn raw<T>(json: String) -> Result<Raw<T>, StoreError> {
    Raw::from_json_string(json).map_err(decode_error)
}

/// Stored JSON as a value. It was valid when stored: a failure means a damaged database.
fn from_json<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, StoreError> {
    serde_json::from_str(json).map_err(decode_error)
}

/// A value as JSON text for the database.
fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(encode_error)
}

fn encode_error(e: serde_json::Error) -> StoreError {
    StoreError::Database(sqlx::Error::Encode(Box::new(e)))
}

fn decode_error(e: serde_json::Error) -> StoreError {
    StoreError::Database(sqlx::Error::Decode(Box::new(e)))
}

/// User IDs read from the database; any that no longer parses is left out.
fn user_ids(users: Vec<String>) -> Vec<OwnedUserId> {
    users
        .into_iter()
        .filter_map(|u| u.try_into().ok())
        .collect()
}

/// Unix milliseconds.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod backend_tests;

#[cfg(test)]
pub(crate) mod test_support {
    //! User data and its stream writer on a fresh database of either backend ([`Place`]), for
    //! the unit tests of this module.

    use super::*;
    use crate::store::tests::{Opened, Place};
    use crate::stream::tests::stream_db;

    pub(crate) struct Fixture {
        _opened: Opened,
        _place: Place,
        /// Where the user data is: `rethink.db`, or a PostgreSQL database.
        pub(crate) db: Db,
        pub(crate) stream: StreamWriter,
        pub(crate) data: UserData,
        /// The time of `data`: it moves only when a test advances it.
        pub(crate) clock: crate::clock::ManualClock,
    }

    impl Fixture {
        /// The last position written.
        pub(crate) fn visible(&self) -> i64 {
            self.stream.visible()
        }

        /// Makes `user` a joined member of `room` (the room engine's table).
        pub(crate) async fn join(&self, room: &str, user: &str) {
            on_db!(&self.db, |e| sqlx::query(
                "INSERT INTO memberships (room_id, user_id, membership, stream) \
                 VALUES ($1, $2, 'join', 0)",
            )
            .bind(room)
            .bind(user)
            .execute(e)
            .await
            .unwrap()
            .rows_affected());
        }
    }

    /// User data in a fresh `rethink.db`.
    pub(crate) async fn fixture() -> Fixture {
        fixture_on(Place::sqlite().unwrap()).await.unwrap()
    }

    /// User data at `place`, written through a stream writer there.
    pub(crate) async fn fixture_on(place: Place) -> anyhow::Result<Fixture> {
        let opened = place.open().await?;
        let db = opened.matrix_db();
        let (stream, _task) = StreamWriter::start(stream_db(&opened)).await?;
        let clock = crate::clock::ManualClock::new();
        let data = UserData::new(
            db.clone(),
            AccountStore::new(db.clone()),
            stream.clone(),
            "example.com".try_into()?,
            clock.clock(),
        );
        Ok(Fixture {
            _opened: opened,
            _place: place,
            db,
            stream,
            data,
            clock,
        })
    }
}
