//! [`SessionTap`]: what the gateway learns from the WebSocket of another domain's stub (the
//! stub host's [`NetTap`]), whatever stub it is, as long as it speaks the session protocol to
//! its node (README, "The WebSocket protocol in brief"):
//!
//! - a `401` answer from `mn:/session` (only `open` and `re-open` are answered so): the other
//!   node refused our proof (its clock ahead of ours by more than its leeway, or its key cache
//!   behind): the gateway fetches a fresh proof and restarts the stub with it (`gateway.rs`),
//!   which then resumes its session;
//! - how far the other node has handled what the stub wrote, for a stub that does not say what
//!   it holds in its records (`held.rs`: the `"g"` of ours): the pump tells the tap each
//!   message it hands to the stub, with its outbox position ([`SessionTap::handed`]); the tap
//!   matches the messages the stub writes with a top-level `cseq` by `from` and `id`; the
//!   `cseq` the node answers (`sync`, `re-open`: `body.value.cseq`) confirms every message
//!   written with a `cseq` up to it, and [`Held`] is raised to the highest outbox position
//!   among them. The stub is taken to write in the order it was given messages (the session
//!   protocol keeps order), so a confirmed position also covers the earlier ones it answered
//!   itself. Such a stub is acknowledged from the gateway outbox only once the other node
//!   handled its messages (a restart of the stub hands it again what was not: at least once;
//!   once only if the stub gives a message the same `cseq` again). A message the stub writes
//!   without a `cseq` gives the other node nothing to confirm: it is taken as held once it is
//!   written to the socket (at most once for it: lost if the connection breaks before the other
//!   node read it), so that such a stub is not left with a full queue.
//!   Once the stub's records report a `g`, this accounting is skipped (not needed).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use rethink_proto::Envelope;
use rethink_stubs::NetTap;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::sync::watch;

use super::held::Held;
use crate::locks::lock;

/// The node's session control address.
const SESSION: &str = "mn:/session";

/// Messages handed to the stub and not yet confirmed, at most (beyond, the oldest are
/// forgotten: their positions are then confirmed by a later one's).
const MAX_TRACKED: usize = 1 << 16;

/// The gateway's view of one stub's sockets.
#[derive(Debug)]
pub(super) struct SessionTap {
    /// How many times the other node refused our proof (401 to `open` / `re-open`).
    refused: watch::Sender<u64>,
    held: Arc<Held>,
    track: Mutex<Track>,
}

#[derive(Debug, Default)]
struct Track {
    /// `from` and `id` of each message handed to the stub → its outbox position.
    handed: HashMap<String, u64>,
    /// `cseq` of each message the stub wrote → its outbox position.
    written: BTreeMap<u64, u64>,
    /// The outbox positions of the messages the stub wrote without a `cseq`, not yet released
    /// (one written with a `cseq` before them still waits).
    bare: BTreeSet<u64>,
}

/// The fields of a message the stub writes that matter here (the rest is skipped).
#[derive(Deserialize)]
struct Written<'a> {
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    from: Option<std::borrow::Cow<'a, str>>,
    cseq: Option<u64>,
}

/// The key of a message: its `from` and its `id` (as JSON, normalised).
fn key(from: &str, id_json: &str) -> String {
    let id = serde_json::from_str::<Value>(id_json)
        .map_or_else(|_| id_json.to_owned(), |v| v.to_string());
    format!("{from}\n{id}")
}

impl SessionTap {
    /// A tap raising `held`, and the receiver of the count of refusals of our proof.
    pub(super) fn new(held: Arc<Held>) -> (Self, watch::Receiver<u64>) {
        let (refused, rx) = watch::channel(0);
        let tap = Self {
            refused,
            held,
            track: Mutex::new(Track::default()),
        };
        (tap, rx)
    }

    /// The pump hands `env` to the stub, from outbox position `gseq`.
    pub(super) fn handed(&self, gseq: u64, env: &Envelope) {
        if self.held.by_records() {
            return;
        }
        let mut t = lock(&self.track);
        if t.handed.len() >= MAX_TRACKED {
            t.handed.clear();
        }
        // A second message with the same sender and id keeps the first one's (lower)
        // position: acknowledged later, never earlier.
        t.handed
            .entry(key(env.from(), env.id_json()))
            .or_insert(gseq);
    }

