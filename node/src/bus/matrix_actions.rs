//! The enforcement point for Matrix actions: [`Bus::authorize_matrix`] counts the user's Matrix
//! actions per minute and has the policy point decide ([`crate::policy::matrix`], which makes the
//! [`MatrixPermit`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use ruma::{OwnedUserId, UserId};

use super::Bus;
use super::permit::Denied;
use super::rate::MinuteCounter;
use crate::locks::lock;
pub use crate::policy::matrix::{MatrixPermit, MatrixRequest};

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
        let rate = || {
            let now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            self.inner.matrix_rates.hit(req.user, now_ms)
        };
        self.inner
            .policy
            .decide_matrix(&self.inner.domain, req, rate)
            .map_err(|d| Denied::Policy {
                policies: d.policies,
            })
    }
}
