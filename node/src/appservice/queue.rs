//! A service's transaction queue ([`TxnQueue`] of `rethink_connectors::pusher`): the events
//! committed since the service's stream position that concern it ([`super::interest`]) become
//! its next transaction, stored with the new position in one commit (`store::appservice`).
//! The pusher is woken by the stream writer's commits ([`StreamWriter::next_commit`]) and by
//! frames in the service's bus session ([`super::bus_link`]), which become the transaction's
//! [`RETHINK_MESSAGES`].
//!
//! The queue's memory ([`QueueMemory`], one per service id, shared by the pushers a reload
//! makes) mirrors the stored queue once it has read it empty, so the pusher's "oldest
//! transaction?" costs no statement; and a position advanced past events that do not concern
//! the service (no transaction) is written at most once per [`POSITION_EVERY`]: a transaction
//! is stored with its position in one commit, and after a kill the events of the last
//! unrecorded advance are only looked at again (none of them concerned the service). So each
//! transaction costs two commits to `appservice.db`: its own, and its deletion once delivered.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rethink_connectors::AppService;
use rethink_connectors::pusher::{QueuedTxn, TxnQueue};
use serde_json::Value;
use serde_json::value::RawValue;

use super::AppservicesDeps;
use super::bus_link::{BusLink, Taken};
use super::ephemeral::{Ephemeral, EphemeralSource, TO_DEVICE};
use super::interest::Interest;
use crate::clock::Clock;
use crate::rooms::{RoomError, Rooms};
use crate::store::StoreError;
use crate::store::appservice::{AppserviceStore, AsPosition};
use crate::stream::StreamWriter;

/// The field of a transaction body holding the reTHINK messages for the service's addresses
/// (whole messages, as a runtime receives them, without `seq`). Other homeservers' services
/// ignore it.
pub const RETHINK_MESSAGES: &str = "rethink_messages";

/// Why a queue operation failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Room(#[from] RoomError),
    #[error("cannot encode a transaction")]
    Encode(#[from] serde_json::Error),
}

/// How often a position advanced without a transaction is written.
pub(super) const POSITION_EVERY: Duration = Duration::from_secs(1);

/// What a service's queue knows without asking the store: shared by the successive pushers of
/// one service id (a reload starts a new one while the old one may still be filling), each of
/// whose operations holds it to the end.
#[derive(Debug, Default)]
pub(super) struct QueueMemory {
    inner: tokio::sync::Mutex<Memory>,
}

impl QueueMemory {
    /// Forgets what was known: the next operation reads the store. For a pusher that starts
    /// after another node pushed the shared queue (in a cluster, on taking the service's lock
    /// again), which moved the position and the queue past what this node remembers.
    pub(super) async fn forget(&self) {
        *self.inner.lock().await = Memory::default();
    }
}

#[derive(Debug, Default)]
struct Memory {
    /// Where transactions were made up to (read once; may be ahead of the store by advances
    /// without a transaction).
    position: Option<AsPosition>,
    /// When a position without a transaction was last written.
    saved_at: Option<Instant>,
    /// The stored undelivered transactions, in order, once the store was read empty; `None`
    /// while unknown.
    queued: Option<VecDeque<QueuedTxn>>,
}

pub(super) struct NodeQueue {
    service: Arc<AppService>,
    store: AppserviceStore,
    rooms: Rooms,
    stream: StreamWriter,
    server_name: String,
    max_events: usize,
    /// The service's bus session, when it has `rethink_namespaces`.
    link: Option<Arc<BusLink>>,
    /// Typing, receipts, presence and to-device, when it has `receive_ephemeral`.
    ephemeral: Option<EphemeralSource>,
    clock: Clock,
    memory: Arc<QueueMemory>,
}

impl NodeQueue {
    pub(super) fn new(
        service: Arc<AppService>,
        deps: AppservicesDeps,
        server_name: String,
        max_events: usize,
        link: Option<Arc<BusLink>>,
        memory: Arc<QueueMemory>,
    ) -> Self {
        let ephemeral = service
            .registration
            .receive_ephemeral
            .then(|| EphemeralSource::new(deps.typing.clone()));
        Self {
            ephemeral,
            clock: deps.clock,
            service,
            store: deps.store,
            rooms: deps.rooms,
            stream: deps.stream,
            server_name,
            max_events,
            link,
            memory,
        }
    }

    async fn position(&self, memory: &mut Memory) -> Result<AsPosition, QueueError> {
        if let Some(known) = &memory.position {
            return Ok(known.clone());
        }
        let pos = self
            .store
            .position(self.service.id(), self.stream.visible())
            .await?;
        memory.position = Some(pos.clone());
        Ok(pos)
    }

    /// The room events after `pos.stream` that concern the service (advancing `pos`), and
    /// whether the batch was full.
    async fn room_events(
        &self,
        pos: &mut AsPosition,
        interest: &mut Interest<'_>,
    ) -> Result<(Vec<Box<RawValue>>, bool), QueueError> {
        let visible = self.stream.visible();
        if pos.stream >= visible {
            return Ok((Vec::new(), false));
        }
        let limit = u32::try_from(self.max_events).unwrap_or(u32::MAX);
        let events = self
            .rooms
            .store()
            .events_between(pos.stream, visible, limit)
            .await?;
        let full = events.len() >= self.max_events;
        // A full batch ends at its last event; the rest waits for the next transaction.
        pos.stream = match events.last() {
            Some(last) if full => last.stream,
            _ => visible,
        };
        let mut chosen: Vec<Box<RawValue>> = Vec::new();
        for pdu in &events {
            if interest.concerns(pdu).await? {
                chosen.push(pdu.to_client::<()>(None, true).into_json());
            }
        }
        Ok((chosen, full))
    }
}

