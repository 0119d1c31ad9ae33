//! Membership: `join` (by room ID, or by ID or alias), `invite`, `leave`, `forget`, `kick`,
//! `ban`, `unban`, and the member lists (`members`, `joined_members`). Each change is an
//! `m.room.member` event that the room's auth rules accept or refuse (403 `M_FORBIDDEN`).

use axum::extract::State;
use ruma::api::client::membership::{
    ban_user, forget_room, get_member_events, invite_user, join_room_by_id,
    join_room_by_id_or_alias, joined_members, kick_user, leave_room, unban_user,
};
use ruma::events::StateEventType;
use ruma::events::room::member::MembershipState;
use ruma::{OwnedRoomId, RoomId, RoomOrAliasId, UserId};
use serde_json::{Map, Value};

use super::error::{MatrixError, MatrixResult, RumaResponse};
use super::extract::Ruma;
use super::room::{member_content, member_profile};
use crate::bus::MatrixPermit;
use crate::node::Node;
use crate::rooms::RoomError;
use crate::userdata::Profile;

/// The content of a member event.
fn content(
    membership: MembershipState,
    reason: Option<String>,
    mut extra: Map<String, Value>,
) -> Result<Box<serde_json::value::RawValue>, MatrixError> {
    extra.insert(
        "membership".to_owned(),
        Value::String(membership.as_str().to_owned()),
    );
    if let Some(reason) = reason {
        extra.insert("reason".to_owned(), Value::String(reason));
    }
    serde_json::value::to_raw_value(&extra).map_err(|source| MatrixError::Json {
        what: "member content",
        source,
    })
}

/// Asks the enforcement point about a membership action in a room.
async fn permit(
    node: &Node,
    action: &'static str,
    user: &UserId,
    room_id: &RoomId,
    invitee: Option<&UserId>,
) -> Result<MatrixPermit, MatrixError> {
    super::enforce::permit(node, action, user, Some(room_id), invitee, 0).await
}

/// Joins `user` to a room (with their profile), unless already joined.
pub(crate) async fn join(
    node: &Node,
    room_id: &RoomId,
    user: &UserId,
    reason: Option<String>,
) -> Result<(), MatrixError> {
    if node.rooms().membership(room_id, user).await? == Some(MembershipState::Join) {
        return Ok(());
    }
    let permit = permit(node, "matrix:join", user, room_id, None).await?;
    let profile = member_profile(node, user).await?;
    node.rooms()
        .set_membership(
            &permit,
            room_id,
            user,
            user,
            content(MembershipState::Join, reason, profile)?,
        )
        .await?;
    Ok(())
}

/// Re-sends `user`'s member event in `room_id` with `profile` (after a profile change;
/// `profile::Resends`), unless it carries that profile already. Refused (a client error) when
/// the user is no longer joined there, or the room's rules or policy refuse it.
pub(crate) async fn resend_member_event(
    node: &Node,
    room_id: &RoomId,
    user: &UserId,
    profile: &Profile,
) -> Result<(), MatrixError> {
    let current = node
        .rooms()
        .state_event(room_id, user, &StateEventType::RoomMember, user.as_str())
        .await?;
    let now: Map<String, Value> = serde_json::from_str(current.content().get()).unwrap_or_default();
    let field = |name: &str| now.get(name).and_then(Value::as_str);
    if field("membership") != Some(MembershipState::Join.as_str()) {
        return Err(MatrixError::Forbidden("not joined to the room"));
    }
    if field("displayname") == profile.displayname.as_deref()
        && field("avatar_url") == profile.avatar_url.as_ref().map(|u| u.as_str())
    {
        return Ok(());
    }
    let permit = permit(node, "matrix:state", user, room_id, None).await?;
    node.rooms()
        .set_membership(
            &permit,
            room_id,
            user,
            user,
            content(MembershipState::Join, None, member_content(profile))?,
        )
        .await?;
    Ok(())
}

async fn resolve(node: &Node, target: &RoomOrAliasId) -> Result<OwnedRoomId, MatrixError> {
    match <&RoomId>::try_from(target) {
        Ok(room_id) => Ok(room_id.to_owned()),
        Err(alias) => super::room::resolve_alias(node, alias).await,
    }
}

pub(crate) async fn join_by_id(
    State(node): State<Node>,
    req: Ruma<join_room_by_id::v3::Request>,
) -> MatrixResult<join_room_by_id::v3::Response> {
    join(
        &node,
        &req.body.room_id,
        &req.caller.user_id,
        req.body.reason,
    )
    .await?;
    Ok(RumaResponse(join_room_by_id::v3::Response::new(
        req.body.room_id,
    )))
}

