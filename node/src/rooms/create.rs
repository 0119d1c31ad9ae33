//! Creating a room (`createRoom`): the create event, the creator's join, power levels, the
//! preset's join rules, history visibility and guest access, an alias, `initial_state`, name,
//! topic and invitations, in the order the spec gives, each built and auth-checked like any
//! other event, under the new room's lock.

use std::sync::Arc;

use ruma::events::TimelineEventType;
use ruma::events::room::member::MembershipState;
use ruma::{OwnedRoomAliasId, OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UserId};
use serde_json::value::{RawValue, to_raw_value};
use serde_json::{Map, Value, json};
use tokio::sync::Mutex as AsyncMutex;

use super::build::NewEvent;
use super::error::RoomError;
use super::state::RoomState;
use super::txns::TxnWindow;
use super::{Rooms, Sent};
use crate::locks::lock;
use crate::policy::MatrixPermit;

/// The presets of `createRoom`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    PrivateChat,
    TrustedPrivateChat,
    PublicChat,
}

/// A state event to set at creation.
#[derive(Debug, Clone)]
pub struct InitialState {
    pub kind: String,
    pub state_key: String,
    pub content: Box<RawValue>,
}

/// What `createRoom` asks for, already parsed.
#[derive(Debug, Clone)]
pub struct CreateRoom {
    pub version: Option<RoomVersionId>,
    pub preset: Preset,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub alias: Option<OwnedRoomAliasId>,
    pub invite: Vec<OwnedUserId>,
    pub is_direct: bool,
    pub initial_state: Vec<InitialState>,
    pub creation_content: Option<Map<String, Value>>,
    pub power_level_override: Option<Map<String, Value>>,
    /// The creator's `displayname` / `avatar_url` for their member event.
    pub creator_profile: Map<String, Value>,
}

fn raw(value: Value) -> Result<Box<RawValue>, RoomError> {
    to_raw_value(&value).map_err(|source| RoomError::Json {
        what: "serializing event content",
        source,
    })
}

fn state(kind: TimelineEventType, state_key: &str, content: Value) -> Result<NewEvent, RoomError> {
    Ok(NewEvent {
        kind,
        content: raw(content)?,
        state_key: Some(state_key.to_owned()),
        redacts: None,
    })
}

/// Merges `overlay`'s top-level keys into `base`.
fn merged(mut base: Map<String, Value>, overlay: Option<&Map<String, Value>>) -> Value {
    if let Some(overlay) = overlay {
        for (k, v) in overlay {
            base.insert(k.clone(), v.clone());
        }
    }
    Value::Object(base)
}

/// The default power levels of a new room.
fn power_levels(creator: &UserId, spec: &CreateRoom) -> Map<String, Value> {
    let mut users = Map::new();
    users.insert(creator.to_string(), json!(100));
    if spec.preset == Preset::TrustedPrivateChat {
        for invitee in &spec.invite {
            users.insert(invitee.to_string(), json!(100));
        }
    }
    let Value::Object(levels) = json!({
        "users": users,
        "users_default": 0,
        "events": {
            "m.room.name": 50,
            "m.room.power_levels": 100,
            "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50,
            "m.room.avatar": 50,
            "m.room.tombstone": 100,
            "m.room.server_acl": 100,
            "m.room.encryption": 100
        },
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": 0,
        "notifications": { "room": 50 }
    }) else {
        unreachable!("a JSON object literal")
    };
    levels
}

