//! Ephemeral data and to-device messages for a service whose registration asks for them
//! (`receive_ephemeral`, MSC2409): in a transaction's `ephemeral` (the spec's field:
//! `m.typing` and `m.receipt` of rooms that concern the service, `m.presence` of its users and
//! of the users joined to a room that concerns it, as Synapse's `is_interested_in_presence`) and
//! `de.sorunome.msc2409.to_device` (MSC4203: messages for its users' devices, each with
//! `to_user_id` and `to_device_id`).
//!
//! Receipts are `m.read` (threaded ones with their `thread_id`) and `m.read.private`, the latter
//! only when its author is one of the service's users (a private receipt is its author's only).
//! Receipts, presence and to-device messages carry the stream position of their change, so they
//! are read for the same stream range as the transaction's room events and persisted with it.
//! Typing is kept in memory only (`userdata::typing`): the queue remembers the typing serial it
//! reported up to, for this run.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

use super::interest::Interest;
use super::queue::QueueError;
use crate::store::appservice::AppserviceStore;
use crate::userdata::Typing;

/// The transaction field of MSC4203's to-device messages.
pub const TO_DEVICE: &str = "de.sorunome.msc2409.to_device";

/// What goes in one transaction besides room events.
#[derive(Debug, Default)]
pub(super) struct Ephemeral {
    pub(super) ephemeral: Vec<Value>,
    pub(super) to_device: Vec<Value>,
}

/// The ephemeral part of a service's queue.
#[derive(Debug)]
pub(super) struct EphemeralSource {
    typing: Typing,
    /// The typing serial reported up to (changes from the queue's start on are reported).
    typing_serial: AtomicU64,
}

impl EphemeralSource {
    pub(super) fn new(typing: Typing) -> Self {
        let serial = typing.serial();
        Self {
            typing,
            typing_serial: AtomicU64::new(serial),
        }
    }

    /// A receiver woken by the next typing change.
    pub(super) fn watch_typing(&self) -> tokio::sync::watch::Receiver<()> {
        self.typing.watch_changes()
    }

    /// What concerns the service in `(after, upto]` of the stream, and the typing changes since
    /// the last look.
    pub(super) async fn collect(
        &self,
        store: &AppserviceStore,
        interest: &mut Interest<'_>,
        after: i64,
        upto: i64,
        now_ms: i64,
    ) -> Result<Ephemeral, QueueError> {
        let mut out = Ephemeral::default();
        let since = self.typing_serial.load(Ordering::Acquire);
        let (serial, rooms) = self.typing.changed_since(since);
        for (room, users) in rooms {
            if interest.room(&room).await? {
                out.ephemeral
                    .push(json!({"type": "m.typing", "room_id": room,
                    "content": {"user_ids": users}}));
            }
        }
        self.typing_serial.fetch_max(serial, Ordering::AcqRel);
        if after < upto {
            self.receipts(store, interest, after, upto, &mut out)
                .await?;
            for p in store.presence_between(after, upto).await? {
                if interest.presence(&p.user_id).await? {
                    let mut content = json!({"presence": p.presence,
                        "last_active_ago": (now_ms - p.last_active_ms).max(0)});
                    if let Some(msg) = p.status_msg {
                        content["status_msg"] = Value::String(msg);
                    }
                    out.ephemeral.push(
                        json!({"type": "m.presence", "sender": p.user_id, "content": content}),
                    );
                }
            }
            for m in store.to_device_between(after, upto).await? {
                if !interest.user(&m.user_id) {
                    continue;
                }
                let mut event: Value = serde_json::from_str(&m.json)?;
                if let Some(map) = event.as_object_mut() {
                    map.insert("to_user_id".into(), Value::String(m.user_id));
                    map.insert("to_device_id".into(), Value::String(m.device_id));
                }
                out.to_device.push(event);
            }
        }
        Ok(out)
    }

    /// One `m.receipt` event per room that concerns the service, with its receipts changed in
    /// the range: `m.read` of anyone, `m.read.private` of the service's own users only.
    async fn receipts(
        &self,
        store: &AppserviceStore,
        interest: &mut Interest<'_>,
        after: i64,
        upto: i64,
        out: &mut Ephemeral,
    ) -> Result<(), QueueError> {
        let mut by_room: BTreeMap<String, serde_json::Map<String, Value>> = BTreeMap::new();
        for r in store.receipts_between(after, upto).await? {
            let Ok(room) = ruma::RoomId::parse(&r.room_id) else {
                continue;
            };
            let private = r.kind != "m.read";
            if private && (r.kind != "m.read.private" || !interest.user(&r.user_id)) {
                continue;
            }
            if !interest.room(&room).await? {
                continue;
            }
            let mut receipt = json!({"ts": r.ts});
            if !r.thread.is_empty() {
                receipt["thread_id"] = Value::String(r.thread);
            }
            let content = by_room.entry(r.room_id).or_default();
            let for_event = content.entry(r.event_id).or_insert_with(|| json!({}));
            for_event[r.kind.as_str()][r.user_id.as_str()] = receipt;
        }
        for (room, content) in by_room {
            out.ephemeral
                .push(json!({"type": "m.receipt", "room_id": room, "content": content}));
        }
        Ok(())
    }
}
