//! The decision on Matrix actions: `matrix:send`, `matrix:state`,
//! `matrix:invite`, `matrix:join` and `matrix:createRoom` are decided by the same operator
//! policies as bus messages, before the room engine sees them. Only
//! [`PolicyPoint::decide_matrix`] makes a [`MatrixPermit`] (its enforcement point is
//! `Bus::authorize_matrix`, which counts the user's rate); the permit names the action, the user
//! and the room it was decided for, and the room engine's public write methods require one and
//! check that it covers what they do.
//!
//! The query: the principal is the Matrix user (`Rethink::User`, uid its Matrix ID, or the
//! verified `user://idp/sub` identity the account is linked to); the resource is the room
//! (`Rethink::Object`: the data object's `comm://` address for a bridged room, else the room ID).
//! For `matrix:invite`, `context.to` and `context.to_domain` are the invitee's. Local users and
//! rooms belong to this node's domain. `context.rate_per_minute` counts the user's Matrix actions.

use rethink_policy::{Facts, Principal, PrincipalKind, Query, Resource, ResourceKind};
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};

use super::PolicyPoint;
use super::facts::idp_of;

/// A Matrix action to decide.
#[derive(Debug, Clone, Copy)]
pub struct MatrixRequest<'a> {
    /// `matrix:send`, `matrix:state`, `matrix:invite`, `matrix:join` or `matrix:createRoom`.
    pub action: &'static str,
    pub user: &'a UserId,
    /// The verified identity (`user://idp/sub`) the account is linked to, if any.
    pub identity: Option<&'a str>,
    /// The room as policies name it: a bridged object's `comm://` address or the room ID (empty
    /// for createRoom).
    pub room: &'a str,
    /// The room's ID (`None` for createRoom): what the permit is for.
    pub room_id: Option<&'a RoomId>,
    /// Whether `room` is a bridged data object.
    pub bridged: bool,
    /// For an invitation, the invitee.
    pub invitee: Option<&'a UserId>,
    /// The event content's size in bytes.
    pub size: usize,
}

/// Proof that a Matrix action passed the enforcement point: `user` may do `action` in `room`
/// (`None`: a room to be created). Only [`PolicyPoint::decide_matrix`] makes one.
#[derive(Debug)]
pub struct MatrixPermit {
    action: &'static str,
    user: OwnedUserId,
    room: Option<OwnedRoomId>,
}

impl MatrixPermit {
    /// The action permitted.
    pub fn action(&self) -> &'static str {
        self.action
    }

    /// The user permitted to act.
    pub fn user(&self) -> &UserId {
        &self.user
    }

    /// The room the action was permitted in (`None` for createRoom).
    pub fn room(&self) -> Option<&RoomId> {
        self.room.as_deref()
    }

    /// Whether this permits `user` to do one of `actions` in `room`.
    pub fn covers(&self, actions: &[&str], user: &UserId, room: Option<&RoomId>) -> bool {
        actions.contains(&self.action) && *self.user == *user && self.room.as_deref() == room
    }
}

/// A Matrix action the operator's policies refuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatrixDenied {
    /// The policies that refused it (empty: no policy permits it).
    pub policies: Vec<String>,
}

impl PolicyPoint {
    /// Decides a Matrix action of this node's `domain` with the operator's policies. `rate`
    /// counts the action and returns the user's actions in the last minute; it is called only
    /// when policies are in force.
    pub fn decide_matrix(
        &self,
        domain: &str,
        req: &MatrixRequest<'_>,
        rate: impl FnOnce() -> u64,
    ) -> Result<MatrixPermit, MatrixDenied> {
        let permit = || MatrixPermit {
            action: req.action,
            user: req.user.to_owned(),
            room: req.room_id.map(ToOwned::to_owned),
        };
        let Some(engine) = self.engine() else {
            return Ok(permit());
        };
        let rate = rate();
        let now = self.clock().now();
        let subject = req.identity.unwrap_or(req.user.as_str());
        let (to, to_domain) = match req.invitee {
            Some(invitee) if invitee.server_name().as_str() != domain => {
                (invitee.as_str(), invitee.server_name().as_str())
            }
            Some(invitee) => (invitee.as_str(), domain),
            None => (req.room, domain),
        };
        let query = Query {
            principal: Principal {
                address: subject,
                kind: PrincipalKind::User,
                runtime: None,
                user: Some(subject),
                domain,
            },
            action: req.action,
            resource: Resource {
                address: req.room,
                kind: if req.bridged {
                    ResourceKind::Object
                } else {
                    ResourceKind::Room
                },
                owner_user: None,
                owner_runtime: None,
                domain,
            },
            context: Facts {
                time: now.time,
                weekday: now.weekday,
                hour: now.hour,
                transport: "matrix",
                message_type: req.action,
                from: subject,
                to,
                from_scheme: if req.identity.is_some() {
                    "user"
                } else {
                    "matrix"
                },
                to_scheme: if req.bridged { "comm" } else { "matrix" },
                from_domain: domain,
                to_domain,
                size: i64::try_from(req.size).unwrap_or(i64::MAX),
                authenticated: true,
                idp: req.identity.map_or("", idp_of),
                rate_per_minute: i64::try_from(rate).unwrap_or(i64::MAX),
                allocations: 0,
            },
        };
        let decision = engine.decide(&query);
        for e in &decision.errors {
            tracing::warn!(error = %e, "policy evaluation error");
        }
        if decision.allowed {
            return Ok(permit());
        }
        let first = decision
            .policies
            .first()
            .map_or("default-deny", String::as_str);
        self.metrics.policy_denial(first);
        tracing::debug!(user = %req.user, action = req.action, room = req.room, policy = first, "matrix action denied");
        Err(MatrixDenied {
            policies: decision.policies,
        })
    }
}
