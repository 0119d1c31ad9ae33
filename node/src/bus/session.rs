//! A session: one hyperty runtime known to the node, connected or waiting in its resume window.
//!
//! It owns the runtime's outbox, the addresses allocated to it, its subscriptions, its rate
//! limiter and the wake-up of the connection currently attached to it. All mutable state sits
//! behind one short-held mutex, never held across `.await`.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::outbox::{Outbox, OutboxFull};
use super::rate::MinuteCounter;
use crate::auth::Identity;
use crate::config::SessionConfig;
use crate::locks::lock;
use crate::store::{SessionKey, Settle};

/// An address allocated to a session, with the `allocationKey` it was allocated under.
#[derive(Debug, Clone)]
pub struct Allocation {
    pub address: Arc<str>,
    pub key: Option<String>,
}

/// The connection currently attached to a session.
#[derive(Debug)]
pub struct Attachment {
    pub id: u64,
    /// Cancelled to close this connection (re-open elsewhere, close, shutdown).
    pub cancel: CancellationToken,
}

/// Why a frame could not be put in a session's outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    #[error("the session has ended")]
    Gone,
    #[error(transparent)]
    Full(#[from] OutboxFull),
}

#[derive(Debug)]
pub(crate) struct State {
    pub(crate) outbox: Outbox,
    pub(crate) attachment: Option<Attachment>,
    /// When the last connection was lost (or the node restarted); `None` while connected.
    pub(crate) disconnected_at: Option<Instant>,
    pub(crate) allocations: Vec<Allocation>,
    pub(crate) subscriptions: Vec<Arc<str>>,
    pub(crate) ended: bool,
    /// Ended here because another node takes it over (`bus/handover.rs`): a route that still
    /// finds it here forwards to it through the cluster instead of failing.
    pub(crate) handed_over: bool,
    /// Its connection does not settle the frames it takes, only their commit does (the gateway
    /// of another domain: [`Session::settled_by_commit`]).
    pub(crate) commit_settles: bool,
}

/// One runtime's session.
#[derive(Debug)]
pub struct Session {
    key: SessionKey,
    runtime_url: Arc<str>,
    token_hash: [u8; 32],
    identity: Identity,
    pub(crate) state: Mutex<State>,
    /// Wakes the attached connection's writer: frames wait to be written.
    notify: Notify,
    /// Wakes answers waiting for room in the outbox: entries were acknowledged, or the
    /// session ended.
    room: Notify,
    limiter: DefaultDirectRateLimiter,
    /// Not held to the limiter: a connector's session (`stubhost`, `StubRunConfig::connector`).
    rate_exempt: AtomicBool,
    per_minute: MinuteCounter,
    /// The highest `cseq` (the runtime's own numbering of what it sends) handled: a message
    /// with a `cseq` at or below it is a resent duplicate, dropped (`ws::session`).
    cseq: AtomicU64,
    /// Cancelled when the session leaves this node (ended, taken over, handed over).
    left: CancellationToken,
}

impl Session {
    /// Adds `resources` to the session's subscriptions (`subscribe`), or removes them. Adding
    /// changes nothing and is refused (403) when the session would then hold more than `max`
    /// subscriptions. Set lookups: the cost is linear in the request and what the session holds.
    pub(crate) fn change_subscriptions(
        &self,
        resources: &[String],
        subscribe: bool,
        max: usize,
    ) -> Result<(), super::RouteError> {
        let too_many = || {
            super::RouteError::Forbidden(format!("a runtime subscribes to at most {max} addresses"))
        };
        if subscribe && resources.len() > max {
            return Err(too_many());
        }
        let mut st = lock(&self.state);
        if subscribe {
            let fresh: Vec<Arc<str>> = {
                let held: std::collections::HashSet<&str> =
                    st.subscriptions.iter().map(|s| &**s).collect();
                let mut seen = std::collections::HashSet::new();
                resources
                    .iter()
                    .map(String::as_str)
                    .filter(|r| !held.contains(r) && seen.insert(*r))
                    .map(Arc::from)
                    .collect()
            };
            if st.subscriptions.len() + fresh.len() > max {
                return Err(too_many());
            }
            st.subscriptions.extend(fresh);
        } else {
            let gone: std::collections::HashSet<&str> =
                resources.iter().map(String::as_str).collect();
            st.subscriptions.retain(|s| !gone.contains(&**s));
        }
        Ok(())
    }

