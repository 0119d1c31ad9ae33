//! CORS for the Client-Server API, as the Matrix spec requires of every homeserver: web clients
//! (Element Web, hyperty runtimes in browsers) call the API from other origins. Every Matrix
//! answer carries `Access-Control-Allow-Origin: *` and the allowed methods and headers (added
//! where every answer is serialized, `super::error`), and a preflight (`OPTIONS` on any
//! `/_matrix` path, known or not) is answered 200 with an empty JSON object, without
//! authentication (routes in `super`).

use axum::http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    CONTENT_TYPE,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

const ALLOW_ORIGIN: HeaderValue = HeaderValue::from_static("*");
const ALLOW_METHODS: HeaderValue = HeaderValue::from_static("GET, POST, PUT, DELETE, OPTIONS");
const ALLOW_HEADERS: HeaderValue =
    HeaderValue::from_static("X-Requested-With, Content-Type, Authorization");

/// Adds the CORS headers to a Matrix answer.
pub(super) fn add_headers(headers: &mut HeaderMap) {
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, ALLOW_ORIGIN);
    headers.insert(ACCESS_CONTROL_ALLOW_METHODS, ALLOW_METHODS);
    headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, ALLOW_HEADERS);
}

/// The answer to a preflight request.
pub(super) async fn preflight() -> Response {
    let mut response = (
        StatusCode::OK,
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        "{}",
    )
        .into_response();
    add_headers(response.headers_mut());
    response
}