    fn on_written(&self, text: &str) {
        let Ok(m) = serde_json::from_str::<Written<'_>>(text) else {
            return;
        };
        let (Some(id), Some(from)) = (m.id, m.from) else {
            return;
        };
        let mut t = lock(&self.track);
        let Some(&gseq) = t.handed.get(&key(&from, id.get())) else {
            return;
        };
        match m.cseq {
            Some(cseq) => {
                if t.written.len() >= MAX_TRACKED {
                    t.written.pop_first();
                }
                t.written.insert(cseq, gseq);
            }
            // Nothing to wait for: held once written (see the module docs), once the earlier
            // messages written with a `cseq` are confirmed.
            None => {
                if t.bare.len() >= MAX_TRACKED {
                    t.bare.pop_first();
                }
                t.bare.insert(gseq);
                self.settle(t, None);
            }
        }
    }

    /// Raises what is held to `confirmed` (the highest position the other node confirmed
    /// now) or to the highest position written without a `cseq` that no message written with
    /// one before it waits for, whichever is higher.
    fn settle(&self, mut t: std::sync::MutexGuard<'_, Track>, confirmed: Option<u64>) {
        let waiting = t.written.values().copied().min();
        let bare = t
            .bare
            .iter()
            .copied()
            .take_while(|g| waiting.is_none_or(|w| *g < w))
            .last();
        let Some(upto) = confirmed.max(bare) else {
            return;
        };
        t.handed.retain(|_, g| *g > upto);
        t.bare = t.bare.split_off(&(upto + 1));
        drop(t);
        if upto > self.held.get() {
            self.held.raise(upto);
        }
    }

    /// The other node handled every message of the stub up to `cseq`.
    fn confirmed(&self, cseq: u64) {
        let mut t = lock(&self.track);
        let rest = t.written.split_off(&(cseq + 1));
        let done = std::mem::replace(&mut t.written, rest);
        let upto = done.values().copied().max();
        self.settle(t, upto);
    }

    fn on_control_answer(&self, msg: &Value) {
        if msg["type"] != "response" || msg["from"] != SESSION {
            return;
        }
        if msg["body"]["code"].as_u64() == Some(401) {
            self.refused.send_modify(|n| *n += 1);
        }
        if let Some(cseq) = msg["body"]["value"]["cseq"].as_u64() {
            self.confirmed(cseq);
        }
    }
}

/// The messages of one text frame (an object, or an array of them), as JSON texts.
fn texts(text: &str) -> Vec<&str> {
    if text.trim_start().starts_with('[') {
        serde_json::from_str::<Vec<&RawValue>>(text)
            .map(|batch| batch.into_iter().map(RawValue::get).collect())
            .unwrap_or_default()
    } else {
        vec![text]
    }
}

impl NetTap for SessionTap {
    fn sent(&self, _socket: u64, text: &str) {
        if self.held.by_records() {
            return;
        }
        for m in texts(text) {
            self.on_written(m);
        }
    }

    fn received(&self, _socket: u64, text: &str) {
        // Only the session's own answers matter here: most frames are not parsed.
        if !text.contains(SESSION) {
            return;
        }
        for m in texts(text) {
            if let Ok(msg) = serde_json::from_str::<Value>(m) {
                self.on_control_answer(&msg);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tap() -> (SessionTap, watch::Receiver<u64>, watch::Receiver<u64>) {
        let (held, rx) = Held::for_tests();
        let (tap, refused) = SessionTap::new(held);
        (tap, refused, rx)
    }

    fn env(text: &str) -> Envelope {
        Envelope::parse(text).expect("envelope")
    }

    #[test]
    fn counts_the_refusals_of_open_and_reopen() {
        let (tap, rx, _) = tap();
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

    #[test]
    fn what_the_node_confirms_raises_what_is_held() {
        let (tap, _, held) = tap();
        tap.handed(
            10,
            &env(r#"{"id":1,"type":"PING","from":"h://a/x","to":"h://b/y"}"#),
        );
        tap.handed(
            11,
            &env(r#"{"id":"2","type":"PING","from":"h://a/x","to":"h://b/y"}"#),
        );
        tap.handed(
            12,
            &env(r#"{"id":3,"type":"PING","from":"h://a/x","to":"h://b/y"}"#),
        );
        tap.sent(
            1,
            r#"{"id":1,"type":"PING","from":"h://a/x","to":"h://b/y","cseq":5}"#,
        );
        tap.sent(
            1,
            r#"[{"id":"2","type":"PING","from":"h://a/x","to":"h://b/y","cseq":6},{"id":3,"type":"PING","from":"h://a/x","to":"h://b/y","cseq":7}]"#,
        );
        tap.received(1, r#"{"id":"s","type":"response","from":"mn:/session","to":"r","body":{"code":200,"value":{"cseq":6}}}"#);
        assert_eq!(*held.borrow(), 11);
        tap.received(1, r#"{"id":"s","type":"response","from":"mn:/session","to":"r","body":{"code":200,"value":{"cseq":9}}}"#);
        assert_eq!(*held.borrow(), 12);
    }

    #[test]
    fn a_message_written_without_cseq_is_held_once_written() {
        let (tap, _, held) = tap();
        for (gseq, id) in [(20, 1), (21, 2), (22, 3)] {
            tap.handed(
                gseq,
                &env(&format!(
                    r#"{{"id":{id},"type":"PING","from":"h://a/x","to":"h://b/y"}}"#
                )),
            );
        }
        // Written with a cseq: waits for the other node's confirmation.
        tap.sent(
            1,
            r#"{"id":1,"type":"PING","from":"h://a/x","to":"h://b/y","cseq":4}"#,
        );
        // Without: held once written, but not over the one before it still waiting.
        tap.sent(
            1,
            r#"{"id":2,"type":"PING","from":"h://a/x","to":"h://b/y"}"#,
        );
        assert_eq!(*held.borrow(), 0);
        // Confirmed: the one written after it without a cseq is held too.
        tap.received(1, r#"{"id":"s","type":"response","from":"mn:/session","to":"r","body":{"code":200,"value":{"cseq":4}}}"#);
        assert_eq!(*held.borrow(), 21);
        tap.sent(
            1,
            r#"{"id":3,"type":"PING","from":"h://a/x","to":"h://b/y"}"#,
        );
        assert_eq!(*held.borrow(), 22);
        // A message nobody handed (the stub's own) changes nothing.
        tap.sent(
            1,
            r#"{"id":9,"type":"PING","from":"h://a/z","to":"h://b/y"}"#,
        );
        assert_eq!(*held.borrow(), 22);
    }
}
