//! `PUT`/`GET /user/{userId}/account_data/{type}` and
//! `/user/{userId}/rooms/{roomId}/account_data/{type}`: the caller's own account data (403 for
//! another user, 404 when unset). Content must be a JSON object; `m.push_rules` and
//! `m.fully_read` are set by the server only (405).

use axum::extract::State;
use ruma::api::client::config::{
    get_global_account_data, get_room_account_data, set_global_account_data, set_room_account_data,
};
use ruma::serde::Raw;
use serde_json::value::RawValue;

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

fn not_found() -> MatrixError {
    MatrixError::NotFound("account data not found".into())
}

pub(crate) async fn set_global(
    State(node): State<Node>,
    req: Ruma<set_global_account_data::v3::Request>,
) -> MatrixResult<set_global_account_data::v3::Response> {
    let body = &req.body;
    only_self(
        &req.caller,
        &body.user_id,
        "you can only set your own account data",
    )?;
    let kind = body.event_type.to_string();
    check_settable(&kind, body.data.json())?;
    let data = node.userdata().account_data();
    data.set(&body.user_id, None, &kind, body.data.json())
        .await?;
    Ok(RumaResponse(set_global_account_data::v3::Response::new()))
}

pub(crate) async fn get_global(
    State(node): State<Node>,
    req: Ruma<get_global_account_data::v3::Request>,
) -> MatrixResult<get_global_account_data::v3::Response> {
    let body = &req.body;
    only_self(
        &req.caller,
        &body.user_id,
        "you can only read your own account data",
    )?;
    let data = node.userdata().account_data();
    let kind = body.event_type.to_string();
    let content = data
        .get(&body.user_id, None, &kind)
        .await?
        .ok_or_else(not_found)?;
    Ok(RumaResponse(get_global_account_data::v3::Response::new(
        Raw::from_json(content),
    )))
}

pub(crate) async fn set_room(
    State(node): State<Node>,
    req: Ruma<set_room_account_data::v3::Request>,
) -> MatrixResult<set_room_account_data::v3::Response> {
    let body = &req.body;
    only_self(
        &req.caller,
        &body.user_id,
        "you can only set your own account data",
    )?;
    let kind = body.event_type.to_string();
    check_settable(&kind, body.data.json())?;
    let data = node.userdata().account_data();
    data.set(&body.user_id, Some(&body.room_id), &kind, body.data.json())
        .await?;
    Ok(RumaResponse(set_room_account_data::v3::Response::new()))
}

pub(crate) async fn get_room(
    State(node): State<Node>,
    req: Ruma<get_room_account_data::v3::Request>,
) -> MatrixResult<get_room_account_data::v3::Response> {
    let body = &req.body;
    only_self(
        &req.caller,
        &body.user_id,
        "you can only read your own account data",
    )?;
    let data = node.userdata().account_data();
    let kind = body.event_type.to_string();
    let content = data
        .get(&body.user_id, Some(&body.room_id), &kind)
        .await?
        .ok_or_else(not_found)?;
    Ok(RumaResponse(get_room_account_data::v3::Response::new(
        Raw::from_json(content),
    )))
}
