//! `GET /_matrix/client/v3/login` (the flows) and `POST /_matrix/client/v3/login`:
//! `m.login.password` with an `m.id.user` identifier, and `org.matrix.login.jwt` when the node
//! trusts a JWT issuer (`[[auth.jwt]]`). Every failed login is 403 `M_FORBIDDEN`.

use axum::extract::State;
use ruma::api::client::session::get_login_types::v3::{
    self as get_login_types, LoginType, PasswordLoginType,
};
use ruma::api::client::session::login::v3::{self as login, LoginInfo};
use ruma::api::client::uiaa::UserIdentifier;

use super::accounts::DeviceRequest;
use super::error::{MatrixError, MatrixResult, RumaResponse};
use super::extract::Ruma;
use crate::auth::Identity;
use crate::node::Node;

/// The login type of a JWT from a trusted issuer (as Synapse and others name it).
pub const JWT_LOGIN_TYPE: &str = "org.matrix.login.jwt";

pub(crate) async fn get_login_types(
    State(node): State<Node>,
    _req: Ruma<get_login_types::Request>,
) -> MatrixResult<get_login_types::Response> {
    let mut flows = vec![LoginType::Password(PasswordLoginType::new())];
    if jwt_enabled(&node) {
        let jwt = LoginType::new(JWT_LOGIN_TYPE, serde_json::Map::new()).map_err(|source| {
            MatrixError::Json {
                what: "login type",
                source,
            }
        })?;
        flows.push(jwt);
    }
    Ok(RumaResponse(get_login_types::Response::new(flows)))
}

pub(crate) async fn login(
    State(node): State<Node>,
    req: Ruma<login::Request>,
) -> MatrixResult<login::Response> {
    let r = req.body;
    let device = DeviceRequest {
        device_id: r.device_id,
        display_name: r.initial_device_display_name,
    };
    let accounts = node.accounts();
    let session = match &r.login_info {
        LoginInfo::Password(p) => {
            let user = password_user(p)?;
            node.rate_limits()
                .login(user, req.caller.service.as_deref())?;
            accounts.login_password(user, &p.password, device).await?
        }
        info if info.login_type() == JWT_LOGIN_TYPE && jwt_enabled(&node) => {
            let data = info.data();
            let token = data
                .get("token")
                .and_then(|t| t.as_str())
                .ok_or(MatrixError::BadJson("`token` must be a string".into()))?;
            let subject = jwt_subject(&node, token)?;
            node.rate_limits()
                .login(&subject, req.caller.service.as_deref())?;
            accounts.login_identity(&subject, device).await?
        }
        info => {
            return Err(MatrixError::Unsupported(format!(
                "login type {} is not supported",
                info.login_type()
            )));
        }
    };
    Ok(RumaResponse(login::Response::new(
        session.user_id,
        session.access_token,
        session.device_id,
    )))
}

/// The user a password login names: an `m.id.user` identifier, or the deprecated `user` field.
#[allow(deprecated)] // `user` is deprecated in the spec, and still sent by some clients.
fn password_user(p: &login::Password) -> Result<&str, MatrixError> {
    match (&p.identifier, &p.user) {
        (Some(UserIdentifier::Matrix(id)), _) => Ok(&id.user),
        (Some(other), _) => Err(MatrixError::Unsupported(format!(
            "identifier type {} is not supported: use m.id.user",
            other.identifier_type()
        ))),
        (None, Some(user)) => Ok(user),
        (None, None) => Err(MatrixError::MissingParam("identifier")),
    }
}

/// Whether JWT login is offered: the node trusts at least one JWT issuer.
fn jwt_enabled(node: &Node) -> bool {
    !node.config().auth.jwt.is_empty()
}

/// The subject (`user://<idp>/<sub>`) a JWT proves, verified by the node's authenticator. Only
/// tokens of a configured JWT issuer count: the authenticator also knows static runtime tokens,
/// which are not Matrix credentials (they carry no `exp`, and their subject need not be one of
/// an issuer's identity providers).
fn jwt_subject(node: &Node, token: &str) -> Result<String, MatrixError> {
    const INVALID: MatrixError = MatrixError::Forbidden("invalid or expired token");
    let identity: Identity = node.auth().authenticate(Some(token)).map_err(|_| INVALID)?;
    let subject = identity.subject.ok_or(INVALID)?;
    let idp = subject
        .strip_prefix("user://")
        .and_then(|rest| rest.split_once('/'))
        .map(|(idp, _)| idp);
    let from_issuer = identity.expires_at.is_some()
        && node
            .config()
            .auth
            .jwt
            .iter()
            .any(|i| Some(i.idp.as_str()) == idp);
    if from_issuer {
        Ok(subject)
    } else {
        Err(INVALID)
    }
}
