//! `GET /devices`, `GET`/`PUT`/`DELETE /devices/{deviceId}` and `POST /delete_devices`: the
//! caller's devices. Deleting needs user-interactive authentication with the caller's password
//! (401 with the flow first) and takes the device's access token, keys and to-device messages
//! with it.

use axum::extract::State;
use ruma::api::client::device::{
    delete_device, delete_devices, get_device, get_devices, update_device,
};

use super::error::{MatrixError, MatrixResult, RumaResponse};
use super::extract::Ruma;
use crate::node::Node;

fn unknown_device() -> MatrixError {
    MatrixError::NotFound("you have no device with this ID".into())
}

pub(crate) async fn get_devices(
    State(node): State<Node>,
    req: Ruma<get_devices::v3::Request>,
) -> MatrixResult<get_devices::v3::Response> {
    let devices = node.userdata().devices().list(&req.caller.user_id).await?;
    Ok(RumaResponse(get_devices::v3::Response::new(devices)))
}

pub(crate) async fn get_device(
    State(node): State<Node>,
    req: Ruma<get_device::v3::Request>,
) -> MatrixResult<get_device::v3::Response> {
    let devices = node.userdata().devices();
    let device = devices
        .get(&req.caller.user_id, &req.body.device_id)
        .await?
        .ok_or_else(unknown_device)?;
    Ok(RumaResponse(get_device::v3::Response::new(device)))
}

pub(crate) async fn update_device(
    State(node): State<Node>,
    req: Ruma<update_device::v3::Request>,
) -> MatrixResult<update_device::v3::Response> {
    let devices = node.userdata().devices();
    let name = req.body.display_name.as_deref();
    if !devices
        .rename(&req.caller.user_id, &req.body.device_id, name)
        .await?
    {
        return Err(unknown_device());
    }
    Ok(RumaResponse(update_device::v3::Response::new()))
}

pub(crate) async fn delete_device(
    State(node): State<Node>,
    req: Ruma<delete_device::v3::Request>,
) -> MatrixResult<delete_device::v3::Response> {
    let caller = &req.caller;
    node.accounts()
        .check_password_uia(caller, req.body.auth.as_ref())
        .await?;
    let devices = node.userdata().devices();
    if devices
        .get(&caller.user_id, &req.body.device_id)
        .await?
        .is_none()
    {
        return Err(unknown_device());
    }
    devices
        .delete(&caller.user_id, std::slice::from_ref(&req.body.device_id))
        .await?;
    Ok(RumaResponse(delete_device::v3::Response::new()))
}

pub(crate) async fn delete_devices(
    State(node): State<Node>,
    req: Ruma<delete_devices::v3::Request>,
) -> MatrixResult<delete_devices::v3::Response> {
    let caller = &req.caller;
    node.accounts()
        .check_password_uia(caller, req.body.auth.as_ref())
        .await?;
    let devices = node.userdata().devices();
    devices.delete(&caller.user_id, &req.body.devices).await?;
    Ok(RumaResponse(delete_devices::v3::Response::new()))
}
