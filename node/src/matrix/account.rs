//! `GET /_matrix/client/v3/account/whoami`: the owner of the access token.

use ruma::api::client::account::whoami;

use super::error::{MatrixResult, RumaResponse};
use super::extract::Ruma;

pub(crate) async fn whoami(req: Ruma<whoami::v3::Request>) -> MatrixResult<whoami::v3::Response> {
    let mut resp = whoami::v3::Response::new(req.caller.user_id, false);
    resp.device_id = Some(req.caller.device_id);
    Ok(RumaResponse(resp))
}
