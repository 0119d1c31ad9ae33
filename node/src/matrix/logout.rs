//! `POST /_matrix/client/v3/logout` (the caller's device and its token) and
//! `POST /_matrix/client/v3/logout/all` (every device of the account).

use axum::extract::State;
use ruma::api::client::session::{logout, logout_all};

use super::error::{MatrixResult, RumaResponse};
use super::extract::Ruma;
use crate::node::Node;

pub(crate) async fn logout(
    State(node): State<Node>,
    req: Ruma<logout::v3::Request>,
) -> MatrixResult<logout::v3::Response> {
    node.accounts().logout(&req.caller).await?;
    Ok(RumaResponse(logout::v3::Response::new()))
}

pub(crate) async fn logout_all(
    State(node): State<Node>,
    req: Ruma<logout_all::v3::Request>,
) -> MatrixResult<logout_all::v3::Response> {
    node.accounts().logout_all(&req.caller).await?;
    Ok(RumaResponse(logout_all::v3::Response::new()))
}
