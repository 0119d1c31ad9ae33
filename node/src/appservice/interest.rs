//! Whether a room event concerns a service: its sender is one of the service's users, it is
//! the membership of one of them, its room is in the service's room namespace, one of its
//! room's aliases is in the alias namespace, or one of the room's joined members is the
//! service's. Per room, the answer that does not depend on the event is computed once per
//! batch. A user's presence concerns the service when the user is its own or is joined to a
//! room that concerns it.

use std::collections::HashMap;

use rethink_connectors::{AppService, Kind};
use ruma::RoomId;
use ruma::events::TimelineEventType;

use crate::rooms::{RoomError, Rooms};
use crate::store::pdu::Pdu;

pub(crate) struct Interest<'a> {
    service: &'a AppService,
    rooms: &'a Rooms,
    server_name: &'a str,
    by_room: HashMap<String, bool>,
}

impl<'a> Interest<'a> {
    pub(crate) fn new(service: &'a AppService, rooms: &'a Rooms, server_name: &'a str) -> Self {
        Self {
            service,
            rooms,
            server_name,
            by_room: HashMap::new(),
        }
    }

    pub(crate) fn user(&self, user: &str) -> bool {
        self.service.owns_user(user, self.server_name)
    }

    /// Whether `user`'s presence concerns the service: one of its users, or joined to a room
    /// that concerns it (as Synapse's `is_interested_in_presence`).
    pub(crate) async fn presence(&mut self, user: &str) -> Result<bool, RoomError> {
        if self.user(user) {
            return Ok(true);
        }
        let Ok(user_id) = ruma::UserId::parse(user) else {
            return Ok(false);
        };
        let joined: Vec<ruma::OwnedRoomId> = self
            .rooms
            .caches()
            .user_rooms(&user_id)
            .into_iter()
            .filter(|row| row.membership == "join")
            .filter_map(|row| ruma::OwnedRoomId::try_from(row.room_id).ok())
            .collect();
        for room in joined {
            if self.room(&room).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    pub(crate) async fn concerns(&mut self, pdu: &Pdu) -> Result<bool, RoomError> {
        if self.user(pdu.sender().as_str()) {
            return Ok(true);
        }
        if *pdu.kind() == TimelineEventType::RoomMember
            && pdu.state_key().is_some_and(|k| self.user(k))
        {
            // Membership of one of its users changes the room's answer.
            self.by_room.remove(pdu.fields.room_id.as_str());
            return Ok(true);
        }
        self.room(&pdu.fields.room_id).await
    }

    /// Whether what happens in `room_id` concerns the service (its namespaces, its aliases, one
    /// of its users joined).
    pub(crate) async fn room(&mut self, room_id: &RoomId) -> Result<bool, RoomError> {
        let room = room_id.as_str();
        if let Some(known) = self.by_room.get(room) {
            return Ok(*known);
        }
        let namespaces = &self.service.registration.namespaces;
        let mut yes = namespaces.matches(Kind::Room, room);
        if !yes && !namespaces.aliases.is_empty() {
            yes = self
                .rooms
                .store()
                .room_aliases(room)
                .await?
                .iter()
                .any(|a| namespaces.matches(Kind::Alias, a));
        }
        if !yes {
            yes = self
                .rooms
                .joined_members(room_id)
                .await?
                .iter()
                .any(|m| self.user(m.as_str()));
        }
        self.by_room.insert(room.to_owned(), yes);
        Ok(yes)
    }
}
