//! The power levels of a room (`m.room.power_levels`) as the node needs them outside the auth
//! rules (redactions of others' events). Room version 11: without a power-levels event the
//! creator has 100 and everyone else 0.

use std::collections::BTreeMap;

use ruma::events::StateEventType;
use ruma::{OwnedUserId, UserId};
use serde::Deserialize;

use super::state::RoomState;

#[derive(Deserialize)]
struct Content {
    #[serde(default)]
    users: BTreeMap<OwnedUserId, i64>,
    #[serde(default)]
    users_default: i64,
    #[serde(default = "fifty")]
    redact: i64,
}

fn fifty() -> i64 {
    50
}

/// The levels read from a room's current state.
#[derive(Debug)]
pub(super) struct Levels {
    users: BTreeMap<OwnedUserId, i64>,
    users_default: i64,
    creator: Option<OwnedUserId>,
    pub(super) redact: i64,
}

impl Levels {
    pub(super) fn of(room: &RoomState) -> Levels {
        let creator = room
            .get(&StateEventType::RoomCreate, "")
            .map(|create| create.sender().to_owned());
        let content = room
            .get(&StateEventType::RoomPowerLevels, "")
            .and_then(|pdu| serde_json::from_str::<Content>(pdu.content().get()).ok());
        match content {
            Some(c) => Levels {
                users: c.users,
                users_default: c.users_default,
                creator: None,
                redact: c.redact,
            },
            None => Levels {
                users: BTreeMap::new(),
                users_default: 0,
                creator,
                redact: 50,
            },
        }
    }

    /// The power level of `user`.
    pub(super) fn user(&self, user: &UserId) -> i64 {
        if self.creator.as_deref() == Some(user) {
            return 100;
        }
        self.users.get(user).copied().unwrap_or(self.users_default)
    }
}
