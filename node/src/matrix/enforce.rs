//! The Matrix edge's way to the enforcement point: a [`MatrixPermit`] for an action of the
//! caller, with the verified identity their account is linked to (for JWT-created accounts) as
//! the principal, and the room's data object when the room is bridged.

use ruma::{RoomId, UserId};

use super::error::MatrixError;
use crate::bus::MatrixPermit;
use crate::node::Node;

/// Asks the enforcement point about `action` by `user` in `room` (`None` for createRoom).
pub(crate) async fn permit(
    node: &Node,
    action: &'static str,
    user: &UserId,
    room: Option<&RoomId>,
    invitee: Option<&UserId>,
    size: usize,
) -> Result<MatrixPermit, MatrixError> {
    let identity = node.accounts().linked_identity(user).await?;
    Ok(node
        .bridge()
        .authorize(action, user, identity.as_deref(), room, invitee, size)
        .await?)
}
