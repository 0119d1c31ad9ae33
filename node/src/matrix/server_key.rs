//! `GET /_matrix/key/v2/server`: the server's signing key in the Matrix server-key format
//! (Server-Server API, "Publishing Keys"), signed by the key itself in canonical JSON. Anyone can
//! verify the node's room events with it (their signatures under `ed25519:<version>`), and the
//! stub catalogue and node-to-node authentication use the same publication.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::response::Response;

use super::error::{MatrixError, json_answer};
use crate::node::Node;

/// How long a fetched key may be cached by its reader (`valid_until_ts` = now + this).
const VALIDITY: Duration = Duration::from_secs(24 * 60 * 60);

pub(crate) async fn server_keys(State(node): State<Node>) -> Result<Response, MatrixError> {
    let until = SystemTime::now()
        .checked_add(VALIDITY)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let published = node.rooms().server_key().published(until)?;
    Ok(json_answer(serde_json::to_vec(&published)))
}