/// The events that create a room, in order.
fn creation_events(creator: &UserId, spec: &CreateRoom) -> Result<Vec<NewEvent>, RoomError> {
    let mut create = spec.creation_content.clone().unwrap_or_default();
    // Room version 11: the creator is the sender; `creator` is not set.
    create.remove("creator");
    create.insert("room_version".to_owned(), json!("11"));
    let mut member = spec.creator_profile.clone();
    member.insert("membership".to_owned(), json!("join"));
    let mut events = vec![
        state(TimelineEventType::RoomCreate, "", Value::Object(create))?,
        state(
            TimelineEventType::RoomMember,
            creator.as_str(),
            Value::Object(member),
        )?,
        state(
            TimelineEventType::RoomPowerLevels,
            "",
            merged(
                power_levels(creator, spec),
                spec.power_level_override.as_ref(),
            ),
        )?,
    ];
    if let Some(alias) = &spec.alias {
        events.push(state(
            TimelineEventType::RoomCanonicalAlias,
            "",
            json!({ "alias": alias }),
        )?);
    }
    let join_rule = match spec.preset {
        Preset::PublicChat => "public",
        Preset::PrivateChat | Preset::TrustedPrivateChat => "invite",
    };
    events.push(state(
        TimelineEventType::RoomJoinRules,
        "",
        json!({ "join_rule": join_rule }),
    )?);
    events.push(state(
        TimelineEventType::RoomHistoryVisibility,
        "",
        json!({ "history_visibility": "shared" }),
    )?);
    if spec.preset != Preset::PublicChat {
        events.push(state(
            TimelineEventType::RoomGuestAccess,
            "",
            json!({ "guest_access": "can_join" }),
        )?);
    }
    for initial in &spec.initial_state {
        events.push(NewEvent {
            kind: TimelineEventType::from(initial.kind.as_str()),
            content: initial.content.clone(),
            state_key: Some(initial.state_key.clone()),
            redacts: None,
        });
    }
    if let Some(name) = &spec.name {
        events.push(state(
            TimelineEventType::RoomName,
            "",
            json!({ "name": name }),
        )?);
    }
    if let Some(topic) = &spec.topic {
        events.push(state(
            TimelineEventType::RoomTopic,
            "",
            json!({ "topic": topic }),
        )?);
    }
    for invitee in &spec.invite {
        let mut content = json!({ "membership": MembershipState::Invite.as_str() });
        if spec.is_direct {
            content["is_direct"] = json!(true);
        }
        events.push(state(
            TimelineEventType::RoomMember,
            invitee.as_str(),
            content,
        )?);
    }
    Ok(events)
}

impl Rooms {
    /// Creates a room for `creator`, as the enforcement point permitted.
    pub async fn create_room(
        &self,
        permit: &MatrixPermit,
        creator: &UserId,
        spec: CreateRoom,
    ) -> Result<OwnedRoomId, RoomError> {
        super::check_permit(permit, &["matrix:createRoom"], creator, None)?;
        self.create(creator, spec).await
    }

    /// Creates a room without a Matrix permit: for the bridge, creating the room of a data
    /// object that a permitted bus message named.
    pub(crate) async fn create(
        &self,
        creator: &UserId,
        spec: CreateRoom,
    ) -> Result<OwnedRoomId, RoomError> {
        let version = spec.version.clone().unwrap_or(RoomVersionId::V11);
        if version != RoomVersionId::V11 {
            return Err(RoomError::UnsupportedRoomVersion(version.to_string()));
        }
        let rules = version
            .rules()
            .ok_or_else(|| RoomError::UnsupportedRoomVersion(version.to_string()))?;
        if let Some(alias) = &spec.alias
            && self.store().alias(alias.as_str()).await?.is_some()
        {
            return Err(RoomError::RoomInUse);
        }
        let events = creation_events(creator, &spec)?;
        let room_id = RoomId::new_v1(self.server_name());
        // A new room: no transaction of it was ever sent.
        let txns = TxnWindow::new(self.txn_retention_ms(), i64::MIN);
        let room = Arc::new(AsyncMutex::new(RoomState::new(
            room_id.clone(),
            version,
            rules,
            txns,
        )));
        let mut guard = room.lock().await;
        lock(&self.inner.rooms).insert(room_id.clone(), Arc::clone(&room));
        let mut submitted = Vec::with_capacity(events.len());
        for event in events {
            match self.append(&mut guard, creator, event, None).await {
                Ok(s) => submitted.push(s),
                Err(e) => {
                    drop(guard);
                    // What was submitted commits; the room stays as far as it got.
                    for s in submitted {
                        let _ = self.committed(&room_id, s).await;
                    }
                    return Err(e);
                }
            }
        }
        drop(guard);
        let mut last: Option<Sent> = None;
        for s in submitted {
            last = Some(self.committed(&room_id, s).await?);
        }
        if let Some(alias) = &spec.alias
            && !self
                .store()
                .put_alias(alias.as_str(), room_id.as_str(), creator.as_str())
                .await?
        {
            return Err(RoomError::RoomInUse);
        }
        tracing::debug!(room = %room_id, stream = last.map(|s| s.stream), "room created");
        Ok(room_id)
    }
}
