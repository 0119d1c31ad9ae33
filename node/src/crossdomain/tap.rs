//! [`SessionTap`]: what the gateway learns from the WebSocket of another domain's stub (the
//! stub host's [`NetTap`]), whatever stub it is, as long as it speaks the session protocol to
//! its node (README, "The WebSocket protocol in brief"):
//!
//! - a `401` answer from `mn:/session` (only `open` and `re-open` are answered so): the other
//!   node refused our proof (its clock ahead of ours by more than its leeway, or its key cache
//!   behind): the gateway fetches a fresh proof and restarts the stub with it (`gateway.rs`),
//!   which then resumes its session.

use rethink_stubs::NetTap;
use serde_json::Value;
use tokio::sync::watch;

/// The node's session control address.
const SESSION: &str = "mn:/session";

/// The gateway's view of one stub's sockets.
#[derive(Debug)]
pub(super) struct SessionTap {
    /// How many times the other node refused our proof (401 to `open` / `re-open`).
    refused: watch::Sender<u64>,
}

impl SessionTap {
    /// A tap, and the receiver of the count of refusals of our proof.
    pub(super) fn new() -> (Self, watch::Receiver<u64>) {
        let (refused, rx) = watch::channel(0);
        (Self { refused }, rx)
    }

    fn on_control_answer(&self, msg: &Value) {
        if msg["type"] != "response" || msg["from"] != SESSION {
            return;
        }
        if msg["body"]["code"].as_u64() == Some(401) {
            self.refused.send_modify(|n| *n += 1);
        }
    }
}

/// The messages of one text frame (an object, or an array of them).
fn messages(text: &str) -> Vec<Value> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(batch)) => batch,
        Ok(v @ Value::Object(_)) => vec![v],
        _ => Vec::new(),
    }
}

impl NetTap for SessionTap {
    fn sent(&self, _socket: u64, _text: &str) {}

    fn received(&self, _socket: u64, text: &str) {
        // Only the session's own answers matter here: most frames are not parsed.
        if !text.contains(SESSION) {
            return;
        }
        for msg in messages(text) {
            self.on_control_answer(&msg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_refusals_of_open_and_reopen() {
        let (tap, rx) = SessionTap::new();
        tap.received(
            1,
            r#"{"id":1,"type":"response","from":"mn:/session","to":"x","body":{"code":200}}"#,
        );
        tap.received(
            1,
            r#"{"id":2,"type":"PING","from":"mn:/session","body":{"code":401}}"#,
        );
        assert_eq!(*rx.borrow(), 0);
        tap.received(
            1,
            r#"[{"id":3,"type":"response","from":"mn:/session","to":"x","body":{"code":401}}]"#,
        );
        assert_eq!(*rx.borrow(), 1);
    }
}
