//! CORS for the Client-Server API, as the Matrix spec requires of every homeserver: web clients
//! (Element Web, hyperty runtimes in browsers) call the API from other origins. Every response
//! under `/_matrix` carries `Access-Control-Allow-Origin: *` and the allowed methods and
//! headers; a preflight (`OPTIONS` on any `/_matrix` path, known or not) is answered 200 with
//! an empty JSON object, before routing and without authentication.

use axum::extract::Request;
use axum::http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    CONTENT_TYPE,
};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

const ALLOW_ORIGIN: HeaderValue = HeaderValue::from_static("*");
const ALLOW_METHODS: HeaderValue = HeaderValue::from_static("GET, POST, PUT, DELETE, OPTIONS");
const ALLOW_HEADERS: HeaderValue =
    HeaderValue::from_static("X-Requested-With, Content-Type, Authorization");

/// The middleware: answers preflights, and adds the CORS headers to every other response.
pub(crate) async fn cors(req: Request, next: Next) -> Response {
    let mut response = if req.method() == Method::OPTIONS {
        (
            StatusCode::OK,
            [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            "{}",
        )
            .into_response()
    } else {
        next.run(req).await
    };
    add_headers(response.headers_mut());
    response
}

fn add_headers(headers: &mut HeaderMap) {
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, ALLOW_ORIGIN);
    headers.insert(ACCESS_CONTROL_ALLOW_METHODS, ALLOW_METHODS);
    headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, ALLOW_HEADERS);
}
