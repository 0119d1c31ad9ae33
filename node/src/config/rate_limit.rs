//! `[matrix.rate_limit]`: the Matrix client API's request rate limiter
//! (`crate::matrix::rate_limit`), [`RateLimitConfig`].

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// One token bucket: `per_second` tokens added, at most `burst` kept.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBucket {
    pub per_second: f64,
    pub burst: u32,
}

/// `[matrix.rate_limit]` as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRateLimit {
    /// Off: nothing is limited.
    pub enabled: bool,
    /// Room events a user sends (`send`, state, `redact`), per user.
    pub room_sends: RawBucket,
    /// To-device requests a user sends (`sendToDevice`), per user.
    pub to_device_sends: RawBucket,
    /// Login attempts, per user named in the request.
    pub logins: RawBucket,
    /// Account registrations, for the whole node (the node does not see client addresses).
    pub registrations: RawBucket,
}

impl Default for RawRateLimit {
    fn default() -> Self {
        Self {
            enabled: true,
            room_sends: RawBucket {
                per_second: 10.0,
                burst: 100,
            },
            to_device_sends: RawBucket {
                per_second: 10.0,
                burst: 100,
            },
            logins: RawBucket {
                per_second: 1.0,
                burst: 10,
            },
            registrations: RawBucket {
                per_second: 5.0,
                burst: 50,
            },
        }
    }
}

/// The validated limits; `None` for a limiter turned off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimitConfig {
    pub room_sends: Option<RawBucket>,
    pub to_device_sends: Option<RawBucket>,
    pub logins: Option<RawBucket>,
    pub registrations: Option<RawBucket>,
}

impl RateLimitConfig {
    /// Nothing limited.
    pub fn off() -> Self {
        Self {
            room_sends: None,
            to_device_sends: None,
            logins: None,
            registrations: None,
        }
    }
}

pub(super) fn validate_rate_limit(r: &RawRateLimit) -> Result<RateLimitConfig, ConfigError> {
    if !r.enabled {
        return Ok(RateLimitConfig::off());
    }
    let check = |setting: &'static str, b: RawBucket| {
        if !(b.per_second.is_finite() && b.per_second > 0.0) || b.burst == 0 {
            return Err(super::invalid(
                setting,
                "per_second must be above 0 and burst at least 1",
            ));
        }
        Ok(Some(b))
    };
    Ok(RateLimitConfig {
        room_sends: check("matrix.rate_limit.room_sends", r.room_sends)?,
        to_device_sends: check("matrix.rate_limit.to_device_sends", r.to_device_sends)?,
        logins: check("matrix.rate_limit.logins", r.logins)?,
        registrations: check("matrix.rate_limit.registrations", r.registrations)?,
    })
}
