//! Rooms: `POST /createRoom`, `GET /joined_rooms`, and the room directory's aliases
//! (`PUT/GET/DELETE /directory/room/{roomAlias}`, `GET /rooms/{roomId}/aliases`). An alias in an
//! application service's exclusive namespace is the service's (`M_EXCLUSIVE` for others); an
//! unknown one in a namespace is asked of the service before `M_NOT_FOUND`.

use axum::extract::State;
use ruma::api::client::alias::{create_alias, delete_alias, get_alias};
use ruma::api::client::membership::joined_rooms;
use ruma::api::client::room::{aliases, create_room};
use ruma::events::room::member::MembershipState;
use ruma::{OwnedRoomAliasId, OwnedRoomId, OwnedUserId, RoomAliasId, UserId};
use serde_json::{Map, Value};

use super::error::{MatrixError, MatrixResult, RumaResponse};
use super::extract::Ruma;
use crate::appservice::Queried;
use crate::bridge::RESERVED_PREFIX;
use crate::node::Node;
use crate::rooms::RoomError;
use crate::rooms::create::{CreateRoom, InitialState, Preset};
use crate::userdata::Profile;

/// The `displayname` and `avatar_url` of `user`, for their member events.
pub(super) async fn member_profile(
    node: &Node,
    user: &UserId,
) -> Result<Map<String, Value>, MatrixError> {
    Ok(member_content(&node.userdata().profile(user).await?))
}

/// The profile fields of a member event's content.
pub(super) fn member_content(profile: &Profile) -> Map<String, Value> {
    let mut content = Map::new();
    if let Some(name) = &profile.displayname {
        content.insert("displayname".to_owned(), Value::String(name.clone()));
    }
    if let Some(url) = &profile.avatar_url {
        content.insert("avatar_url".to_owned(), Value::String(url.to_string()));
    }
    content
}

/// A JSON object from a ruma `Raw` (of `creation_content`, `power_level_content_override`).
fn object<T>(raw: &ruma::serde::Raw<T>, field: &str) -> Result<Map<String, Value>, MatrixError> {
    serde_json::from_str(raw.json().get())
        .map_err(|e| MatrixError::BadJson(format!("{field}: {e}")))
}

/// Most users one `createRoom` invites, and most `initial_state` events it sets: each is an
/// event of its own, and each membership one re-derives the room's audience, so the cost of one
/// request stays bounded (beyond it: 400 `M_INVALID_PARAM`; invite more afterwards).
const MAX_CREATE_ITEMS: usize = 100;

