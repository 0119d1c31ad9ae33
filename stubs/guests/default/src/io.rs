//! What the session needs from its host ([`Io`]): the bus, the WebSocket, timers, the key-value
//! store and the log. The component implements it with the WIT imports (`lib.rs`); the unit
//! tests drive the same session with a recording implementation.

use rethink_guest_envelope::Msg;

/// A host refusal (the WIT `failure`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub(crate) code: u16,
    pub(crate) description: String,
}

/// Log severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

/// The timers the session sets (their WIT ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timer {
    /// Connect again after a lost or refused connection.
    Reconnect = 1,
    /// Send the cumulative `ack` for the frames received so far.
    Ack = 2,
    /// Retry what the bus or the socket refused for a while (503/429).
    Retry = 3,
    /// Give up on a connection whose `open` / `re-open` got no answer.
    Handshake = 4,
    /// Answer 504 for the queued messages older than `deliver_timeout_ms`.
    Expire = 5,
}

impl Timer {
    pub(crate) fn from_id(id: u64) -> Option<Self> {
        [
            Self::Reconnect,
            Self::Ack,
            Self::Retry,
            Self::Handshake,
            Self::Expire,
        ]
        .into_iter()
        .find(|t| *t as u64 == id)
    }
}

/// The host's services, as the session uses them.
pub(crate) trait Io {
    /// Hands `message` to the bus; a refused one comes back with the refusal (moved, not
    /// copied: the size of the `Err` is that of the message's handles).
    #[allow(clippy::result_large_err)]
    fn bus_send(&mut self, message: Msg) -> Result<(), (Failure, Msg)>;
    fn ws_open(&mut self, url: &str) -> Result<u64, Failure>;
    fn ws_send(&mut self, socket: u64, text: &str) -> Result<(), Failure>;
    fn ws_close(&mut self, socket: u64, code: u16, reason: &str);
    fn set_timer(&mut self, timer: Timer, delay_ms: u64);
    fn cancel_timer(&mut self, timer: Timer);
    fn kv_get(&mut self, key: &str) -> Option<Vec<u8>>;
    fn kv_set(&mut self, key: &str, value: &[u8]) -> Result<(), Failure>;
    fn kv_delete(&mut self, key: &str);
    fn kv_keys(&mut self, prefix: &str, limit: u32) -> Vec<String>;
    fn monotonic_ms(&mut self) -> u64;
    fn now_ms(&mut self) -> u64;
    fn log(&mut self, level: Level, message: &str);
}
