//! `PUT /rooms/{roomId}/typing/{userId}`: the caller starts or stops typing in a room they are
//! joined to (403 otherwise, and for another user). Kept in memory; the room's joined members
//! are woken.

use axum::extract::State;
use ruma::api::client::typing::create_typing_event::{self, v3::Typing};

use super::error::{MatrixResult, RumaResponse};
use super::extract::Ruma;
use super::userdata_routes::{only_self, require_joined};
use crate::node::Node;

pub(crate) async fn set_typing(
    State(node): State<Node>,
    req: Ruma<create_typing_event::v3::Request>,
) -> MatrixResult<create_typing_event::v3::Response> {
    let body = &req.body;
    only_self(
        &req.caller,
        &body.user_id,
        "you can only set your own typing state",
    )?;
    require_joined(&node, &body.user_id, &body.room_id).await?;
    let members = node.rooms().joined_members(&body.room_id).await?;
    let timeout = match body.state {
        Typing::Yes(info) => Some(info.timeout),
        Typing::No => None,
    };
    let typing = node.userdata().typing();
    typing.set(&body.room_id, &body.user_id, timeout, members);
    Ok(RumaResponse(create_typing_event::v3::Response::new()))
}
