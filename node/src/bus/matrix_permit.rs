//! The enforcement point for Matrix actions: `matrix:send`,
//! `matrix:state`, `matrix:invite`, `matrix:join` and `matrix:createRoom` are decided by the same
//! operator policies as bus messages, before the room engine sees them. Only
//! [`Bus::authorize_matrix`] makes a [`MatrixPermit`], and the room engine's public write methods
//! require one.
//!
//! The query: the principal is the Matrix user (`Rethink::User`, uid its Matrix ID, or the
//! verified `user://idp/sub` identity the account is linked to); the resource is the room
//! (`Rethink::Object`: the data object's `comm://` address for a bridged room, else the room ID).
//! For `matrix:invite`, `context.to` and `context.to_domain` are the invitee's. Local users and
//! rooms belong to this node's domain. `context.rate_per_minute` counts the user's Matrix actions.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use rethink_policy::{Facts, Principal, PrincipalKind, Query, Resource, ResourceKind};
use ruma::{OwnedUserId, UserId};

use super::Bus;
use super::permit::Denied;
use super::rate::MinuteCounter;
use crate::policy::facts::idp_of;
use crate::sync::lock;

/// A Matrix action to decide.
#[derive(Debug, Clone, Copy)]
pub struct MatrixRequest<'a> {
    /// `matrix:send`, `matrix:state`, `matrix:invite`, `matrix:join` or `matrix:createRoom`.
    pub action: &'static str,
    pub user: &'a UserId,
    /// The verified identity (`user://idp/sub`) the account is linked to, if any.
    pub identity: Option<&'a str>,
    /// The room: a bridged object's `comm://` address or the room ID (empty for createRoom).
    pub room: &'a str,
    /// Whether `room` is a bridged data object.
    pub bridged: bool,
    /// For an invitation, the invitee.
    pub invitee: Option<&'a UserId>,
    /// The event content's size in bytes.
    pub size: usize,
}

/// Proof that a Matrix action passed the enforcement point.
#[derive(Debug)]
pub struct MatrixPermit(());

/// Per-user counts of Matrix actions in the last minute.
#[derive(Debug, Default)]
pub(crate) struct MatrixRates {
    users: Mutex<HashMap<OwnedUserId, std::sync::Arc<MinuteCounter>>>,
}

impl MatrixRates {
    fn hit(&self, user: &UserId, now_ms: i64) -> u64 {
        let counter = {
            let mut users = lock(&self.users);
            std::sync::Arc::clone(users.entry(user.to_owned()).or_default())
        };
        counter.hit(now_ms)
    }
}

impl Bus {
    /// Decides a Matrix action: the operator's policies, with the user's action rate.
    pub fn authorize_matrix(&self, req: &MatrixRequest<'_>) -> Result<MatrixPermit, Denied> {
        let Some(engine) = self.inner.policy.engine() else {
            return Ok(MatrixPermit(()));
        };
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let rate = self.inner.matrix_rates.hit(req.user, now_ms);
        let now = self.inner.policy.clock().now();
        let domain = self.inner.domain.as_str();
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
            return Ok(MatrixPermit(()));
        }
        let first = decision
            .policies
            .first()
            .map_or("default-deny", String::as_str);
        self.inner.metrics.policy_denial(first);
        tracing::debug!(user = %req.user, action = req.action, room = req.room, policy = first, "matrix action denied");
        Err(Denied::Policy {
            policies: decision.policies,
        })
    }
}
