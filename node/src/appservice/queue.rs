//! A service's transaction queue ([`TxnQueue`] of `rethink_connectors::pusher`): the events
//! committed since the service's stream position that concern it ([`super::interest`]) become
//! its next transaction, stored with the new position in one commit (`store::appservice`).
//! The pusher is woken by the stream writer's commits ([`StreamWriter::next_commit`]).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use rethink_connectors::AppService;
use rethink_connectors::pusher::{QueuedTxn, TxnQueue};
use serde_json::value::RawValue;

use super::interest::Interest;
use crate::rooms::{RoomError, Rooms};
use crate::store::StoreError;
use crate::store::appservice::AppserviceStore;
use crate::stream::StreamWriter;

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

/// Not yet read from the store.
const UNKNOWN: i64 = -1;

pub(super) struct NodeQueue {
    service: Arc<AppService>,
    store: AppserviceStore,
    rooms: Rooms,
    stream: StreamWriter,
    server_name: String,
    max_events: usize,
    /// The stream position transactions were made up to (cached after the first read).
    position: AtomicI64,
}

impl NodeQueue {
    pub(super) fn new(
        service: Arc<AppService>,
        store: AppserviceStore,
        rooms: Rooms,
        stream: StreamWriter,
        server_name: String,
        max_events: usize,
    ) -> Self {
        Self {
            service,
            store,
            rooms,
            stream,
            server_name,
            max_events,
            position: AtomicI64::new(UNKNOWN),
        }
    }

    async fn position(&self) -> Result<i64, QueueError> {
        let known = self.position.load(Ordering::Acquire);
        if known != UNKNOWN {
            return Ok(known);
        }
        let pos = self
            .store
            .position(self.service.id(), self.stream.visible())
            .await?;
        self.position.store(pos, Ordering::Release);
        Ok(pos)
    }
}

impl TxnQueue for NodeQueue {
    type Error = QueueError;

    async fn oldest(&self) -> Result<Option<QueuedTxn>, QueueError> {
        Ok(self
            .store
            .oldest(self.service.id())
            .await?
            .map(|t| QueuedTxn {
                txn_id: t.txn_id,
                body: t.body,
                items: usize::try_from(t.items).unwrap_or(0),
            }))
    }

    async fn delivered(&self, txn_id: i64) -> Result<(), QueueError> {
        Ok(self.store.delivered(self.service.id(), txn_id).await?)
    }

    async fn fill(&self) -> Result<bool, QueueError> {
        let after = self.position().await?;
        let visible = self.stream.visible();
        if after >= visible {
            return Ok(false);
        }
        let limit = u32::try_from(self.max_events).unwrap_or(u32::MAX);
        let events = self
            .rooms
            .store()
            .events_between(after, visible, limit)
            .await?;
        let full = events.len() >= self.max_events;
        // A full batch ends at its last event; the rest waits for the next transaction.
        let upto = match events.last() {
            Some(last) if full => last.stream,
            _ => visible,
        };
        let mut interest = Interest::new(&self.service, &self.rooms, &self.server_name);
        let mut chosen: Vec<Box<RawValue>> = Vec::new();
        for pdu in &events {
            if interest.concerns(pdu).await? {
                chosen.push(pdu.to_client::<()>(None, true).into_json());
            }
        }
        let txn = if chosen.is_empty() {
            None
        } else {
            Some(serde_json::to_string(
                &serde_json::json!({ "events": chosen }),
            )?)
        };
        let items = i64::try_from(chosen.len()).unwrap_or(i64::MAX);
        self.store
            .advance(self.service.id(), upto, txn.as_deref().map(|b| (b, items)))
            .await?;
        self.position.store(upto, Ordering::Release);
        Ok(full || txn.is_some())
    }

    fn changed(&self) -> impl Future<Output = ()> + Send {
        self.stream.next_commit()
    }
}
