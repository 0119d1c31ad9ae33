//! Frames of the node's session protocol as the stub reads and writes them: one message or a
//! batch per text frame, control messages to `mn:/session`, and `body.via` (loop prevention).

use std::collections::BTreeMap;

use rethink_guest_envelope::{Msg, push_str_json};
use serde_json::Value;
use serde_json::value::RawValue;

/// The node's session control address.
pub(crate) const SESSION: &str = "mn:/session";

/// The messages of one text frame: an object, or an array of them (a batch).
pub(crate) fn parse(text: &str) -> Result<Vec<Msg>, String> {
    if text.trim_start().starts_with('[') {
        let batch: Vec<&RawValue> = serde_json::from_str(text).map_err(|e| e.to_string())?;
        batch
            .into_iter()
            .map(|raw| Msg::parse(raw.get()).map_err(|e| e.to_string()))
            .collect()
    } else {
        Msg::parse(text).map(|m| vec![m]).map_err(|e| e.to_string())
    }
}

/// A session control message (`open`, `re-open`, `ack`, `close`) from `runtime`.
pub(crate) fn control(id: &str, kind: &str, runtime: &str, body: Value) -> Msg {
    Msg {
        id: id.to_owned(),
        kind: kind.to_owned(),
        from: runtime.to_owned(),
        to: vec![SESSION.to_owned()],
        body: Some(body.to_string()),
        extra: None,
    }
}

/// Whether `body` (an object's JSON text) may have a `via` field: a key `via` is written
/// `"via"` unless escaped, and an escape needs a backslash. Most bodies have neither and are
/// not parsed.
fn may_have_via(body: &str) -> bool {
    let bytes = body.as_bytes();
    bytes.contains(&b'\\') || bytes.windows(5).any(|w| w == b"\"via\"")
}

/// The message's `body.via`, if it has one.
pub(crate) fn via(msg: &Msg) -> Option<String> {
    let body = msg.body.as_deref()?;
    if !may_have_via(body) {
        return None;
    }
    let fields: BTreeMap<String, Box<RawValue>> = serde_json::from_str(body).ok()?;
    serde_json::from_str(fields.get("via")?.get()).ok()
}

/// Sets `body.via` to `stub`. The rest of the body keeps its text when it had no `via`
/// (otherwise its fields are rewritten in key order, each value's text unchanged). The body is
/// an object's JSON text (as [`Msg::parse`] and the host's envelope guarantee).
pub(crate) fn set_via(msg: &mut Msg, stub: &str) {
    let mut via = String::with_capacity(stub.len() + 2);
    push_str_json(&mut via, stub);
    let Some(body) = msg.body.as_deref() else {
        msg.body = Some(format!("{{\"via\":{via}}}"));
        return;
    };
    if !may_have_via(body) {
        msg.body = Some(with_via_first(&via, body));
        return;
    }
    let Ok(mut fields) = serde_json::from_str::<BTreeMap<String, Box<RawValue>>>(body) else {
        return;
    };
    if fields.contains_key("via") {
        if let Ok(raw) = RawValue::from_string(via) {
            fields.insert("via".to_owned(), raw);
        }
        let text = serde_json::to_string(&fields).unwrap_or_else(|_| body.to_owned());
        msg.body = Some(text);
    } else {
        msg.body = Some(with_via_first(&via, body));
    }
}

/// `body` (an object's text) with `"via":<via>` as its first field, the rest as it was.
fn with_via_first(via: &str, body: &str) -> String {
    let rest = body.trim_start().trim_start_matches('{').trim_start();
    let sep = if rest.starts_with('}') { "" } else { "," };
    let mut out = String::with_capacity(via.len() + rest.len() + 9);
    out.push_str("{\"via\":");
    out.push_str(via);
    out.push_str(sep);
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(body: Option<&str>) -> Msg {
        Msg {
            id: "1".into(),
            kind: "update".into(),
            from: "a://d/x".into(),
            to: vec!["b://d/y".into()],
            body: body.map(str::to_owned),
            extra: None,
        }
    }

    #[test]
    fn via_is_added_or_replaced() {
        let mut m = msg(Some(r#"{ "x": 1.50 }"#));
        set_via(&mut m, "s://d/stub");
        assert_eq!(
            m.body.as_deref(),
            Some(r#"{"via":"s://d/stub","x": 1.50 }"#)
        );
        assert_eq!(via(&m).as_deref(), Some("s://d/stub"));
        let mut m = msg(Some(r#"{"via":"other://x","b":[1]}"#));
        set_via(&mut m, "s://d/stub");
        assert_eq!(m.body.as_deref(), Some(r#"{"b":[1],"via":"s://d/stub"}"#));
        let mut m = msg(Some("{}"));
        set_via(&mut m, "s");
        assert_eq!(m.body.as_deref(), Some(r#"{"via":"s"}"#));
        let mut m = msg(None);
        set_via(&mut m, "s");
        assert_eq!(via(&m).as_deref(), Some("s"));
        // A key written with an escape is still `via` (read and replaced).
        let mut m = msg(Some(r#"{"\u0076ia":"s://d/stub","n":1}"#));
        assert_eq!(via(&m).as_deref(), Some("s://d/stub"));
        set_via(&mut m, "t");
        assert_eq!(m.body.as_deref(), Some(r#"{"n":1,"via":"t"}"#));
        assert_eq!(via(&msg(Some(r#"{"n":"via"}"#))), None);
    }

    #[test]
    fn batches_are_read_in_order() {
        let got = parse(r#"[{"id":1,"type":"a","from":"x://d/a","to":"y://d/b","seq":5},{"id":2,"type":"b","from":"x://d/a","to":"y://d/b"}]"#)
            .expect("a batch");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].extra.as_deref(), Some(r#"{"seq":5}"#));
        assert_eq!(got[1].kind, "b");
        assert!(parse("[1]").is_err());
        assert!(parse("nope").is_err());
    }
}
