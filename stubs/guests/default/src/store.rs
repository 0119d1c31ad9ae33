//! What the stub keeps in its host's key-value store so that a restarted instance loses
//! nothing: the messages for the node not yet confirmed handled (`out/<cseq>`, one record per
//! message, written before the message is taken), and the session record (`session`: the
//! `runtimeToken` and `lastSeq` to resume with, the highest `cseq` the node confirmed, and the
//! highest host queue position taken, `g`).
//!
//! `g` is the gateway's contract (the node's `crossdomain/gateway.rs`): a host that feeds the
//! stub from a persisted queue numbers each message with a top-level `gseq`; any record this
//! stub stores with a top-level `"g": N` says it durably holds every message up to N, so the
//! host may drop them from its own queue. A message whose `gseq` is not above the highest
//! taken is a replay (the host restarted before it learnt that) and is not taken again.

use rethink_guest_envelope::Msg;
use serde_json::Value;

use crate::io::{Failure, Io};

/// The kv key holding the resumable session.
pub(crate) const SAVED_KEY: &str = "session";
/// The prefix of the stored messages' keys.
const OUT_PREFIX: &str = "out/";

/// A message for the node, numbered with its `cseq` (also in its extra fields).
#[derive(Debug, Clone)]
pub(crate) struct Out {
    pub(crate) cseq: u64,
    pub(crate) msg: Msg,
    /// `msg`'s JSON text (as stored and as written to the node), made once.
    pub(crate) text: String,
    /// When it was taken (ms since the Unix epoch).
    pub(crate) taken_ms: u64,
}

fn key(cseq: u64) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut key = String::with_capacity(OUT_PREFIX.len() + 16);
    key.push_str(OUT_PREFIX);
    for shift in (0..16).rev() {
        key.push(char::from(
            HEX[usize::try_from((cseq >> (shift * 4)) & 0xf).unwrap_or(0)],
        ));
    }
    key
}

/// Stores `out` (with `g`, the host queue position it came with, if any).
pub(crate) fn put(io: &mut dyn Io, out: &Out, g: Option<u64>) -> Result<(), Failure> {
    let (t, m) = (out.taken_ms, &out.text);
    let value = match g {
        Some(g) => format!("{{\"g\":{g},\"t\":{t},\"m\":{m}}}"),
        None => format!("{{\"t\":{t},\"m\":{m}}}"),
    };
    io.kv_set(&key(out.cseq), value.as_bytes())
}

/// Forgets the stored message `cseq`.
pub(crate) fn remove(io: &mut dyn Io, cseq: u64) {
    io.kv_delete(&key(cseq));
}

/// The stored messages in `cseq` order (at most `max`), and the highest `g` among them.
pub(crate) fn load(io: &mut dyn Io, max: usize) -> (Vec<Out>, u64) {
    let mut outs = Vec::new();
    let mut g_max = 0;
    let limit = u32::try_from(max).unwrap_or(u32::MAX);
    for k in io.kv_keys(OUT_PREFIX, limit) {
        let Some(cseq) = k
            .strip_prefix(OUT_PREFIX)
            .and_then(|h| u64::from_str_radix(h, 16).ok())
        else {
            continue;
        };
        let Some(bytes) = io.kv_get(&k) else { continue };
        let record = serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null);
        let Ok(msg) = Msg::parse(&record["m"].to_string()) else {
            io.log(
                crate::io::Level::Error,
                &format!("dropped an unreadable stored message {k}"),
            );
            io.kv_delete(&k);
            continue;
        };
        g_max = g_max.max(record["g"].as_u64().unwrap_or(0));
        let taken_ms = record["t"].as_u64().unwrap_or(0);
        outs.push(Out {
            cseq,
            text: msg.to_json(),
            msg,
            taken_ms,
        });
    }
    (outs, g_max)
}
