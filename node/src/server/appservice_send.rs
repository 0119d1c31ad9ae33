//! `POST /_rethink/app/v1/send`: an application service sends one reTHINK message on the bus
//! from an address its `rethink_namespaces` claim (our extension; the service's way in, as
//! transactions' `rethink_messages` are its way out).
//!
//! Authenticated by the service's `as_token` (`Authorization: Bearer` or `access_token`):
//! 401 `M_MISSING_TOKEN` / `M_UNKNOWN_TOKEN`, 403 `M_FORBIDDEN` for a service without
//! `rethink_namespaces` (Matrix errors: the token is a Matrix one). The message then passes the
//! bus's enforcement point with [`Origin::AppService`] (a `from` outside the service's namespace
//! is refused like a spoofing runtime's, the operator's policies decide) and is routed. The
//! answer is the reTHINK outcome, its HTTP status the reTHINK code: 200 `{"code":200}` when
//! every recipient took it, otherwise the response message a runtime would have received
//! (`{"type":"response","body":{"code":403,"description":"denied by policy ..."}...}`). Answers
//! of the node's own endpoints (when its outbox has room: the request does not wait) and
//! responses of the recipients reach the service in its transactions.

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Response};
use rethink_proto::{Code, Envelope};
use ruma::api::auth_scheme::extract_bearer_or_query_token;

use crate::bus::Origin;
use crate::matrix::MatrixError;
use crate::node::Node;
use crate::ws::codec;

/// The largest message accepted (also bounded by `session.max_frame_bytes`).
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The path of the endpoint.
pub(crate) const PATH: &str = "/_rethink/app/v1/send";

/// The handler.
pub(crate) async fn send(State(node): State<Node>, req: Request) -> Response {
    let token = match extract_bearer_or_query_token(&req) {
        Ok(Some(token)) => token,
        Ok(None) | Err(_) => return MatrixError::MissingToken.into_response(),
    };
    let directory = node.appservices().directory();
    let Some(service) = directory.by_token(&token) else {
        return MatrixError::UnknownToken.into_response();
    };
    let Some(link) = node.appservices().bus_session(service.id()) else {
        return MatrixError::Forbidden("the application service has no rethink_namespaces")
            .into_response();
    };
    let max = node.config().session.max_frame_bytes.min(MAX_BODY_BYTES);
    let bytes: Bytes = match axum::body::to_bytes(req.into_body(), max).await {
        Ok(b) => b,
        Err(e) => {
            return if crate::matrix::body_over_limit(&e) {
                failure(
                    Code::TOO_LARGE,
                    &format!("the message is larger than {max} bytes"),
                )
            } else {
                failure(
                    Code::BAD_REQUEST,
                    &format!("cannot read the request body: {e}"),
                )
            };
        }
    };
    let text = match std::str::from_utf8(&bytes) {
        Ok(t) => t,
        Err(_) => return failure(Code::BAD_REQUEST, "the message is not UTF-8"),
    };
    let env = match Envelope::parse(text) {
        Ok(env) => env,
        Err(e) => return failure(codec::parse_code(&e), &e.to_string()),
    };
    let origin = Origin::AppService(std::sync::Arc::clone(link.session()));
    let env = crate::bus::identity::stamp(&env, &origin).unwrap_or(env);
    let bus = node.bus();
    let refusal = match bus.authorize(&env, &origin) {
        Err(denied) => Some(codec::error_response(
            env.id_json(),
            env.first_to(),
            env.from(),
            denied.code(),
            &denied.to_string(),
        )),
        Ok(permit) => {
            let report = bus.route(permit).await;
            // Into the service's outbox if it fits now: a request never waits for a service
            // that is down (or has no url, and so never drains it).
            for answer in &report.replies {
                if service.client.is_none() {
                    break;
                }
                if let Err(e) = bus.try_answer(link.session(), answer).await {
                    tracing::warn!(service = %service.id(), error = %e,
                        "an answer to an application service is lost");
                }
            }
            codec::failures_response(&env, &report.failures)
        }
    };
    match refusal {
        None => reply(Code::OK, format!("{{\"code\":{}}}", Code::OK.as_u16())),
        Some(response) => {
            let code = response.response_body().map_or(Code::INTERNAL, |b| b.code);
            reply(code, response.json().to_owned())
        }
    }
}

/// A request that is no message: `{"code", "description"}` (there is no envelope to answer).
fn failure(code: Code, description: &str) -> Response {
    let body = serde_json::json!({"code": code.as_u16(), "description": description});
    reply(code, body.to_string())
}

fn reply(code: Code, json: String) -> Response {
    let status = StatusCode::from_u16(code.as_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, Body::from(json)).into_response();
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    response
}