pub(crate) async fn create_room(
    State(node): State<Node>,
    req: Ruma<create_room::v3::Request>,
) -> MatrixResult<create_room::v3::Response> {
    let body = req.body;
    let creator = req.caller.user_id.clone();
    for (field, count) in [
        ("invite", body.invite.len()),
        ("initial_state", body.initial_state.len()),
    ] {
        if count > MAX_CREATE_ITEMS {
            return Err(MatrixError::InvalidParam(format!(
                "{field} lists {count} entries; at most {MAX_CREATE_ITEMS} are accepted"
            )));
        }
    }
    let preset = match body.preset {
        Some(create_room::v3::RoomPreset::PublicChat) => Preset::PublicChat,
        Some(create_room::v3::RoomPreset::TrustedPrivateChat) => Preset::TrustedPrivateChat,
        Some(create_room::v3::RoomPreset::PrivateChat) => Preset::PrivateChat,
        Some(other) => {
            return Err(MatrixError::InvalidParam(format!(
                "unknown preset {}",
                other.as_str()
            )));
        }
        None => match body.visibility {
            ruma::api::client::room::Visibility::Public => Preset::PublicChat,
            _ => Preset::PrivateChat,
        },
    };
    let alias = match &body.room_alias_name {
        Some(name) => {
            if name.contains(':') || name.is_empty() {
                return Err(MatrixError::InvalidParam(
                    "room_alias_name must be a localpart".to_owned(),
                ));
            }
            if name.starts_with(RESERVED_PREFIX) {
                return Err(MatrixError::Exclusive);
            }
            let alias = RoomAliasId::parse(format!("#{name}:{}", node.rooms().server_name()))
                .map_err(|e| MatrixError::InvalidParam(format!("room_alias_name: {e}")))?;
            super::appservice::exclusive_alias(&node, &alias, &req.caller)?;
            Some(alias)
        }
        None => None,
    };
    let initial_state = body
        .initial_state
        .iter()
        .map(|raw| {
            #[derive(serde::Deserialize)]
            struct Initial {
                #[serde(rename = "type")]
                kind: String,
                #[serde(default)]
                state_key: String,
                content: Box<serde_json::value::RawValue>,
            }
            serde_json::from_str::<Initial>(raw.json().get())
                .map(|i| InitialState {
                    kind: i.kind,
                    state_key: i.state_key,
                    content: i.content,
                })
                .map_err(|e| MatrixError::BadJson(format!("initial_state: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let spec = CreateRoom {
        version: body.room_version,
        preset,
        name: body.name,
        topic: body.topic,
        alias,
        invite: body.invite,
        is_direct: body.is_direct,
        initial_state,
        creation_content: body
            .creation_content
            .as_ref()
            .map(|raw| object(raw, "creation_content"))
            .transpose()?,
        power_level_override: body
            .power_level_content_override
            .as_ref()
            .map(|raw| object(raw, "power_level_content_override"))
            .transpose()?,
        creator_profile: member_profile(&node, &creator).await?,
    };
    let permit =
        super::enforce::permit(&node, "matrix:createRoom", &creator, None, None, 0).await?;
    let room_id = node.rooms().create_room(&permit, &creator, spec).await?;
    Ok(RumaResponse(create_room::v3::Response::new(room_id)))
}

pub(crate) async fn joined_rooms(
    State(node): State<Node>,
    req: Ruma<joined_rooms::v3::Request>,
) -> MatrixResult<joined_rooms::v3::Response> {
    let rooms = node
        .rooms()
        .caches()
        .user_rooms(&req.caller.user_id)
        .into_iter()
        .filter(|row| row.membership == MembershipState::Join.as_str())
        .filter_map(|row| ruma::OwnedRoomId::try_from(row.room_id).ok())
        .collect();
    Ok(RumaResponse(joined_rooms::v3::Response::new(rooms)))
}

/// Only aliases of this server can be managed here.
fn local_alias(node: &Node, alias: &RoomAliasId) -> Result<(), MatrixError> {
    if alias.server_name() != node.rooms().server_name() {
        return Err(MatrixError::InvalidParam(format!(
            "{alias} is not an alias of this server"
        )));
    }
    if alias.alias().starts_with(RESERVED_PREFIX) {
        return Err(MatrixError::Exclusive);
    }
    Ok(())
}

pub(crate) async fn create_alias(
    State(node): State<Node>,
    req: Ruma<create_alias::v3::Request>,
) -> MatrixResult<create_alias::v3::Response> {
    let alias = &req.body.room_alias;
    local_alias(&node, alias)?;
    super::appservice::exclusive_alias(&node, alias, &req.caller)?;
    // The room must exist and the caller be in it.
    let membership = node
        .rooms()
        .membership(&req.body.room_id, &req.caller.user_id)
        .await?;
    if membership != Some(MembershipState::Join) {
        return Err(RoomError::Forbidden("you are not in this room".to_owned()).into());
    }
    if !node
        .rooms()
        .store()
        .put_alias(
            alias.as_str(),
            req.body.room_id.as_str(),
            req.caller.user_id.as_str(),
        )
        .await?
    {
        return Err(RoomError::AliasInUse.into());
    }
    Ok(RumaResponse(create_alias::v3::Response::new()))
}

/// The room `alias` names. An unknown alias of this server in an application service's namespace
/// is first asked of the service, which may create it (the directory and joins by alias both
/// resolve through here); a service that cannot be asked makes it 503, not "not found".
pub(crate) async fn resolve_alias(
    node: &Node,
    alias: &RoomAliasId,
) -> Result<OwnedRoomId, MatrixError> {
    let mut found = node.rooms().store().alias(alias.as_str()).await?;
    if found.is_none() && alias.server_name() == node.rooms().server_name() {
        let owned: OwnedRoomAliasId = alias.to_owned();
        match node.appservices().query_alias(&owned).await {
            Queried::Found => found = node.rooms().store().alias(alias.as_str()).await?,
            Queried::NotFound => {}
            Queried::Unanswered => return Err(MatrixError::AsUnavailable),
        }
    }
    found
        .map(|(room_id, _)| room_id)
        .ok_or_else(|| MatrixError::NotFound(format!("unknown alias {alias}")))
}

pub(crate) async fn get_alias(
    State(node): State<Node>,
    req: Ruma<get_alias::v3::Request>,
) -> MatrixResult<get_alias::v3::Response> {
    let alias = &req.body.room_alias;
    let room_id = resolve_alias(&node, alias).await?;
    Ok(RumaResponse(get_alias::v3::Response::new(
        room_id,
        vec![node.rooms().server_name().clone()],
    )))
}

pub(crate) async fn delete_alias(
    State(node): State<Node>,
    req: Ruma<delete_alias::v3::Request>,
) -> MatrixResult<delete_alias::v3::Response> {
    let alias = &req.body.room_alias;
    let (_, creator) = node
        .rooms()
        .store()
        .alias(alias.as_str())
        .await?
        .ok_or_else(|| MatrixError::NotFound(format!("unknown alias {alias}")))?;
    let caller: &OwnedUserId = &req.caller.user_id;
    if creator != caller.as_str() {
        return Err(MatrixError::Forbidden(
            "only the alias's creator may delete it",
        ));
    }
    node.rooms().store().delete_alias(alias.as_str()).await?;
    Ok(RumaResponse(delete_alias::v3::Response::new()))
}

pub(crate) async fn room_aliases(
    State(node): State<Node>,
    req: Ruma<aliases::v3::Request>,
) -> MatrixResult<aliases::v3::Response> {
    node.rooms()
        .reader_bound(&req.body.room_id, &req.caller.user_id)
        .await?;
    let aliases = node
        .rooms()
        .store()
        .room_aliases(req.body.room_id.as_str())
        .await?
        .into_iter()
        .filter_map(|a| ruma::OwnedRoomAliasId::try_from(a).ok())
        .collect();
    Ok(RumaResponse(aliases::v3::Response::new(aliases)))
}
