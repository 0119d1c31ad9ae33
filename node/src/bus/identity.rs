//! Identity assertions: a message may claim who sent it in `body.identity` (a user URL, or an
//! object with `userURL` / `userProfile.userURL`). The node sets `body.assertedIdentity` to
//! `true` only when the claim is the identity the sender's session proved (static token, JWT),
//! and to `false` otherwise, overwriting whatever the sender wrote, so receivers can trust it.
//! Messages that mention neither field pass untouched (the body is only searched, not parsed).

use rethink_proto::Envelope;
use serde_json::{Map, Value};

use super::Origin;

/// The user a `body.identity` value claims.
fn claimed(identity: &Value) -> Option<&str> {
    match identity {
        Value::String(s) => Some(s),
        Value::Object(o) => o
            .get("userURL")
            .or_else(|| o.get("userProfile").and_then(|p| p.get("userURL")))
            .and_then(Value::as_str),
        _ => None,
    }
}

/// Returns the message with `body.assertedIdentity` set, or `None` when it needs no change.
pub fn stamp(env: &Envelope, origin: &Origin) -> Option<Envelope> {
    let body = env.body_json()?;
    if !body.contains("\"identity\"") && !body.contains("\"assertedIdentity\"") {
        return None;
    }
    let mut map: Map<String, Value> = serde_json::from_str(body).ok()?;
    let proven = origin
        .session()
        .and_then(|s| s.identity().subject.as_deref());
    let asserted = match (map.get("identity").and_then(claimed), proven) {
        (Some(claim), Some(proven)) => claim == proven,
        _ => false,
    };
    if map.get("assertedIdentity") == Some(&Value::Bool(asserted)) {
        return None;
    }
    map.insert("assertedIdentity".into(), Value::Bool(asserted));
    let text = serde_json::to_string(&map).ok()?;
    env.with_body(&text).ok()
}
