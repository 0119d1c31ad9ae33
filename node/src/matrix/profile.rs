//! `GET /profile/{userId}`, `GET`/`PUT /profile/{userId}/displayname` and `/avatar_url`: a user's
//! profile, readable by anyone (404 for an unknown user, once the application services whose
//! namespace holds it were asked), changed by its owner only. A change is
//! re-sent as the user's member events in their rooms.

use axum::extract::State;
use ruma::UserId;
use ruma::api::client::profile::{
    get_avatar_url, get_display_name, get_profile, set_avatar_url, set_display_name,
};
use ruma::profile::ProfileFieldValue;

use super::accounts::Caller;
use super::error::{MatrixError, MatrixResult, RumaResponse};
use super::extract::Ruma;
use super::userdata_routes::only_self;
use crate::node::Node;
use crate::userdata::{Profile, ProfileField};

/// The profile of a known user; 404 otherwise.
async fn known_profile(node: &Node, user: &UserId) -> Result<Profile, MatrixError> {
    if !super::appservice::known_user(node, user).await? {
        return Err(MatrixError::NotFound("unknown user".into()));
    }
    Ok(node.userdata().profiles().profile(user).await?)
}

/// `caller` sets `field` of `user`'s profile (403 unless it is their own); their member events
/// are re-sent.
async fn change_profile(
    node: &Node,
    caller: &Caller,
    user: &UserId,
    field: ProfileField<'_>,
) -> Result<(), MatrixError> {
    only_self(caller, user, "you can only change your own profile")?;
    node.userdata().profiles().set(user, field).await?;
    super::membership::resend_member_events(node, user).await
}

pub(crate) async fn get_profile(
    State(node): State<Node>,
    req: Ruma<get_profile::v3::Request>,
) -> MatrixResult<get_profile::v3::Response> {
    let profile = known_profile(&node, &req.body.user_id).await?;
    let fields = profile
        .displayname
        .map(ProfileFieldValue::DisplayName)
        .into_iter()
        .chain(profile.avatar_url.map(ProfileFieldValue::AvatarUrl));
    Ok(RumaResponse(fields.collect()))
}

pub(crate) async fn get_display_name(
    State(node): State<Node>,
    req: Ruma<get_display_name::v3::Request>,
) -> MatrixResult<get_display_name::v3::Response> {
    let profile = known_profile(&node, &req.body.user_id).await?;
    Ok(RumaResponse(get_display_name::v3::Response::new(
        profile.displayname,
    )))
}

pub(crate) async fn get_avatar_url(
    State(node): State<Node>,
    req: Ruma<get_avatar_url::v3::Request>,
) -> MatrixResult<get_avatar_url::v3::Response> {
    let profile = known_profile(&node, &req.body.user_id).await?;
    Ok(RumaResponse(get_avatar_url::v3::Response::new(
        profile.avatar_url,
    )))
}

pub(crate) async fn set_display_name(
    State(node): State<Node>,
    req: Ruma<set_display_name::v3::Request>,
) -> MatrixResult<set_display_name::v3::Response> {
    let field = ProfileField::DisplayName(req.body.displayname.as_deref());
    change_profile(&node, &req.caller, &req.body.user_id, field).await?;
    Ok(RumaResponse(set_display_name::v3::Response::new()))
}

pub(crate) async fn set_avatar_url(
    State(node): State<Node>,
    req: Ruma<set_avatar_url::v3::Request>,
) -> MatrixResult<set_avatar_url::v3::Response> {
    let field = ProfileField::AvatarUrl(req.body.avatar_url.as_deref());
    change_profile(&node, &req.caller, &req.body.user_id, field).await?;
    Ok(RumaResponse(set_avatar_url::v3::Response::new()))
}
