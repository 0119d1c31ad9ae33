//! Idempotent sends: how [`Rooms`] answers a repeated client transaction (same sender,
//! device, room, endpoint and transaction ID) with the first event. The room's [`TxnWindow`]
//! answers most lookups from memory; this module asks the store when the window cannot tell
//! ([`Rooms::stored_txn`]), confirms a window hit against the stored event
//! ([`Rooms::earlier_txn`]), loads a room's window ([`Rooms::load_txns`]) and prunes expired
//! transactions. It also owns the [`Txn`] key and the store's conflict signal.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use ruma::events::TimelineEventType;
use ruma::{OwnedEventId, OwnedUserId, RoomId, UserId};

use super::txns::{self, TxnWindow};
use super::{PRUNE_EVERY_MS, RoomError, Rooms, Sent, now_ms};
use crate::store::StoreError;
use crate::store::rooms::PruneTxns;

impl Rooms {
    /// Milliseconds a client transaction is remembered.
    pub(crate) fn txn_retention_ms(&self) -> i64 {
        self.inner.txn_retention_ms
    }

    /// The cached transactions of a stored room: its latest ones within the retention (see
    /// [`txns`]).
    pub(super) async fn load_txns(&self, room_id: &RoomId) -> Result<TxnWindow, RoomError> {
        let now = now_ms();
        let since = now - self.inner.txn_retention_ms;
        let mut rows = self
            .inner
            .store
            .recent_txns(room_id.as_str(), since, txns::MAX_PER_ROOM)
            .await?;
        // All of the retention, or what is later than the oldest row read (rows of that same
        // millisecond may have been left out).
        let complete_from = match rows.last() {
            Some(oldest) if rows.len() >= txns::MAX_PER_ROOM => oldest.received_ms + 1,
            _ => since,
        };
        rows.reverse();
        let mut window = TxnWindow::new(self.inner.txn_retention_ms, complete_from);
        for row in rows {
            let (Ok(sender), Ok(event), Some(scope)) = (
                OwnedUserId::try_from(row.sender),
                OwnedEventId::try_from(row.event_id),
                TxnScope::parse(&row.txn_scope),
            ) else {
                continue;
            };
            let txn = Txn {
                device: row.txn_device,
                scope,
                id: row.txn_id,
            };
            window.insert(&(sender, txn), event, row.received_ms);
        }
        Ok(window)
    }

    /// The event a transaction created within the retention, as the store remembers it.
    pub(super) async fn stored_txn(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        txn: &Txn,
    ) -> Result<Option<Sent>, RoomError> {
        let stored = self
            .inner
            .store
            .txn_event(
                room_id.as_str(),
                sender.as_str(),
                &txn.device,
                txn.scope.as_str(),
                &txn.id,
                now_ms() - self.inner.txn_retention_ms,
            )
            .await?;
        let Some(event_id) = stored else {
            return Ok(None);
        };
        let event_id =
            OwnedEventId::try_from(event_id).map_err(|source| RoomError::Identifier {
                what: "stored transaction event ID",
                source,
            })?;
        let pdu = self
            .inner
            .store
            .event(event_id.as_str())
            .await?
            .ok_or_else(|| RoomError::TxnEventLost(event_id.clone()))?;
        Ok(Some(Sent {
            event_id,
            stream: pdu.stream,
            pdu: Arc::new(pdu),
        }))
    }

    /// Forgets the transactions past their retention, at most every [`PRUNE_EVERY_MS`] (a
    /// stream op, not waited for).
    pub(super) async fn prune_txns(&self) -> Result<(), RoomError> {
        let now = now_ms();
        let last = self.inner.last_prune_ms.load(Ordering::Relaxed);
        if now - last < PRUNE_EVERY_MS
            || self
                .inner
                .last_prune_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return Ok(());
        }
        let op = PruneTxns {
            before_ms: now - self.inner.txn_retention_ms,
        };
        // Its commit concerns no one: not waited for.
        drop(self.inner.stream.submit(Box::new(op), Vec::new()).await?);
        Ok(())
    }

    /// The event an earlier send of this transaction created, as the cache remembers it.
    pub(super) async fn earlier_txn(
        &self,
        event_id: OwnedEventId,
        sender: &UserId,
        txn: &Txn,
    ) -> Result<Option<Sent>, RoomError> {
        // Wait until the first send is committed, then answer with it.
        self.inner.stream.flush().await?;
        let pdu = self
            .inner
            .store
            .event(event_id.as_str())
            .await?
            .ok_or_else(|| RoomError::TxnEventLost(event_id.clone()))?;
        // The cache keeps hashes: confirm that this is the transaction's event.
        let same = pdu.sender() == sender
            && pdu.txn.as_ref() == Some(&(txn.device.clone(), txn.id.clone()))
            && (*pdu.kind() == TimelineEventType::RoomRedaction) == (txn.scope == TxnScope::Redact);
        if !same {
            return Ok(None);
        }
        Ok(Some(Sent {
            event_id,
            stream: pdu.stream,
            pdu: Arc::new(pdu),
        }))
    }
}

/// The endpoint a client transaction came through: transaction IDs are scoped per device, room
/// and endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxnScope {
    Send,
    Redact,
}

impl TxnScope {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            TxnScope::Send => "send",
            TxnScope::Redact => "redact",
        }
    }

    fn parse(scope: &str) -> Option<Self> {
        match scope {
            "send" => Some(TxnScope::Send),
            "redact" => Some(TxnScope::Redact),
            _ => None,
        }
    }
}

/// A client transaction.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Txn {
    pub device: String,
    pub scope: TxnScope,
    pub id: String,
}

/// Whether a failed send is the store's refusal of a second event of a live transaction.
pub(super) fn is_txn_conflict(error: &RoomError) -> bool {
    match error {
        RoomError::Store(StoreError::Database(sqlx::Error::Database(db))) => {
            db.is_unique_violation() && db.message().contains("room_txns")
        }
        _ => false,
    }
}

/// Whether a failed send is the store's refusal of a second event built on the same previous
/// event of the room (another node's event was committed first; see `rooms::remote`).
pub(super) fn is_chain_conflict(error: &RoomError) -> bool {
    match error {
        RoomError::Store(StoreError::Database(sqlx::Error::Database(db))) => {
            db.is_unique_violation()
                && (db.constraint() == Some("events_chain")
                    || db.message().contains("events.prev_event"))
        }
        _ => false,
    }
}
