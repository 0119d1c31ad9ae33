//! `POST /keys/upload`, `POST /keys/query`, `POST /keys/claim` and `GET /keys/changes`:
//! end-to-end encryption keys of devices. Uploaded device keys must name the caller's user and
//! device. A query also answers the users' cross-signing keys, which [`cross_signing`] serves.
//!
//! Device lists: `GET /keys/changes` and an incremental `/sync` report the users whose keys
//! changed or who now share an encrypted room with the caller (`changed`), and those who share
//! none any more (`left`; never in `changed`). `/sync` asks the database for the membership part
//! only when the room caches say that the caller's memberships, or the state of a room they are
//! joined to, changed since the token (a look at memory): syncs that bring only messages read
//! nothing more from the database. `GET /keys/changes` answers no further than the position a
//! `/sync` would answer up to, whatever its `to` (`Keys::device_list_changes`), and reads no
//! more than the users sharing a room with the caller, whatever its `from`.

pub(super) mod cross_signing;

use axum::extract::State;
use ruma::api::client::keys::{claim_keys, get_key_changes, get_keys, upload_keys};
use ruma::api::client::sync::sync_events::DeviceLists;

use super::accounts::Caller;
use super::error::{MatrixError, MatrixResult, RumaResponse};
use super::extract::Ruma;
use super::token;
use crate::node::Node;
use crate::userdata::KeyUpload;

pub(crate) async fn upload_keys(
    State(node): State<Node>,
    req: Ruma<upload_keys::v3::Request>,
) -> MatrixResult<upload_keys::v3::Response> {
    let caller = &req.caller;
    let body = req.body;
    if let Some(raw) = &body.device_keys {
        let keys = raw
            .deserialize()
            .map_err(|e| MatrixError::BadJson(format!("device_keys: {e}")))?;
        if keys.user_id != caller.user_id || keys.device_id != caller.device_id {
            return Err(MatrixError::InvalidParam(
                "device_keys must be those of the device making the request".into(),
            ));
        }
    }
    let upload = KeyUpload {
        device_keys: body.device_keys,
        one_time_keys: body.one_time_keys,
        fallback_keys: body.fallback_keys,
    };
    let keys = node.userdata().keys();
    let counts = keys
        .upload(&caller.user_id, &caller.device_id, upload)
        .await?;
    Ok(RumaResponse(upload_keys::v3::Response::new(counts)))
}

/// Most users one `/keys/query` names, and most devices one `/keys/claim` names: each costs
/// queries of its own, so one request's cost stays bounded (clients batch larger sets; beyond
/// it: 400 `M_INVALID_PARAM`).
const MAX_KEY_TARGETS: usize = 1000;

fn at_most(what: &str, count: usize) -> Result<(), MatrixError> {
    if count > MAX_KEY_TARGETS {
        return Err(MatrixError::InvalidParam(format!(
            "the request names {count} {what}; at most {MAX_KEY_TARGETS} are accepted"
        )));
    }
    Ok(())
}

pub(crate) async fn get_keys(
    State(node): State<Node>,
    req: Ruma<get_keys::v3::Request>,
) -> MatrixResult<get_keys::v3::Response> {
    at_most("users", req.body.device_keys.len())?;
    let devices: usize = req.body.device_keys.values().map(Vec::len).sum();
    at_most("devices", devices)?;
    let keys = node.userdata().keys();
    let found = keys
        .query(&req.caller.user_id, &req.body.device_keys)
        .await?;
    let mut resp = get_keys::v3::Response::new();
    resp.device_keys = found.device_keys;
    resp.master_keys = found.signing_keys.master_keys;
    resp.self_signing_keys = found.signing_keys.self_signing_keys;
    resp.user_signing_keys = found.signing_keys.user_signing_keys;
    Ok(RumaResponse(resp))
}

pub(crate) async fn claim_keys(
    State(node): State<Node>,
    req: Ruma<claim_keys::v3::Request>,
) -> MatrixResult<claim_keys::v3::Response> {
    let devices: usize = req.body.one_time_keys.values().map(|d| d.len()).sum();
    at_most("devices", devices)?;
    let claimed = node
        .userdata()
        .keys()
        .claim(&req.body.one_time_keys)
        .await?;
    Ok(RumaResponse(claim_keys::v3::Response::new(claimed)))
}

pub(crate) async fn get_key_changes(
    State(node): State<Node>,
    req: Ruma<get_key_changes::v3::Request>,
) -> MatrixResult<get_key_changes::v3::Response> {
    let from = token::position(&req.body.from)?;
    let to = token::position(&req.body.to)?;
    let changes = node
        .userdata()
        .keys()
        .device_list_changes(&req.caller.user_id, from, to)
        .await?;
    Ok(RumaResponse(get_key_changes::v3::Response::new(
        changes.changed,
        changes.left,
    )))
}

/// Adds to the device lists of an incremental `/sync` from `since` (holding the key changes, if
/// read) the membership changes up to `upto`, when the caller's memberships or the state of
/// their rooms changed since `since` (otherwise there are none, and nothing is read).
pub(super) async fn sync_membership_changes(
    node: &Node,
    caller: &Caller,
    since: i64,
    upto: i64,
    lists: &mut DeviceLists,
) -> Result<(), MatrixError> {
    let user = &caller.user_id;
    if !node.rooms().caches().state_changed_since(user, since) {
        return Ok(());
    }
    let changes = node
        .userdata()
        .keys()
        .shared_room_changes(user, since, upto)
        .await?
        .with_key_changes(std::mem::take(&mut lists.changed));
    lists.changed = changes.changed;
    lists.left = changes.left;
    Ok(())
}
