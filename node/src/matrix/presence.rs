//! `GET`/`PUT /presence/{userId}/status`: a user's presence, readable by any user (404 for a
//! user who never set one), set by its owner only (403 otherwise). `currently_active` and
//! `last_active_ago` follow the user's activity (`crate::userdata::Presence`, which also times
//! presence out). `/sync` reports changes.

use std::time::Duration;

use axum::extract::State;
use ruma::api::client::presence::{get_presence, set_presence};
use ruma::presence::PresenceState;

use super::error::{MatrixError, MatrixResult, RumaResponse};
use super::extract::Ruma;
use super::userdata_routes::only_self;
use crate::node::Node;

pub(crate) async fn get_presence(
    State(node): State<Node>,
    req: Ruma<get_presence::v3::Request>,
) -> MatrixResult<get_presence::v3::Response> {
    let user = &req.body.user_id;
    let stored = node
        .userdata()
        .presence()
        .get(user)
        .await?
        .ok_or_else(|| MatrixError::NotFound(format!("no presence for {user}")))?;
    let presence = PresenceState::from(stored.presence.as_str());
    let mut resp = get_presence::v3::Response::new(presence.clone());
    resp.status_msg = stored.status_msg.clone();
    resp.currently_active = Some(stored.currently_active);
    resp.last_active_ago = Some(Duration::from_millis(
        stored.last_active_ago(node.clock().unix_ms()),
    ));
    Ok(RumaResponse(resp))
}

pub(crate) async fn set_presence(
    State(node): State<Node>,
    req: Ruma<set_presence::v3::Request>,
) -> MatrixResult<set_presence::v3::Response> {
    let b = req.body;
    only_self(
        &req.caller,
        &b.user_id,
        "you can only set your own presence",
    )?;
    node.userdata()
        .presence()
        .set(&b.user_id, &b.presence, b.status_msg.as_deref())
        .await?;
    Ok(RumaResponse(set_presence::v3::Response::new()))
}
