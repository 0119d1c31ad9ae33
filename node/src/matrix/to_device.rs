//! `PUT /sendToDevice/{eventType}/{txnId}`: messages to devices, delivered by their `/sync`.
//! A transaction ID is applied once per sending device.

use axum::extract::State;
use ruma::api::client::to_device::send_event_to_device;

use super::error::{MatrixResult, RumaResponse};
use super::extract::Ruma;
use crate::node::Node;

pub(crate) async fn send_to_device(
    State(node): State<Node>,
    req: Ruma<send_event_to_device::v3::Request>,
) -> MatrixResult<send_event_to_device::v3::Response> {
    let (caller, body) = (&req.caller, &req.body);
    node.rate_limits()
        .to_device_send(caller.user_id.as_str(), caller.appservice.as_deref())?;
    let to_device = node.userdata().to_device();
    to_device
        .send(
            &caller.user_id,
            &caller.device_id,
            &body.txn_id,
            &body.event_type.to_string(),
            &body.messages,
        )
        .await?;
    Ok(RumaResponse(send_event_to_device::v3::Response::new()))
}
