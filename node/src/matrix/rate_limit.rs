//! [`RateLimits`]: the client API's request rate limiter, as homeservers have one
//! (`[matrix.rate_limit]`): a token bucket per user for room sends (`send`, state, `redact`),
//! to-device sends and logins (the user the login names), and one for the node's registrations
//! (it does not see
//! client addresses). Past the limit a request is 429 `M_LIMIT_EXCEEDED` with `retry_after_ms`.
//! An application service whose registration says `rate_limited: false` is not limited, nor
//! are the users it masquerades as.
//!
//! Buckets live in memory; a map that grows past `MAX_KEYS` forgets the full ones (a full
//! bucket is the same as a fresh one), so its size stays bounded by recent senders.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rethink_connectors::AppService;

use super::error::MatrixError;
use crate::clock::Clock;
use crate::config::{RateLimitConfig, RawBucket};
use crate::locks::lock;

/// Keys kept per limiter before full buckets are forgotten.
const MAX_KEYS: usize = 100_000;

/// The key of the node-wide registration bucket.
const NODE: &str = "";

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets of one kind, by key.
#[derive(Debug)]
struct Buckets {
    rate: f64,
    burst: f64,
    map: Mutex<HashMap<String, Bucket>>,
}

impl Buckets {
    fn new(b: RawBucket) -> Self {
        Self {
            rate: b.per_second,
            burst: f64::from(b.burst),
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token of `key`'s bucket at `now`, or says how long until one is there.
    fn take(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let mut map = lock(&self.map);
        if map.len() >= MAX_KEYS && !map.contains_key(key) {
            let (rate, burst) = (self.rate, self.burst);
            map.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
        }
        let bucket = map.entry(key.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let refilled = now.saturating_duration_since(bucket.at).as_secs_f64() * self.rate;
        bucket.tokens = (bucket.tokens + refilled).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.rate))
        }
    }
}

/// The node's Matrix rate limiters.
#[derive(Debug)]
pub struct RateLimits {
    room_sends: Option<Buckets>,
    to_device_sends: Option<Buckets>,
    logins: Option<Buckets>,
    registrations: Option<Buckets>,
    clock: Clock,
}

impl RateLimits {
    pub fn new(config: &RateLimitConfig, clock: Clock) -> Self {
        Self {
            room_sends: config.room_sends.map(Buckets::new),
            to_device_sends: config.to_device_sends.map(Buckets::new),
            logins: config.logins.map(Buckets::new),
            registrations: config.registrations.map(Buckets::new),
            clock,
        }
    }

    fn check(
        &self,
        buckets: &Option<Buckets>,
        key: &str,
        service: Option<&AppService>,
    ) -> Result<(), MatrixError> {
        let Some(buckets) = buckets else {
            return Ok(());
        };
        if service.is_some_and(|s| !s.registration.rate_limited) {
            return Ok(());
        }
        buckets
            .take(key, self.clock.now())
            .map_err(|wait| MatrixError::RateLimited {
                retry_after: wait.max(Duration::from_millis(1)),
            })
    }

    /// A room event sent by `user` (through `service`, if one acts).
    pub(crate) fn room_send(
        &self,
        user: &str,
        service: Option<&AppService>,
    ) -> Result<(), MatrixError> {
        self.check(&self.room_sends, user, service)
    }

    /// A `sendToDevice` request of `user` (through `service`, if one acts).
    pub(crate) fn to_device_send(
        &self,
        user: &str,
        service: Option<&AppService>,
    ) -> Result<(), MatrixError> {
        self.check(&self.to_device_sends, user, service)
    }

    /// A login naming `user`.
    pub(crate) fn login(
        &self,
        user: &str,
        service: Option<&AppService>,
    ) -> Result<(), MatrixError> {
        self.check(&self.logins, user, service)
    }

    /// A registration.
    pub(crate) fn registration(&self, service: Option<&AppService>) -> Result<(), MatrixError> {
        self.check(&self.registrations, NODE, service)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let b = Buckets::new(RawBucket {
            per_second: 2.0,
            burst: 3,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(b.take("a", t0), Ok(()));
        }
        let wait = b.take("a", t0).expect_err("empty");
        assert_eq!(wait, Duration::from_millis(500));
        // Another key has its own bucket.
        assert_eq!(b.take("b", t0), Ok(()));
        // Half a second later one token is back, and only one.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(b.take("a", t1), Ok(()));
        assert!(b.take("a", t1).is_err());
    }
}
