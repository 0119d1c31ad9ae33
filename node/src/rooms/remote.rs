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
use super::{Rooms, state};
use crate::store::StoreError;
use crate::stream::RemoteTouch;

impl Rooms {
    /// Applies the room events among `touches` (positions other nodes committed, in order) to
    /// the caches, and forgets the in-memory images of their rooms.
    pub async fn catch_up(&self, touches: Vec<RemoteTouch>) -> Result<(), StoreError> {
        let (Some(first), Some(last)) = (touches.first(), touches.last()) else {
            return Ok(());
        };
        if !touches.iter().any(|t| t.touch.room_events.is_some()) {
            return Ok(());
        }
        // The events table holds room events only: those of the range are the ones touched.
        let events = self
            .inner
            .store
            .events_between(first.pos - 1, last.pos, u32::MAX)
            .await?;
        for pdu in events {
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
        }
        Ok(())
    }
}
