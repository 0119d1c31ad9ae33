//! The WebSocket transport: `GET /ws` upgrades, authenticates a bearer token presented in the
//! `Authorization` header or the `access_token` query parameter, and runs the session protocol
//! ([`session`]) with its errors in [`error`], their one mapping to the wire in [`codec`] and
//! control messages in [`control`].

pub mod codec;
pub mod control;
pub mod error;
pub mod session;

pub use error::SessionError;

use std::collections::HashMap;

use axum::extract::{Query, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use crate::node::Node;

/// The largest frame tungstenite accepts at all. Frames above `session.max_frame_bytes` but
/// below this are answered with 413 and the connection stays open; beyond it the connection is
/// closed (the frame is never buffered whole).
pub fn hard_frame_limit(max_frame_bytes: usize) -> usize {
    max_frame_bytes.saturating_mul(4).max(16 * 1024 * 1024)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
}

/// `GET /ws`.
pub async fn handler(
    State(node): State<Node>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let token = bearer(&headers).or(query.get("access_token").map(String::as_str));
    let pre_auth = match token {
        None => None,
        Some(t) => match node.auth().authenticate(Some(t)) {
            Ok(identity) => Some(identity),
            Err(e) => {
                node.metrics().refuse(401);
                return (StatusCode::UNAUTHORIZED, e.to_string()).into_response();
            }
        },
    };
    if node.shutdown_token().is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    let limit = hard_frame_limit(node.config().session.max_frame_bytes);
    let tracker = node.session_tracker().clone();
    upgrade
        // Read in 8 KiB chunks: tungstenite's default 128 KiB per connection would cost
        // 125 MiB for 1,000 idle sessions.
        .read_buffer_size(8 * 1024)
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| {
            let (sink, stream) = socket.split();
            tracker.track_future(session::run(node, sink, stream, pre_auth))
        })
}
