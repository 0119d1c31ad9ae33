//! `PUT /rooms/{roomId}/typing/{userId}`: the caller starts or stops typing in a room they are
//! joined to (403 otherwise, and for another user). Kept in memory; the room's joined members
//! are woken.

use axum::extract::State;
use ruma::api::client::typing::create_typing_event::{self, v3::Typing};
use ruma::events::room::member::MembershipState;

use super::error::{MatrixError, MatrixResult, RumaResponse};
use super::extract::Ruma;
use super::userdata_routes::only_self;
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
    let rooms = node.rooms();
    if rooms.membership(&body.room_id, &body.user_id).await? != Some(MembershipState::Join) {
        return Err(MatrixError::Forbidden("you are not joined to this room"));
    }
    let members = rooms.joined_members(&body.room_id).await?;
    let timeout = match body.state {
        Typing::Yes(info) => Some(info.timeout),
        Typing::No => None,
    };
    let typing = node.userdata().typing();
    typing.set(&body.room_id, &body.user_id, timeout, members);
    Ok(RumaResponse(create_typing_event::v3::Response::new()))
}