impl TxnQueue for NodeQueue {
    type Error = QueueError;

    async fn oldest(&self) -> Result<Option<QueuedTxn>, QueueError> {
        let mut memory = self.memory.inner.lock().await;
        if let Some(queued) = &memory.queued {
            return Ok(queued.front().cloned());
        }
        let oldest = self
            .store
            .oldest(self.service.id())
            .await?
            .map(|t| QueuedTxn {
                txn_id: t.txn_id,
                body: t.body,
                items: usize::try_from(t.items).unwrap_or(0),
            });
        if oldest.is_none() {
            memory.queued = Some(VecDeque::new());
        }
        Ok(oldest)
    }

    async fn delivered(&self, txn_id: i64) -> Result<(), QueueError> {
        let mut memory = self.memory.inner.lock().await;
        self.store.delivered(self.service.id(), txn_id).await?;
        if let Some(queued) = &mut memory.queued {
            queued.retain(|t| t.txn_id != txn_id);
        }
        Ok(())
    }

    async fn fill(&self) -> Result<bool, QueueError> {
        let mut memory = self.memory.inner.lock().await;
        let before = self.position(&mut memory).await?;
        let mut pos = before.clone();
        let mut interest = Interest::new(&self.service, &self.rooms, &self.server_name);
        let (events, mut full) = self.room_events(&mut pos, &mut interest).await?;
        let extra = match &self.ephemeral {
            Some(source) => {
                source
                    .collect(
                        &self.store,
                        &mut interest,
                        before.stream,
                        pos.stream,
                        self.clock.unix_ms(),
                    )
                    .await?
            }
            None => Ephemeral::default(),
        };
        // Bus messages for the service's addresses, each once: a frame whose seq a stored
        // transaction already covers (a kill came before its acknowledgement) is only released.
        let taken = match &self.link {
            Some(link) => link.take(self.max_events),
            None => Taken::default(),
        };
        full |= taken.frames.len() >= self.max_events;
        let last_taken = taken.frames.last().map(|(seq, _)| *seq);
        let covered = u64::try_from(pos.bus_seq).unwrap_or(0);
        let messages: Vec<&Value> = taken
            .frames
            .iter()
            .filter(|(seq, _)| *seq > covered)
            .map(|(_, v)| v)
            .collect();
        if let Some(last) = last_taken {
            pos.bus_seq = pos.bus_seq.max(i64::try_from(last).unwrap_or(i64::MAX));
        }
        let items = events.len() + messages.len() + extra.ephemeral.len() + extra.to_device.len();
        let txn = if items == 0 {
            None
        } else {
            match body(&events, &messages, extra) {
                Ok(b) => Some(b),
                Err(e) => {
                    if let Some(link) = &self.link {
                        link.rewind().await;
                    }
                    return Err(e.into());
                }
            }
        };
        let made = txn.is_some();
        let now = Instant::now();
        // A position alone is written at most every POSITION_EVERY (see the module's docs).
        let due = memory
            .saved_at
            .is_none_or(|at| now.duration_since(at) >= POSITION_EVERY);
        if made || (pos != before && due) {
            let count = i64::try_from(items).unwrap_or(i64::MAX);
            let stored = self
                .store
                .advance(self.service.id(), &pos, txn.as_deref().map(|b| (b, count)))
                .await;
            let txn_id = match stored {
                Ok(id) => id,
                Err(e) => {
                    if let Some(link) = &self.link {
                        link.rewind().await;
                    }
                    return Err(e.into());
                }
            };
            if let (Some(txn_id), Some(body), Some(queued)) = (txn_id, txn, &mut memory.queued) {
                queued.push_back(QueuedTxn {
                    txn_id,
                    body,
                    items,
                });
            }
            if !made {
                memory.saved_at = Some(now);
            }
        }
        memory.position = Some(pos);
        if let (Some(link), Some(last)) = (&self.link, last_taken) {
            link.done(last, taken.settles).await;
        }
        Ok(full || made)
    }

    fn changed(&self) -> impl Future<Output = ()> + Send {
        let commit = self.stream.next_commit();
        let link = self.link.clone();
        // Typing is not in the stream: its changes are watched apart.
        let mut typing = self.ephemeral.as_ref().map(EphemeralSource::watch_typing);
        async move {
            let typing = async {
                match typing.as_mut() {
                    Some(rx) => {
                        if rx.changed().await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    }
                    None => std::future::pending().await,
                }
            };
            let bus = async {
                match &link {
                    Some(link) => link.wait().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = commit => {}
                () = bus => {}
                () = typing => {}
            }
        }
    }
}

/// A transaction's body: `events`, and the other fields when they hold anything.
fn body(
    events: &[Box<RawValue>],
    messages: &[&Value],
    extra: Ephemeral,
) -> Result<String, serde_json::Error> {
    let mut body = serde_json::Map::new();
    body.insert("events".into(), serde_json::to_value(events)?);
    if !messages.is_empty() {
        body.insert(RETHINK_MESSAGES.into(), serde_json::to_value(messages)?);
    }
    if !extra.ephemeral.is_empty() {
        body.insert("ephemeral".into(), Value::Array(extra.ephemeral));
    }
    if !extra.to_device.is_empty() {
        body.insert(TO_DEVICE.into(), Value::Array(extra.to_device));
    }
    serde_json::to_string(&body)
}