pub(crate) async fn join_by_id_or_alias(
    State(node): State<Node>,
    req: Ruma<join_room_by_id_or_alias::v3::Request>,
) -> MatrixResult<join_room_by_id_or_alias::v3::Response> {
    let room_id = resolve(&node, &req.body.room_id_or_alias).await?;
    join(&node, &room_id, &req.caller.user_id, req.body.reason).await?;
    Ok(RumaResponse(join_room_by_id_or_alias::v3::Response::new(
        room_id,
    )))
}

pub(crate) async fn invite(
    State(node): State<Node>,
    req: Ruma<invite_user::v3::Request>,
) -> MatrixResult<invite_user::v3::Response> {
    let invite_user::v3::InvitationRecipient::UserId(recipient) = req.body.recipient else {
        return Err(MatrixError::Unsupported(
            "third-party invitations are not supported".to_owned(),
        ));
    };
    let target = recipient.user_id;
    if target.server_name() == node.rooms().server_name()
        && !node.accounts().exists(target.localpart()).await?
    {
        return Err(MatrixError::NotFound(format!("unknown user {target}")));
    }
    let current = node.rooms().membership(&req.body.room_id, &target).await?;
    if current == Some(MembershipState::Join) {
        return Err(RoomError::Forbidden(format!("{target} is already in the room")).into());
    }
    let permit = permit(
        &node,
        "matrix:invite",
        &req.caller.user_id,
        &req.body.room_id,
        Some(&target),
    )
    .await?;
    node.rooms()
        .set_membership(
            &permit,
            &req.body.room_id,
            &req.caller.user_id,
            &target,
            content(MembershipState::Invite, recipient.reason, Map::new())?,
        )
        .await?;
    Ok(RumaResponse(invite_user::v3::Response::new()))
}

pub(crate) async fn leave(
    State(node): State<Node>,
    req: Ruma<leave_room::v3::Request>,
) -> MatrixResult<leave_room::v3::Response> {
    let user = &req.caller.user_id;
    match node.rooms().membership(&req.body.room_id, user).await? {
        Some(MembershipState::Join | MembershipState::Invite | MembershipState::Knock) => {
            let permit = permit(&node, "matrix:state", user, &req.body.room_id, None).await?;
            node.rooms()
                .set_membership(
                    &permit,
                    &req.body.room_id,
                    user,
                    user,
                    content(MembershipState::Leave, req.body.reason, Map::new())?,
                )
                .await?;
        }
        Some(_) => {}
        None => {
            return Err(MatrixError::NotFound(format!(
                "{user} is not in room {}",
                req.body.room_id
            )));
        }
    }
    Ok(RumaResponse(leave_room::v3::Response::new()))
}

pub(crate) async fn forget(
    State(node): State<Node>,
    req: Ruma<forget_room::v3::Request>,
) -> MatrixResult<forget_room::v3::Response> {
    let user = &req.caller.user_id;
    match node.rooms().membership(&req.body.room_id, user).await? {
        Some(MembershipState::Leave | MembershipState::Ban) => {
            node.rooms()
                .store()
                .forget(req.body.room_id.as_str(), user.as_str())
                .await?;
            node.rooms().caches().forget(user, &req.body.room_id);
            Ok(RumaResponse(forget_room::v3::Response::new()))
        }
        Some(_) => Err(MatrixError::Unsupported(
            "leave the room before forgetting it".to_owned(),
        )),
        None => Err(MatrixError::NotFound(format!(
            "{user} is not in room {}",
            req.body.room_id
        ))),
    }
}

/// A moderation: kick (leave, from join or invite), ban (from anything), unban (leave, from
/// ban).
struct Moderation {
    to: MembershipState,
    /// The target's memberships it applies to (any, when empty), and the refusal otherwise.
    from: &'static [MembershipState],
    refusal: &'static str,
}

const KICK: Moderation = Moderation {
    to: MembershipState::Leave,
    from: &[MembershipState::Join, MembershipState::Invite],
    refusal: "is not in the room",
};
const BAN: Moderation = Moderation {
    to: MembershipState::Ban,
    from: &[],
    refusal: "",
};
const UNBAN: Moderation = Moderation {
    to: MembershipState::Leave,
    from: &[MembershipState::Ban],
    refusal: "is not banned",
};

