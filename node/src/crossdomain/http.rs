//! `GET /_rethink/node/challenge`: a challenge for a node that wants to prove its domain to this
//! one (`{"challenge": "<80 hex>", "expires_ts": <unix ms>, "now_ts": <unix ms>}`, `now_ts` our
//! clock when issued; 503 when too many are outstanding). See `rethink_crossdomain::proof` for what is done with it.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::node::Node;

/// The path of the challenge endpoint.
pub(crate) const CHALLENGE_PATH: &str = "/_rethink/node/challenge";

/// The cross-domain routes.
pub fn routes() -> Router<Node> {
    Router::new().route(CHALLENGE_PATH, get(challenge))
}

async fn challenge(State(node): State<Node>) -> Response {
    let json = [(CONTENT_TYPE, "application/json")];
    match node.cross_domain().issue_challenge() {
        Ok(c) => (json, serde_json::to_string(&c).unwrap_or_default()).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "cross-domain: no node challenge issued");
            let code = StatusCode::from_u16(e.code()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            let body = serde_json::json!({"code": code.as_u16(), "desc": e.public_description()});
            (code, json, body.to_string()).into_response()
        }
    }
}
