//! `POST /rooms/{roomId}/receipt/{receiptType}/{eventId}` and `POST /rooms/{roomId}/read_markers`:
//! read receipts (`m.read`, `m.read.private`) and the fully-read marker (`m.fully_read`, kept as
//! room account data), for rooms the caller is joined to (403 otherwise). A public receipt wakes
//! the room's joined members, a private one only the caller.

use axum::extract::State;
use ruma::api::client::read_marker::set_read_marker;
use ruma::api::client::receipt::create_receipt::{self, v3::ReceiptType as RequestedType};
use ruma::events::receipt::{ReceiptThread, ReceiptType};
use ruma::{EventId, RoomId};
use serde_json::value::RawValue;

use super::accounts::Caller;
use super::error::{MatrixError, MatrixResult, RumaResponse};
use super::extract::Ruma;
use super::userdata_routes::require_joined;
use crate::node::Node;

const FULLY_READ: &str = "m.fully_read";

/// Records a receipt, waking whoever can see it.
async fn receipt(
    node: &Node,
    caller: &Caller,
    room: &RoomId,
    kind: ReceiptType,
    thread: &ReceiptThread,
    event: &EventId,
) -> Result<(), MatrixError> {
    let wake = match kind {
        ReceiptType::ReadPrivate => vec![caller.user_id.clone()],
        _ => node.rooms().joined_members(room).await?,
    };
    let receipts = node.userdata().receipts();
    receipts
        .set(room, &caller.user_id, &kind, thread, event, wake)
        .await?;
    Ok(())
}

/// Moves the caller's fully-read marker in `room` to `event`.
async fn fully_read(
    node: &Node,
    caller: &Caller,
    room: &RoomId,
    event: &EventId,
) -> Result<(), MatrixError> {
    let content = serde_json::json!({ "event_id": event }).to_string();
    let content = RawValue::from_string(content).map_err(|source| MatrixError::Json {
        what: "fully read content",
        source,
    })?;
    let data = node.userdata().account_data();
    data.set(&caller.user_id, Some(room), FULLY_READ, &content)
        .await?;
    Ok(())
}

pub(crate) async fn create_receipt(
    State(node): State<Node>,
    req: Ruma<create_receipt::v3::Request>,
) -> MatrixResult<create_receipt::v3::Response> {
    let (caller, body) = (&req.caller, &req.body);
    require_joined(&node, &caller.user_id, &body.room_id).await?;
    let (room, event) = (&body.room_id, &body.event_id);
    match &body.receipt_type {
        RequestedType::FullyRead => fully_read(&node, caller, room, event).await?,
        RequestedType::Read => {
            let kind = ReceiptType::Read;
            receipt(&node, caller, room, kind, &body.thread, event).await?;
        }
        RequestedType::ReadPrivate => {
            let kind = ReceiptType::ReadPrivate;
            receipt(&node, caller, room, kind, &body.thread, event).await?;
        }
        other => {
            return Err(MatrixError::InvalidParam(format!(
                "unknown receipt type {}",
                other.as_str()
            )));
        }
    }
    Ok(RumaResponse(create_receipt::v3::Response::new()))
}

pub(crate) async fn set_read_marker(
    State(node): State<Node>,
    req: Ruma<set_read_marker::v3::Request>,
) -> MatrixResult<set_read_marker::v3::Response> {
    let (caller, body) = (&req.caller, &req.body);
    let room = &body.room_id;
    require_joined(&node, &caller.user_id, room).await?;
    if let Some(event) = &body.fully_read {
        fully_read(&node, caller, room, event).await?;
    }
    let unthreaded = ReceiptThread::Unthreaded;
    if let Some(event) = &body.read_receipt {
        receipt(&node, caller, room, ReceiptType::Read, &unthreaded, event).await?;
    }
    if let Some(event) = &body.private_read_receipt {
        receipt(
            &node,
            caller,
            room,
            ReceiptType::ReadPrivate,
            &unthreaded,
            event,
        )
        .await?;
    }
    Ok(RumaResponse(set_read_marker::v3::Response::new()))
}
