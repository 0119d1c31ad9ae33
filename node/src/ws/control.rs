//! Session control messages to `mn:/session`: `open`, `re-open`, `close`, `ack`, `sync`, and the bodies
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
        /// A credential for the re-opening connection, as `open`'s (when not in the header).
        token: Option<String>,
    },
    Close,
    Ack {
        seq: u64,
    },
    /// Asks for the highest `cseq` the node has handled for this session (answered 200 with
    /// `body.value.cseq`).
    Sync,
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
    #[serde(default)]
    token: Option<String>,
}

/// Why a control message was refused (a 400).
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{kind} body: {source}")]
    Body {
        kind: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("unknown session control type {0:?} (expected open, re-open, close, ack or sync)")]
    UnknownType(String),
}

fn body<'a, T: Deserialize<'a>>(env: &'a Envelope, kind: &'static str) -> Result<T, ControlError> {
    env.body()
        .map_err(|source| ControlError::Body { kind, source })
}

#[derive(Deserialize)]
struct AckBody {
    seq: u64,
}

/// Reads a control message.
pub fn parse(env: &Envelope) -> Result<Control, ControlError> {
    match env.kind().as_str() {
        "open" => {
            let body: OpenBody = body(env, "open")?;
            Ok(Control::Open { token: body.token })
        }
        "re-open" => {
            let body: ReOpenBody = body(env, "re-open")?;
            Ok(Control::ReOpen {
                runtime_token: body.runtime_token,
                last_seq: body.last_seq,
                token: body.token,
            })
        }
        "close" => Ok(Control::Close),
        "sync" => Ok(Control::Sync),
        "ack" => {
            let body: AckBody = body(env, "ack")?;
            Ok(Control::Ack { seq: body.seq })
        }
        other => Err(ControlError::UnknownType(other.to_owned())),
    }
}

#[derive(Deserialize)]
struct Cseq {
    cseq: Option<u64>,
}

/// The message's `cseq`, if it has one: the runtime's own increasing number for what it sends,
/// so that a message sent again (after a lost connection or a restart of the runtime's stub)
/// is recognised and handled once.
pub fn cseq(env: &Envelope) -> Option<u64> {
    let json = env.json();
    if !json.contains("\"cseq\"") {
        return None;
    }
    serde_json::from_str::<Cseq>(json).ok()?.cseq
}

#[derive(Deserialize)]
struct ShortAck {
    #[serde(rename = "type")]
    kind: String,
    to: String,
    body: AckBody,
}

/// An acknowledgement, in the short form `{"type":"ack","to":"mn:/session","body":{"seq":N}}`
/// (which omits `id` and `from`) or the full one. Returns its seq.
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
        assert_eq!(
            parse(&env("open", "{}")).ok(),
            Some(Control::Open { token: None })
        );
        assert_eq!(
            parse(&env("re-open", r#"{"runtimeToken":"t","lastSeq":4}"#)).ok(),
            Some(Control::ReOpen {
                runtime_token: "t".into(),
                last_seq: 4,
                token: None,
            })
        );
        assert_eq!(
            parse(&env("ack", r#"{"seq":9}"#)).ok(),
            Some(Control::Ack { seq: 9 })
        );
        assert_eq!(parse(&env("close", "{}")).ok(), Some(Control::Close));
        assert!(parse(&env("ack", r#"{"seq":"x"}"#)).is_err());
        assert!(matches!(
            parse(&env("dance", "{}")),
            Err(ControlError::UnknownType(t)) if t == "dance"
        ));
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
