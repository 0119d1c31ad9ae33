//! Session control messages to `mn:/session`: `open`, `re-open`, `close`, `ack`, and the bodies
//! they carry. Parsing only; the session loop acts on them.

use rethink_proto::Envelope;
use serde::Deserialize;

/// A session control request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    Open {
        token: Option<String>,
    },
    ReOpen {
        runtime_token: String,
        last_seq: u64,
    },
    Close,
    Ack {
        seq: u64,
    },
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct OpenBody {
    token: Option<String>,
}

#[derive(Deserialize)]
struct ReOpenBody {
    #[serde(rename = "runtimeToken")]
    runtime_token: String,
    #[serde(rename = "lastSeq", default)]
    last_seq: u64,
}

#[derive(Deserialize)]
struct AckBody {
    seq: u64,
}

/// Reads a control message. `Err` carries the description of a 400.
pub fn parse(env: &Envelope) -> Result<Control, String> {
    match env.kind().as_str() {
        "open" => {
            let body: OpenBody = env.body().map_err(|e| format!("open body: {e}"))?;
            Ok(Control::Open { token: body.token })
        }
        "re-open" => {
            let body: ReOpenBody = env.body().map_err(|e| format!("re-open body: {e}"))?;
            Ok(Control::ReOpen {
                runtime_token: body.runtime_token,
                last_seq: body.last_seq,
            })
        }
        "close" => Ok(Control::Close),
        "ack" => {
            let body: AckBody = env.body().map_err(|e| format!("ack body: {e}"))?;
            Ok(Control::Ack { seq: body.seq })
        }
        other => Err(format!(
            "unknown session control type {other:?} (expected open, re-open, close or ack)"
        )),
    }
}

#[derive(Deserialize)]
struct ShortAck {
    #[serde(rename = "type")]
    kind: String,
    to: String,
    body: AckBody,
}

/// The short acknowledgement form `{"type":"ack","to":"mn:/session","body":{"seq":N}}`, which
/// omits `id` and `from`. Returns its seq.
pub fn short_ack(text: &str) -> Option<u64> {
    let ack: ShortAck = serde_json::from_str(text).ok()?;
    (ack.kind == "ack" && ack.to == crate::bus::SESSION).then_some(ack.body.seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(kind: &str, body: &str) -> Envelope {
        Envelope::parse(&format!(
            r#"{{"id":1,"type":"{kind}","from":"hyperty-runtime://d/rt","to":"mn:/session","body":{body}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn reads_each_control_message() {
        assert_eq!(parse(&env("open", "{}")), Ok(Control::Open { token: None }));
        assert_eq!(
            parse(&env("re-open", r#"{"runtimeToken":"t","lastSeq":4}"#)),
            Ok(Control::ReOpen {
                runtime_token: "t".into(),
                last_seq: 4
            })
        );
        assert_eq!(
            parse(&env("ack", r#"{"seq":9}"#)),
            Ok(Control::Ack { seq: 9 })
        );
        assert_eq!(parse(&env("close", "{}")), Ok(Control::Close));
        assert!(parse(&env("ack", r#"{"seq":"x"}"#)).is_err());
        assert!(parse(&env("dance", "{}")).is_err());
    }

    #[test]
    fn accepts_the_short_ack() {
        assert_eq!(
            short_ack(r#"{"type":"ack","to":"mn:/session","body":{"seq":3}}"#),
            Some(3)
        );
        assert_eq!(
            short_ack(r#"{"type":"ack","to":"elsewhere","body":{"seq":3}}"#),
            None
        );
    }
}
