//! `GET /profile/{userId}`, `GET`/`PUT /profile/{userId}/displayname` and `/avatar_url`: a user's
//! profile, readable by anyone (404 for an unknown user, once the application services whose
//! namespace holds it were asked), changed by its owner only.
//!
//! A change is re-sent as the user's member events in their joined rooms by a task
//! ([`Resends`]), not in the request: a `PUT` costs one write whatever the number of rooms. One
//! task per user at a time; changes made while it runs are taken by one more pass, so a burst of
//! changes costs at most two passes. A pass writes a member event only in a room whose member
//! event differs from the profile, skips a room that refuses it or fails otherwise (logged),
//! and goes round again after a pause when the database is unavailable (503: an outage, a busy
//! room). The change is durable before the
//! `PUT` is answered (`Profiles::set` counts a version), and a pass marks its version done once
//! every room has the profile: a node that starts re-sends what a stop or a crash interrupted
//! ([`Resends::resume`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use ruma::api::client::profile::{
    get_avatar_url, get_display_name, get_profile, set_avatar_url, set_display_name,
};
use ruma::events::room::member::MembershipState;
use ruma::profile::ProfileFieldValue;
use ruma::{OwnedRoomId, OwnedUserId, UserId};

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
    node.profile_resends().request(node, user.to_owned());
    Ok(())
}

/// How long a pass that the database failed waits before it goes round again.
const RETRY: Duration = Duration::from_secs(1);
/// Most passes running at once on a node (each one user's rooms, one after the other).
const MAX_PASSES: usize = 4;
/// Users read at once from those whose re-send a stop interrupted.
const RESUME_PAGE: u32 = 500;

/// The re-sends of profile changes as member events running on this node: one task per user,
/// which goes round once more when a change came while it ran. Held by the node.
#[derive(Debug)]
pub(crate) struct Resends {
    /// The users with a task, and whether a change came since its pass began.
    running: Mutex<HashMap<OwnedUserId, bool>>,
    passes: Arc<tokio::sync::Semaphore>,
}

impl Default for Resends {
    fn default() -> Self {
        Self {
            running: Mutex::default(),
            passes: Arc::new(tokio::sync::Semaphore::new(MAX_PASSES)),
        }
    }
}

impl Resends {
    /// Re-sends `user`'s profile to their joined rooms: starts a task, or has the running one
    /// go round once more.
    pub(crate) fn request(&self, node: &Node, user: OwnedUserId) {
        {
            let mut running = crate::locks::lock(&self.running);
            if let Some(again) = running.get_mut(&user) {
                *again = true;
                return;
            }
            running.insert(user.clone(), false);
        }
        tokio::spawn(resend(node.clone(), user));
    }

    /// At start: re-sends the profiles whose re-send a stop or a crash interrupted (the
    /// database asked again after a pause until it answers, or the node stops).
    pub(crate) async fn resume(&self, node: &Node) {
        let mut after = String::new();
        loop {
            let page = match node
                .userdata()
                .profiles()
                .members_behind(&after, RESUME_PAGE)
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    tracing::error!(error = %e, "profile re-sends: reading those to resume (tried again)");
                    if !pause(node).await {
                        return;
                    }
                    continue;
                }
            };
            let Some(last) = page.last() else {
                return;
            };
            after = last.clone();
            let full = page.len() == RESUME_PAGE as usize;
            for user in page {
                match OwnedUserId::try_from(user.as_str()) {
                    Ok(user) => {
                        tracing::info!(%user, "profile re-send resumed");
                        self.request(node, user);
                    }
                    Err(e) => tracing::error!(user, error = %e, "profile re-send: not a user ID"),
                }
            }
            if !full {
                return;
            }
        }
    }

    /// Whether `user`'s task goes round again (a change came during its pass); if not, it
    /// is gone.
    fn again(&self, user: &UserId) -> bool {
        let mut running = crate::locks::lock(&self.running);
        match running.get_mut(user) {
            Some(again) if *again => {
                *again = false;
                true
            }
            _ => {
                running.remove(user);
                false
            }
        }
    }
}

/// Waits [`RETRY`]; false if the node stops meanwhile.
async fn pause(node: &Node) -> bool {
    tokio::select! {
        () = node.shutdown_token().cancelled() => false,
        () = tokio::time::sleep(RETRY) => true,
    }
}

/// `user`'s task: passes until one finished with no change come meanwhile.
async fn resend(node: Node, user: OwnedUserId) {
    loop {
        let finished = {
            let Ok(_pass) = Arc::clone(&node.profile_resends().passes)
                .acquire_owned()
                .await
            else {
                return;
            };
            pass(&node, &user).await
        };
        match finished {
            Ok(true) => {}
            // The node stops: the version stays behind, for its next start.
            Ok(false) => return,
            Err(e) if e.status() == StatusCode::SERVICE_UNAVAILABLE => {
                tracing::warn!(%user, error = %e, "profile re-send: the database is unavailable (tried again)");
                if pause(&node).await {
                    continue;
                }
                return;
            }
            // Not an outage: asking again would fail again. The version stays behind (tried
            // again at the next change, or the node's next start).
            Err(e) => tracing::error!(%user, error = %e, "profile re-send failed"),
        }
        if !node.profile_resends().again(&user) {
            return;
        }
    }
}

/// One pass over `user`'s joined rooms; `Ok(false)` if the node stopped before its end.
async fn pass(node: &Node, user: &UserId) -> Result<bool, MatrixError> {
    let (profile, version) = node.userdata().profiles().versioned(user).await?;
    let joined: Vec<OwnedRoomId> = node
        .rooms()
        .caches()
        .user_rooms(user)
        .into_iter()
        .filter(|row| row.membership == MembershipState::Join.as_str())
        .filter_map(|row| OwnedRoomId::try_from(row.room_id).ok())
        .collect();
    for room_id in joined {
        if node.shutdown_token().is_cancelled() {
            return Ok(false);
        }
        match super::membership::resend_member_event(node, &room_id, user, &profile).await {
            Ok(()) => {}
            // The database's outage or a busy room: the pass is tried again.
            Err(e) if e.status() == StatusCode::SERVICE_UNAVAILABLE => return Err(e),
            // Refused (the room's rules, the policy, no longer joined) or failing otherwise:
            // that room keeps its member event; the others get theirs.
            Err(e) => {
                tracing::warn!(%user, room = %room_id, error = %e, "profile not re-sent to a room");
            }
        }
    }
    node.userdata()
        .profiles()
        .members_done(user, version)
        .await?;
    Ok(true)
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
