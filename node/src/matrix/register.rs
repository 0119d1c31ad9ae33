//! `POST /_matrix/client/v3/register` (user-interactive authentication with `m.login.dummy`)
//! and `GET /_matrix/client/v3/register/available`.

use axum::extract::State;
use ruma::api::client::account::register::RegistrationKind;
use ruma::api::client::account::{get_username_availability, register};

use super::accounts::{DeviceRequest, Registration};
use super::error::{MatrixResult, RumaResponse};
use super::extract::Ruma;
use crate::node::Node;

pub(crate) async fn register(
    State(node): State<Node>,
    req: Ruma<register::v3::Request>,
) -> MatrixResult<register::v3::Response> {
    let r = req.body;
    let registered = node
        .accounts()
        .register(Registration {
            username: r.username,
            password: r.password,
            guest: matches!(r.kind, RegistrationKind::Guest),
            device: DeviceRequest {
                device_id: r.device_id,
                display_name: r.initial_device_display_name,
            },
            inhibit_login: r.inhibit_login,
            auth: r.auth,
        })
        .await?;
    let mut resp = register::v3::Response::new(registered.user_id);
    if let Some(session) = registered.session {
        resp.access_token = Some(session.access_token);
        resp.device_id = Some(session.device_id);
    }
    Ok(RumaResponse(resp))
}

pub(crate) async fn available(
    State(node): State<Node>,
    req: Ruma<get_username_availability::v3::Request>,
) -> MatrixResult<get_username_availability::v3::Response> {
    node.accounts().check_username(&req.body.username).await?;
    Ok(RumaResponse(get_username_availability::v3::Response::new(
        true,
    )))
}
