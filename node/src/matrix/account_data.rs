//! `PUT`/`GET /user/{userId}/account_data/{type}` and
//! `/user/{userId}/rooms/{roomId}/account_data/{type}`: the caller's own account data (403 for
//! another user, 404 when unset). Content must be a JSON object; `m.push_rules` and
//! `m.fully_read` are set by the server only (405).

use axum::extract::State;
use ruma::api::client::config::{
    get_global_account_data, get_room_account_data, set_global_account_data, set_room_account_data,
};
use ruma::serde::Raw;
use ruma::{RoomId, UserId};
use serde_json::value::RawValue;

use super::accounts::Caller;
use super::error::{MatrixError, MatrixResult, RumaResponse};
use super::extract::Ruma;
use super::userdata_routes::only_self;
use crate::node::Node;

/// Types a client cannot set: the server manages them through other endpoints.
const SERVER_MANAGED: [&str; 2] = ["m.push_rules", "m.fully_read"];

fn check_settable(kind: &str, content: &RawValue) -> Result<(), MatrixError> {
    if SERVER_MANAGED.contains(&kind) {
        return Err(MatrixError::ServerManaged(kind.to_owned()));
    }
    if !content.get().trim_start().starts_with('{') {
        return Err(MatrixError::BadJson(
            "account data must be a JSON object".into(),
        ));
    }
    Ok(())
}

/// `caller` sets `kind` of `user`'s account data, globally (`room` `None`) or in `room`.
async fn set(
    node: &Node,
    caller: &Caller,
    user: &UserId,
    room: Option<&RoomId>,
    kind: &str,
    content: &RawValue,
) -> Result<(), MatrixError> {
    only_self(caller, user, "you can only set your own account data")?;
    check_settable(kind, content)?;
    let data = node.userdata().account_data();
    data.set(user, room, kind, content).await?;
    Ok(())
}

/// `kind` of `user`'s account data, globally (`room` `None`) or in `room`, as `caller` asks it.
async fn get<T>(
    node: &Node,
    caller: &Caller,
    user: &UserId,
    room: Option<&RoomId>,
    kind: &str,
) -> Result<Raw<T>, MatrixError> {
    only_self(caller, user, "you can only read your own account data")?;
    let data = node.userdata().account_data();
    let content = data.get(user, room, kind).await?;
    let content = content.ok_or_else(|| MatrixError::NotFound("account data not found".into()))?;
    Ok(Raw::from_json(content))
}

pub(crate) async fn set_global(
    State(node): State<Node>,
    req: Ruma<set_global_account_data::v3::Request>,
) -> MatrixResult<set_global_account_data::v3::Response> {
    let body = &req.body;
    let kind = body.event_type.to_string();
    set(
        &node,
        &req.caller,
        &body.user_id,
        None,
        &kind,
        body.data.json(),
    )
    .await?;
    Ok(RumaResponse(set_global_account_data::v3::Response::new()))
}

pub(crate) async fn get_global(
    State(node): State<Node>,
    req: Ruma<get_global_account_data::v3::Request>,
) -> MatrixResult<get_global_account_data::v3::Response> {
    let body = &req.body;
    let kind = body.event_type.to_string();
    let content = get(&node, &req.caller, &body.user_id, None, &kind).await?;
    Ok(RumaResponse(get_global_account_data::v3::Response::new(
        content,
    )))
}

pub(crate) async fn set_room(
    State(node): State<Node>,
    req: Ruma<set_room_account_data::v3::Request>,
) -> MatrixResult<set_room_account_data::v3::Response> {
    let body = &req.body;
    let (kind, room) = (body.event_type.to_string(), Some(&*body.room_id));
    set(
        &node,
        &req.caller,
        &body.user_id,
        room,
        &kind,
        body.data.json(),
    )
    .await?;
    Ok(RumaResponse(set_room_account_data::v3::Response::new()))
}

pub(crate) async fn get_room(
    State(node): State<Node>,
    req: Ruma<get_room_account_data::v3::Request>,
) -> MatrixResult<get_room_account_data::v3::Response> {
    let body = &req.body;
    let (kind, room) = (body.event_type.to_string(), Some(&*body.room_id));
    let content = get(&node, &req.caller, &body.user_id, room, &kind).await?;
    Ok(RumaResponse(get_room_account_data::v3::Response::new(
        content,
    )))
}