    /// Whether the session ended here because another node took it over (`bus/handover.rs`).
    pub fn handed_over(&self) -> bool {
        lock(&self.state).handed_over
    }

    pub(crate) fn new(
        key: SessionKey,
        runtime_url: Arc<str>,
        token_hash: [u8; 32],
        identity: Identity,
        outbox: Outbox,
        config: &SessionConfig,
        now: Instant,
    ) -> Self {
        let per_second = NonZeroU32::new(config.rate_per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(config.rate_burst).unwrap_or(NonZeroU32::MIN);
        Self {
            key,
            runtime_url,
            token_hash,
            identity,
            state: Mutex::new(State {
                outbox,
                attachment: None,
                disconnected_at: Some(now),
                allocations: Vec::new(),
                subscriptions: Vec::new(),
                ended: false,
                handed_over: false,
                commit_settles: false,
            }),
            notify: Notify::new(),
            room: Notify::new(),
            limiter: RateLimiter::direct(Quota::per_second(per_second).allow_burst(burst)),
            rate_exempt: AtomicBool::new(false),
            per_minute: MinuteCounter::default(),
            cseq: AtomicU64::new(0),
            left: CancellationToken::new(),
        }
    }

    /// Cancelled once the session has left this node: ended, or held by another node now.
    pub fn left(&self) -> &CancellationToken {
        &self.left
    }

    /// Takes `cseq` as handled: false when it is not above the highest one handled (a
    /// duplicate of a message already handled).
    pub fn accept_cseq(&self, cseq: u64) -> bool {
        self.cseq.fetch_max(cseq, Ordering::AcqRel) < cseq
    }

    /// The highest `cseq` handled (0 when none).
    pub fn cseq(&self) -> u64 {
        self.cseq.load(Ordering::Acquire)
    }

    pub fn key(&self) -> &SessionKey {
        &self.key
    }

    pub fn runtime_url(&self) -> &Arc<str> {
        &self.runtime_url
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub(crate) fn token_hash(&self) -> &[u8; 32] {
        &self.token_hash
    }

    /// Takes one unit of the session's message rate; false when the rate is exceeded.
    pub fn take_rate(&self) -> bool {
        self.rate_exempt.load(Ordering::Relaxed) || self.limiter.check().is_ok()
    }

    /// Lifts the message rate limit of this session: a connector's, whose answers to its
    /// callers (each held to its own limit) must not be capped at one runtime's rate.
    pub(crate) fn exempt_from_rate_limit(&self) {
        self.rate_exempt.store(true, Ordering::Relaxed);
    }

    /// Counts a message for `context.rate_per_minute`; returns the count over the last minute.
    pub fn count_message(&self, now_ms: i64) -> u64 {
        self.per_minute.hit(now_ms)
    }

    /// The number of addresses allocated to the session.
    pub fn allocation_count(&self) -> usize {
        lock(&self.state).allocations.len()
    }

    /// Appends a frame to the outbox, within its bounds. Returns its seq and whether a
    /// connection is attached that settles the frames it takes.
    pub(crate) fn push(
        &self,
        json: Arc<str>,
        settle: Option<Settle>,
    ) -> Result<(u64, bool), PushError> {
        let mut st = lock(&self.state);
        if st.ended {
            return Err(PushError::Gone);
        }
        let seq = st.outbox.push(json, settle)?;
        let connected = st.attachment.is_some();
        let settles = connected && !st.commit_settles;
        drop(st);
        if connected {
            self.notify.notify_one();
        }
        Ok((seq, settles))
    }

    /// From now on only their commit settles the frames pushed to this session, whatever its
    /// connection does: [`Session::push`] says they are not settled by a connection, so the
    /// route commits them at once instead of after the group-commit delay (the gateway of
    /// another domain, whose pump acknowledges what the stub holds and settles nothing).
    pub(crate) fn settled_by_commit(&self) {
        lock(&self.state).commit_settles = true;
    }

    /// Appends a frame not written before [`Session::release`] (nor any after it). Returns its
    /// seq.
    pub(crate) fn push_held(&self, json: Arc<str>, settle: Settle) -> Result<u64, PushError> {
        let mut st = lock(&self.state);
        if st.ended {
            return Err(PushError::Gone);
        }
        Ok(st.outbox.push_held(json, Some(settle))?)
    }

    /// Lets the held frame `seq` be written, waking the connection's writer.
    pub(crate) fn release(&self, seq: u64) {
        let mut st = lock(&self.state);
        st.outbox.release(seq);
        let connected = st.attachment.is_some();
        drop(st);
        if connected {
            self.notify.notify_one();
        }
    }

    /// Appends a frame moved from another node, held until [`Session::release_moved`]
    /// (`cluster/`). Returns its seq.
    pub fn push_moved(&self, json: Arc<str>) -> Result<u64, PushError> {
        let mut st = lock(&self.state);
        if st.ended {
            return Err(PushError::Gone);
        }
        Ok(st.outbox.push_moved(json))
    }

    /// Lets the moved frames be written (their move is committed).
    pub fn release_moved(&self) {
        let mut st = lock(&self.state);
        st.outbox.release_moved();
        let connected = st.attachment.is_some();
        drop(st);
        if connected {
            self.notify.notify_one();
        }
    }

    /// Forgets the moved frames still held (their move failed; they stay where they came
    /// from). Returns how many.
    pub fn drop_moved(&self) -> usize {
        lock(&self.state).outbox.drop_moved()
    }

    /// Appends one of the node's answers, waiting while the outbox is full (until the runtime
    /// acknowledges frames, or the session ends). Returns its seq.
    pub(crate) async fn push_answer(&self, json: Arc<str>) -> Result<u64, PushError> {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            // Registered before the check, so an acknowledgement in between is not missed.
            room.as_mut().enable();
            match self.push(Arc::clone(&json), None) {
                Err(PushError::Full(_)) => room.await,
                other => return other.map(|(seq, _)| seq),
            }
        }
    }

    /// Caps the outbox at `cap` messages on top of its bounds (`None`: its bounds only).
    pub fn cap_outbox(&self, cap: Option<usize>) {
        lock(&self.state).outbox.set_cap(cap);
    }

    /// Cumulative acknowledgement; returns how many entries it released.
    pub(crate) fn ack(&self, seq: u64) -> usize {
        let released = lock(&self.state).outbox.ack(seq);
        if released > 0 {
            self.room.notify_waiters();
        }
        released
    }

    /// Wakes every answer waiting for room (the session has ended: they fail with `Gone`).
    pub(crate) fn wake_waiters(&self) {
        self.room.notify_waiters();
    }

    /// Attaches a new connection, replacing (and cancelling) any previous one, and prepares the
    /// replay of everything after `last_seq`. Returns the new connection's cancel token and how
    /// many entries `last_seq` acknowledged.
    pub(crate) fn attach(&self, id: u64, last_seq: Option<u64>) -> (CancellationToken, usize) {
        let cancel = CancellationToken::new();
        let mut st = lock(&self.state);
        if let Some(old) = st.attachment.take() {
            old.cancel.cancel();
        }
        let released = match last_seq {
            Some(seq) => st.outbox.resume_from(seq),
            None => {
                st.outbox.rewind();
                0
            }
        };
        st.attachment = Some(Attachment {
            id,
            cancel: cancel.clone(),
        });
        st.disconnected_at = None;
        drop(st);
        self.notify.notify_one();
        if released > 0 {
            self.room.notify_waiters();
        }
        (cancel, released)
    }

    /// Detaches connection `id` if it is still the attached one; the session enters its resume
    /// window (from `now`). Returns whether it was attached.
    pub(crate) fn detach(&self, id: u64, now: Instant) -> bool {
        let mut st = lock(&self.state);
        if st.attachment.as_ref().is_some_and(|a| a.id == id) {
            st.attachment = None;
            st.outbox.rewind();
            st.disconnected_at = Some(now);
            true
        } else {
            false
        }
    }

    /// Renders up to `max` frames not yet written, if connection `id` is the attached one (a
    /// connection being replaced must not take frames meant for its successor). The caller
    /// fires the `settles` once the frames are written to the socket.
    pub fn take_unsent(
        &self,
        id: u64,
        max: usize,
        out: &mut Vec<String>,
        settles: &mut Vec<Settle>,
    ) {
        let mut st = lock(&self.state);
        if st.attachment.as_ref().is_some_and(|a| a.id == id) {
            st.outbox.take_unsent(max, out, settles);
        }
    }

    /// Waits until frames may be waiting to be written.
    pub async fn wait_for_frames(&self) {
        self.notify.notified().await;
    }
}
