//! `POST /_matrix/client/v3/logout` (the caller's device and its token) and
//! `POST /_matrix/client/v3/logout/all` (every device of the account). A device that logs out is
//! deleted with its end-to-end keys and pending to-device messages, and the users who share a
//! room with it see the device-list change.

use axum::extract::State;
use ruma::api::client::session::{logout, logout_all};

use super::error::{MatrixResult, RumaResponse};
use super::extract::Ruma;
use crate::node::Node;

pub(crate) async fn logout(
    State(node): State<Node>,
    req: Ruma<logout::v3::Request>,
) -> MatrixResult<logout::v3::Response> {
    let caller = &req.caller;
    node.userdata()
        .devices()
        .delete(&caller.user_id, std::slice::from_ref(&caller.device_id))
        .await?;
    node.accounts().logout(caller).await?;
    Ok(RumaResponse(logout::v3::Response::new()))
}

pub(crate) async fn logout_all(
    State(node): State<Node>,
    req: Ruma<logout_all::v3::Request>,
) -> MatrixResult<logout_all::v3::Response> {
    let caller = &req.caller;
    let devices: Vec<_> = node
        .userdata()
        .devices()
        .list(&caller.user_id)
        .await?
        .into_iter()
        .map(|d| d.device_id)
        .collect();
    node.userdata()
        .devices()
        .delete(&caller.user_id, &devices)
        .await?;
    node.accounts().logout_all(caller).await?;
    Ok(RumaResponse(logout_all::v3::Response::new()))
}
