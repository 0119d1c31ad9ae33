//! The routes of the per-user endpoints (filters, profile, account data, push rules, devices,
//! keys, to-device, typing, receipts), served by the handlers beside this file over the
//! [`UserData`](crate::userdata::UserData) service, and the checks those handlers share (the
//! caller acts for themself, the caller is joined to the room).

use ruma::api::client::config::{
    get_global_account_data, get_room_account_data, set_global_account_data, set_room_account_data,
};
use ruma::api::client::device::{
    delete_device, delete_devices, get_device, get_devices, update_device,
};
use ruma::api::client::filter::{create_filter, get_filter};
use ruma::api::client::keys::{
    claim_keys, get_key_changes, get_keys, upload_keys, upload_signatures, upload_signing_keys,
};
use ruma::api::client::profile::{
    get_avatar_url, get_display_name, get_profile, set_avatar_url, set_display_name,
};
use ruma::api::client::push::{get_pushrules_all, get_pushrules_global_scope};
use ruma::api::client::read_marker::set_read_marker;
use ruma::api::client::receipt::create_receipt;
use ruma::api::client::to_device::send_event_to_device;
use ruma::api::client::typing::create_typing_event;
use ruma::events::room::member::MembershipState;
use ruma::{RoomId, UserId};

use super::accounts::Caller;
use super::error::MatrixError;
use super::{
    Routes, account_data, devices, filter, keys, profile, pushrules, receipts, to_device, typing,
};
use crate::node::Node;

/// Registers every per-user endpoint.
pub(super) fn add(routes: &mut Routes) {
    routes.add::<create_filter::v3::Request, _, _>(filter::create_filter);
    routes.add::<get_filter::v3::Request, _, _>(filter::get_filter);

    routes.add::<get_profile::v3::Request, _, _>(profile::get_profile);
    routes.add::<ruma::api::client::presence::get_presence::v3::Request, _, _>(
        super::presence::get_presence,
    );
    routes.add::<ruma::api::client::presence::set_presence::v3::Request, _, _>(
        super::presence::set_presence,
    );
    routes.add::<get_display_name::v3::Request, _, _>(profile::get_display_name);
    routes.add::<set_display_name::v3::Request, _, _>(profile::set_display_name);
    routes.add::<get_avatar_url::v3::Request, _, _>(profile::get_avatar_url);
    routes.add::<set_avatar_url::v3::Request, _, _>(profile::set_avatar_url);

    routes.add::<set_global_account_data::v3::Request, _, _>(account_data::set_global);
    routes.add::<get_global_account_data::v3::Request, _, _>(account_data::get_global);
    routes.add::<set_room_account_data::v3::Request, _, _>(account_data::set_room);
    routes.add::<get_room_account_data::v3::Request, _, _>(account_data::get_room);

    routes.add::<get_pushrules_all::v3::Request, _, _>(pushrules::get_pushrules_all);
    routes.add::<get_pushrules_global_scope::v3::Request, _, _>(pushrules::get_pushrules_global);

    routes.add::<get_devices::v3::Request, _, _>(devices::get_devices);
    routes.add::<get_device::v3::Request, _, _>(devices::get_device);
    routes.add::<update_device::v3::Request, _, _>(devices::update_device);
    routes.add::<delete_device::v3::Request, _, _>(devices::delete_device);
    routes.add::<delete_devices::v3::Request, _, _>(devices::delete_devices);

    routes.add::<upload_keys::v3::Request, _, _>(keys::upload_keys);
    routes.add::<get_keys::v3::Request, _, _>(keys::get_keys);
    routes.add::<claim_keys::v3::Request, _, _>(keys::claim_keys);
    routes.add::<get_key_changes::v3::Request, _, _>(keys::get_key_changes);
    routes.add::<upload_signing_keys::v3::Request, _, _>(keys::cross_signing::upload_signing_keys);
    routes.add::<upload_signatures::v3::Request, _, _>(keys::cross_signing::upload_signatures);

    routes.add::<send_event_to_device::v3::Request, _, _>(to_device::send_to_device);
    routes.add::<create_typing_event::v3::Request, _, _>(typing::set_typing);
    routes.add::<create_receipt::v3::Request, _, _>(receipts::create_receipt);
    routes.add::<set_read_marker::v3::Request, _, _>(receipts::set_read_marker);
}

/// 403 `M_FORBIDDEN` with `message` unless `user` is the caller.
pub(super) fn only_self(
    caller: &Caller,
    user: &UserId,
    message: &'static str,
) -> Result<(), MatrixError> {
    if caller.user_id != user {
        return Err(MatrixError::Forbidden(message));
    }
    Ok(())
}

/// 403 `M_FORBIDDEN` unless `user` is joined to `room`.
pub(super) async fn require_joined(
    node: &Node,
    user: &UserId,
    room: &RoomId,
) -> Result<(), MatrixError> {
    if node.rooms().membership(room, user).await? != Some(MembershipState::Join) {
        return Err(MatrixError::Forbidden("you are not joined to this room"));
    }
    Ok(())
}
