//! Room events that other nodes of the cluster committed: loaded into this node's caches before
//! their positions become visible here ([`Rooms::catch_up`], the stream writer's
//! [`RemoteHook`](crate::stream::RemoteHook)), and the rooms' in-memory images forgotten, so
//! that the next send here reloads the room with them.
//!
//! Two nodes may still build an event on the same predecessor from images loaded at the same
//! time: the database refuses the second (the unique `events_chain` index: no two events of a
//! room name one previous event), and [`Rooms`] reloads the room and builds the event again.

use std::sync::Arc;

use ruma::UserId;
use ruma::events::TimelineEventType;

use super::cache::CommittedEvent;
use super::pdu::Pdu;
use super::{Rooms, state};
use crate::store::StoreError;

/// Events read from the database at a time while catching up.
const PAGE: u32 = 1024;

impl Rooms {
    /// Applies the room events of the positions `(after, upto]` (other nodes committed them) to
    /// the caches, in order, and forgets the in-memory images of their rooms.
    pub async fn catch_up(&self, after: i64, upto: i64) -> Result<(), StoreError> {
        let mut from = after;
        loop {
            // The events table holds room events only, and is never pruned.
            let events = self.inner.store.events_between(from, upto, PAGE).await?;
            let full = events.len() == PAGE as usize;
            for pdu in events {
                from = pdu.stream;
                self.load_remote(pdu).await?;
            }
            if !full {
                return Ok(());
            }
        }
    }

    async fn load_remote(&self, pdu: Pdu) -> Result<(), StoreError> {
        let room_id = pdu.fields.room_id.clone();
        self.evict(&room_id);
        if *pdu.kind() == TimelineEventType::RoomRedaction
            && let Some(target) = &pdu.fields.redacts
            && let Some(redacted) = self.inner.store.event(target.as_str()).await?
        {
            self.inner.caches.redacted(&room_id, redacted);
        }
        let membership = (*pdu.kind() == TimelineEventType::RoomMember)
            .then(|| state::membership_of(&pdu))
            .flatten()
            .zip(pdu.state_key().and_then(|k| UserId::parse(k).ok()))
            .map(|(membership, target)| (target, membership.to_string()));
        let pos = pdu.stream;
        self.inner.caches.committed(
            CommittedEvent {
                pdu: Arc::new(pdu),
                membership,
            },
            pos,
        );
        Ok(())
    }
}
