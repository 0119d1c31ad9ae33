//! `POST /_matrix/client/v3/register` (user-interactive authentication with `m.login.dummy`)
//! and `GET /_matrix/client/v3/register/available`; application services register the users of
//! their namespace with `m.login.application_service`, and nobody else may register a user in an
//! exclusive namespace (`M_EXCLUSIVE`).

use axum::extract::State;
use ruma::api::client::account::register::{LoginType, RegistrationKind};
use ruma::api::client::account::{get_username_availability, register};

use super::accounts::{DeviceRequest, Registered, Registration};
use super::error::{MatrixError, MatrixResult, RumaResponse};
use super::extract::Ruma;
use crate::node::Node;

pub(crate) async fn register(
    State(node): State<Node>,
    req: Ruma<register::v3::Request>,
) -> MatrixResult<register::v3::Response> {
    node.rate_limits()
        .registration(req.caller.service.as_deref())?;
    let r = req.body;
    if r.login_type == Some(LoginType::ApplicationService) {
        let service = req.caller.required()?;
        let username = r.username.ok_or(MatrixError::MissingParam("username"))?;
        let user = format!(
            "@{}:{}",
            username.to_ascii_lowercase(),
            node.appservices().server_name()
        );
        if !service.owns_user(&user, node.appservices().server_name().as_str()) {
            return Err(MatrixError::Exclusive);
        }
        let registered = node
            .accounts()
            .register_appservice(
                &username,
                DeviceRequest {
                    device_id: r.device_id,
                    display_name: r.initial_device_display_name,
                },
                r.inhibit_login,
            )
            .await?;
        return Ok(RumaResponse(response(registered)));
    }
    if let Some(username) = &r.username {
        let user = format!(
            "@{}:{}",
            username.to_ascii_lowercase(),
            node.appservices().server_name()
        );
        super::appservice::exclusive_user(&node, &user, None)?;
    }
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
    Ok(RumaResponse(response(registered)))
}

fn response(registered: Registered) -> register::v3::Response {
    let mut resp = register::v3::Response::new(registered.user_id);
    if let Some(session) = registered.session {
        resp.access_token = Some(session.access_token);
        resp.device_id = Some(session.device_id);
    }
    resp
}

pub(crate) async fn available(
    State(node): State<Node>,
    req: Ruma<get_username_availability::v3::Request>,
) -> MatrixResult<get_username_availability::v3::Response> {
    let user = format!(
        "@{}:{}",
        req.body.username.to_ascii_lowercase(),
        node.appservices().server_name()
    );
    super::appservice::exclusive_user(&node, &user, None)?;
    node.accounts().check_username(&req.body.username).await?;
    Ok(RumaResponse(get_username_availability::v3::Response::new(
        true,
    )))
}
