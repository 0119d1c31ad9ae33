//! The Client-Server side of application services: `POST
//! /_matrix/client/v1/appservice/{appserviceId}/ping`, and the namespace checks and queries the
//! other handlers ask for ([`exclusive_user`], [`exclusive_alias`], [`known_user`]).

use axum::extract::State;
use rethink_connectors::{ClientError, Kind};
use ruma::api::client::appservice::request_ping;
use ruma::{RoomAliasId, UserId};

use super::accounts::Caller;
use super::error::{MatrixError, MatrixResult, RumaResponse};
use super::extract::Ruma;
use crate::appservice::{PingError, Queried};
use crate::node::Node;

pub(crate) async fn ping(
    State(node): State<Node>,
    req: Ruma<request_ping::v1::Request>,
) -> MatrixResult<request_ping::v1::Response> {
    let service = &req.caller;
    if service.id() != req.body.appservice_id {
        return Err(MatrixError::Forbidden(
            "the as_token belongs to another application service",
        ));
    }
    let took = node
        .appservices()
        .ping(service, req.body.transaction_id)
        .await
        .map_err(|e| match e {
            PingError::NoUrl => MatrixError::AsUrlNotSet,
            PingError::Client(ClientError::Timeout(_)) => MatrixError::AsConnectionTimeout,
            PingError::Client(ClientError::Status { status, body }) => {
                MatrixError::AsBadStatus { status, body }
            }
            PingError::Client(_) => MatrixError::AsConnectionFailed,
        })?;
    Ok(RumaResponse(request_ping::v1::Response::new(took)))
}

/// 400 `M_EXCLUSIVE` if `user` is in an application service's exclusive namespace and the
/// caller is not that service.
pub(crate) fn exclusive_user(
    node: &Node,
    user: &str,
    caller: Option<&Caller>,
) -> Result<(), MatrixError> {
    let service = caller.and_then(|c| c.appservice.as_deref());
    match node
        .appservices()
        .exclusive_to_other(Kind::User, user, service)
    {
        Some(_) => Err(MatrixError::Exclusive),
        None => Ok(()),
    }
}

/// 400 `M_EXCLUSIVE` if `alias` is in an application service's exclusive namespace and the
/// caller is not that service.
pub(crate) fn exclusive_alias(
    node: &Node,
    alias: &RoomAliasId,
    caller: &Caller,
) -> Result<(), MatrixError> {
    match node.appservices().exclusive_to_other(
        Kind::Alias,
        alias.as_str(),
        caller.appservice.as_deref(),
    ) {
        Some(_) => Err(MatrixError::Exclusive),
        None => Ok(()),
    }
}

/// Whether `user` exists, after asking the application services whose namespace holds it
/// (`GET /_matrix/app/v1/users/{userId}`) when it does not yet: 503 when one of them could not
/// be asked and none said it exists.
pub(crate) async fn known_user(node: &Node, user: &UserId) -> Result<bool, MatrixError> {
    let profiles = node.userdata().profiles();
    if profiles.exists(user).await? {
        return Ok(true);
    }
    if user.server_name() != node.appservices().server_name() {
        return Ok(false);
    }
    match node.appservices().query_user(user).await {
        Queried::Found => Ok(profiles.exists(user).await?),
        Queried::NotFound => Ok(false),
        Queried::Unanswered => Err(MatrixError::AsUnavailable),
    }
}
