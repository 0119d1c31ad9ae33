//! `GET /pushrules/` and `GET /pushrules/global/`: the server's default push rules for the
//! caller (custom rules are not stored yet).

use ruma::api::client::push::{get_pushrules_all, get_pushrules_global_scope};
use ruma::push::Ruleset;

use super::error::{MatrixResult, RumaResponse};
use super::extract::Ruma;

pub(crate) async fn get_pushrules_all(
    req: Ruma<get_pushrules_all::v3::Request>,
) -> MatrixResult<get_pushrules_all::v3::Response> {
    let rules = Ruleset::server_default(&req.caller.user_id);
    Ok(RumaResponse(get_pushrules_all::v3::Response::new(rules)))
}

pub(crate) async fn get_pushrules_global(
    req: Ruma<get_pushrules_global_scope::v3::Request>,
) -> MatrixResult<get_pushrules_global_scope::v3::Response> {
    let rules = Ruleset::server_default(&req.caller.user_id);
    Ok(RumaResponse(get_pushrules_global_scope::v3::Response::new(
        rules,
    )))
}