/// A member event for another user, sent by the caller.
async fn moderate(
    node: &Node,
    room_id: &RoomId,
    sender: &UserId,
    target: &UserId,
    moderation: &Moderation,
    reason: Option<String>,
) -> Result<(), MatrixError> {
    if !moderation.from.is_empty() {
        let current = node.rooms().membership(room_id, target).await?;
        if !current.is_some_and(|m| moderation.from.contains(&m)) {
            return Err(RoomError::Forbidden(format!("{target} {}", moderation.refusal)).into());
        }
    }
    let permit = permit(node, "matrix:state", sender, room_id, None).await?;
    node.rooms()
        .set_membership(
            &permit,
            room_id,
            sender,
            target,
            content(moderation.to.clone(), reason, Map::new())?,
        )
        .await?;
    Ok(())
}

pub(crate) async fn kick(
    State(node): State<Node>,
    req: Ruma<kick_user::v3::Request>,
) -> MatrixResult<kick_user::v3::Response> {
    let b = req.body;
    moderate(
        &node,
        &b.room_id,
        &req.caller.user_id,
        &b.user_id,
        &KICK,
        b.reason,
    )
    .await?;
    Ok(RumaResponse(kick_user::v3::Response::new()))
}

pub(crate) async fn ban(
    State(node): State<Node>,
    req: Ruma<ban_user::v3::Request>,
) -> MatrixResult<ban_user::v3::Response> {
    let b = req.body;
    moderate(
        &node,
        &b.room_id,
        &req.caller.user_id,
        &b.user_id,
        &BAN,
        b.reason,
    )
    .await?;
    Ok(RumaResponse(ban_user::v3::Response::new()))
}

pub(crate) async fn unban(
    State(node): State<Node>,
    req: Ruma<unban_user::v3::Request>,
) -> MatrixResult<unban_user::v3::Response> {
    let b = req.body;
    moderate(
        &node,
        &b.room_id,
        &req.caller.user_id,
        &b.user_id,
        &UNBAN,
        b.reason,
    )
    .await?;
    Ok(RumaResponse(unban_user::v3::Response::new()))
}

pub(crate) async fn members(
    State(node): State<Node>,
    req: Ruma<get_member_events::v3::Request>,
) -> MatrixResult<get_member_events::v3::Response> {
    let b = req.body;
    let state = node
        .rooms()
        .current_state(&b.room_id, &req.caller.user_id)
        .await?;
    let device = (&*req.caller.user_id, req.caller.device_id.as_str());
    let chunk = state
        .iter()
        .filter(|pdu| pdu.kind().to_string() == StateEventType::RoomMember.to_string())
        .filter(|pdu| {
            let m = crate::rooms::state::membership_of(pdu);
            b.membership
                .as_ref()
                .is_none_or(|want| m.as_ref() == Some(want))
                && b.not_membership
                    .as_ref()
                    .is_none_or(|not| m.as_ref() != Some(not))
        })
        .map(|pdu| pdu.to_client(Some(device), true))
        .collect();
    Ok(RumaResponse(get_member_events::v3::Response::new(chunk)))
}

pub(crate) async fn joined_members(
    State(node): State<Node>,
    req: Ruma<joined_members::v3::Request>,
) -> MatrixResult<joined_members::v3::Response> {
    let room_id = &req.body.room_id;
    if node
        .rooms()
        .membership(room_id, &req.caller.user_id)
        .await?
        != Some(MembershipState::Join)
    {
        return Err(RoomError::Forbidden("you are not in this room".to_owned()).into());
    }
    let state = node
        .rooms()
        .current_state(room_id, &req.caller.user_id)
        .await?;
    #[derive(serde::Deserialize)]
    struct Member {
        membership: MembershipState,
        displayname: Option<String>,
        avatar_url: Option<ruma::OwnedMxcUri>,
    }
    let mut joined = std::collections::BTreeMap::new();
    for pdu in state
        .iter()
        .filter(|p| p.kind().to_string() == "m.room.member")
    {
        let (Some(key), Ok(member)) = (
            pdu.state_key(),
            serde_json::from_str::<Member>(pdu.content().get()),
        ) else {
            continue;
        };
        if member.membership != MembershipState::Join {
            continue;
        }
        let Ok(user) = UserId::parse(key) else {
            continue;
        };
        let mut entry = joined_members::v3::RoomMember::new();
        entry.display_name = member.displayname;
        entry.avatar_url = member.avatar_url;
        joined.insert(user, entry);
    }
    Ok(RumaResponse(joined_members::v3::Response::new(joined)))
}
