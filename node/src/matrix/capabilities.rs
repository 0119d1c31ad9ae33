//! `GET /_matrix/client/v3/capabilities`: what this node lets clients do. Only what is
//! implemented is advertised: no password change, no third-party ID changes, no extended profile
//! fields (`m.profile_fields`) yet; display name and avatar changes are left at their default
//! (allowed, as `profile.rs` serves them); room version 11, stable.

use std::collections::BTreeMap;

use ruma::RoomVersionId;
use ruma::api::client::discovery::get_capabilities::v3::{
    self as get_capabilities, Capabilities, ChangePasswordCapability, ProfileFieldsCapability,
    RoomVersionStability, RoomVersionsCapability, ThirdPartyIdChangesCapability,
};

use super::error::{MatrixResult, RumaResponse};
use super::extract::Ruma;

pub(crate) async fn get_capabilities(
    _req: Ruma<get_capabilities::Request>,
) -> MatrixResult<get_capabilities::Response> {
    let mut caps = Capabilities::new();
    caps.change_password = ChangePasswordCapability::new(false);
    caps.room_versions = RoomVersionsCapability::new(
        RoomVersionId::V11,
        BTreeMap::from([(RoomVersionId::V11, RoomVersionStability::Stable)]),
    );
    caps.thirdparty_id_changes = ThirdPartyIdChangesCapability::new(false);
    caps.profile_fields = Some(ProfileFieldsCapability::new(false));
    Ok(RumaResponse(get_capabilities::Response::new(caps)))
}
