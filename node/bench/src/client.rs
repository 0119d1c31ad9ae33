//! One simulated hyperty runtime on the WebSocket bus: the frames it sends
//! (open, address allocation, PING, ack, close), the parsing of what the node
//! sends, and the opening handshake over tokio-tungstenite.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A client WebSocket connection to the node.
pub(crate) type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Ids of PING messages start here; control messages (open, allocate, ack,
/// close) use small ids, so an error response tells which kind it answers.
pub(crate) const PING_ID_BASE: u64 = 1 << 32;

/// The session control address.
const SESSION: &str = "mn:/session";

/// How long the node gets for the WebSocket handshake, and to answer `open`
/// and the address allocation.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a session could not be opened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    #[error(
        "too many open files (EMFILE) while connecting: raise the limit, e.g. `ulimit -n 65536`"
    )]
    TooManyOpenFiles,
    #[error("cannot connect to {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: tungstenite::Error,
    },
    #[error("WebSocket error during `{step}`: {source}")]
    Ws {
        step: &'static str,
        #[source]
        source: tungstenite::Error,
    },
    #[error("no response to `{0}` within {1:?}")]
    Timeout(&'static str, Duration),
    #[error("the node closed the connection during `{0}`")]
    Closed(&'static str),
    #[error("`{step}` refused with {code}: {description}")]
    Refused {
        step: &'static str,
        code: u16,
        description: String,
    },
    #[error("unexpected response to `{step}`: {detail}")]
    Protocol { step: &'static str, detail: String },
}

impl ClientError {
    fn connect(url: &str, source: tungstenite::Error) -> Self {
        let emfile = matches!(&source, tungstenite::Error::Io(e) if is_emfile(e));
        if emfile {
            ClientError::TooManyOpenFiles
        } else {
            ClientError::Connect {
                url: url.to_owned(),
                source,
            }
        }
    }
}

fn is_emfile(e: &io::Error) -> bool {
    // EMFILE (per process) and ENFILE (system wide) on Linux.
    matches!(e.raw_os_error(), Some(24 | 23))
}

/// The runtime URL of runtime `id` in `domain`.
pub(crate) fn runtime_url(domain: &str, id: &str) -> String {
    format!("hyperty-runtime://{domain}/{id}")
}

/// `open` from the runtime to `mn:/session`.
pub(crate) fn open_frame(id: u64, runtime_url: &str) -> String {
    json!({"id": id, "type": "open", "from": runtime_url, "to": SESSION, "body": {}}).to_string()
}

/// A request for one hyperty address.
pub(crate) fn allocate_frame(id: u64, runtime_url: &str, domain: &str) -> String {
    json!({
        "id": id,
        "type": "create",
        "from": format!("{runtime_url}/registry/allocation"),
        "to": format!("domain://msg-node.{domain}/address-allocation"),
        "body": {"scheme": "hyperty", "value": {"number": 1}},
    })
    .to_string()
}

/// Cumulative acknowledgement of everything up to `seq`.
pub(crate) fn ack_frame(id: u64, runtime_url: &str, seq: u64) -> String {
    json!({"id": id, "type": "ack", "from": runtime_url, "to": SESSION, "body": {"seq": seq}})
        .to_string()
}

/// Clean end of the session.
pub(crate) fn close_frame(id: u64, runtime_url: &str) -> String {
    json!({"id": id, "type": "close", "from": runtime_url, "to": SESSION, "body": {}}).to_string()
}

/// Builds PING messages from one hyperty to another, padded to about `size` bytes.
#[derive(Debug, Clone)]
pub(crate) struct PingTemplate {
    /// `,"type":"PING","from":..,"to":..,"body":{"t":`
    head: String,
    /// `,"pad":"xxx"}}`
    tail: String,
}

/// Between the scheduled and the actual send time in a PING body.
const PING_MID: &str = r#","s":"#;

impl PingTemplate {
    pub(crate) fn new(from: &str, to: &str, size: usize) -> Self {
        let from = Value::from(from);
        let to = Value::from(to);
        let head = format!(r#","type":"PING","from":{from},"to":{to},"body":{{"t":"#);
        // `{"id":` + a typical id (10 digits) + head + a typical t (11 digits)
        // + `,"s":` + a typical s (11 digits) + `,"pad":""}}`
        let overhead = 6 + 10 + head.len() + 11 + PING_MID.len() + 11 + 11;
        let pad = size.saturating_sub(overhead);
        let tail = format!(r#","pad":"{}"}}}}"#, "x".repeat(pad));
        PingTemplate { head, tail }
    }

    /// Appends one message to `out`: `t_ns` is its scheduled send time, `s_ns`
    /// the actual one (both in ns since the run's start; equal without a timetable).
    pub(crate) fn write(&self, out: &mut String, id: u64, t_ns: u64, s_ns: u64) {
        // Writing to a String cannot fail.
        let _ = write!(
            out,
            r#"{{"id":{id}{}{t_ns}{PING_MID}{s_ns}{}"#,
            self.head, self.tail
        );
    }

    /// One frame of `ids.len()` messages: a plain object for one, an array otherwise.
    /// `t_ns` and `s_ns` as for [`PingTemplate::write`].
    pub(crate) fn frame(&self, ids: std::ops::Range<u64>, t_ns: u64, s_ns: u64) -> String {
        let n = (ids.end - ids.start) as usize;
        let mut out = String::with_capacity(n * (self.head.len() + self.tail.len() + 48) + 2);
        if n == 1 {
            self.write(&mut out, ids.start, t_ns, s_ns);
            return out;
        }
        out.push('[');
        for (i, id) in ids.enumerate() {
            if i > 0 {
                out.push(',');
            }
            self.write(&mut out, id, t_ns, s_ns);
        }
        out.push(']');
        out
    }
}

/// What one message from the node means to the load generator.
#[derive(Debug, PartialEq)]
pub(crate) enum Event<'a> {
    /// A PING scheduled for `t_ns` and actually sent at `s_ns` (both since
    /// the run's start; `s_ns == t_ns` when the sender gave no actual time).
    Ping { t_ns: u64, s_ns: u64 },
    /// A response; `id` when numeric.
    Response {
        code: u16,
        id: Option<u64>,
        description: Option<Cow<'a, str>>,
    },
    /// Anything else (other types, or a PING without a readable `t`).
    Other,
}

/// One message of a frame from the node.
#[derive(Debug, PartialEq)]
pub(crate) struct Inbound<'a> {
    pub(crate) seq: Option<u64>,
    pub(crate) event: Event<'a>,
}

#[derive(Deserialize)]
struct RawInbound<'a> {
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default, borrow)]
    id: Option<&'a RawValue>,
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    body: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct PingBody {
    t: u64,
    #[serde(default)]
    s: Option<u64>,
}

#[derive(Deserialize)]
struct ResponseBody<'a> {
    code: u16,
    #[serde(default, borrow)]
    description: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    desc: Option<Cow<'a, str>>,
}

impl<'a> RawInbound<'a> {
    fn into_inbound(self) -> Inbound<'a> {
        let event = match (&*self.kind, self.body) {
            ("PING", Some(body)) => match serde_json::from_str::<PingBody>(body.get()) {
                Ok(b) => Event::Ping {
                    t_ns: b.t,
                    s_ns: b.s.unwrap_or(b.t),
                },
                Err(_) => Event::Other,
            },
            ("response", Some(body)) => {
                match serde_json::from_str::<ResponseBody<'a>>(body.get()) {
                    Ok(b) => Event::Response {
                        code: b.code,
                        id: self.id.and_then(|id| id.get().parse().ok()),
                        description: b.description.or(b.desc),
                    },
                    Err(_) => Event::Other,
                }
            }
            _ => Event::Other,
        };
        Inbound {
            seq: self.seq,
            event,
        }
    }
}

/// Calls `f` for every message of a text frame (one object, or an array of them).
pub(crate) fn for_each_message<'a>(
    text: &'a str,
    mut f: impl FnMut(Inbound<'a>),
) -> Result<(), serde_json::Error> {
    if text.trim_start().starts_with('[') {
        let batch: Vec<RawInbound<'a>> = serde_json::from_str(text)?;
        batch.into_iter().for_each(|m| f(m.into_inbound()));
    } else {
        f(serde_json::from_str::<RawInbound<'a>>(text)?.into_inbound());
    }
    Ok(())
}

/// An open session with one allocated hyperty address.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) ws: WsStream,
    pub(crate) runtime_url: String,
    pub(crate) hyperty: String,
    /// Highest `seq` received so far (not yet acknowledged).
    pub(crate) last_seq: u64,
}

/// Connects, opens the session as runtime `runtime_id` and allocates one hyperty address.
pub(crate) async fn open_session(
    url: &str,
    domain: &str,
    runtime_id: &str,
) -> Result<Session, ClientError> {
    // A node that cannot accept (e.g. out of descriptors itself) leaves the
    // handshake hanging in its backlog: bound it.
    let connect = tokio_tungstenite::connect_async_with_config(url, None, true);
    let (mut ws, _) = tokio::time::timeout(HANDSHAKE_TIMEOUT, connect)
        .await
        .map_err(|_| ClientError::Timeout("connect", HANDSHAKE_TIMEOUT))?
        .map_err(|e| ClientError::connect(url, e))?;
    let runtime_url = runtime_url(domain, runtime_id);
    let mut last_seq = 0;

    send(&mut ws, "open", open_frame(1, &runtime_url)).await?;
    let body = request_response(&mut ws, "open", 1, &mut last_seq).await?;
    check_code("open", &body)?;

    send(&mut ws, "allocate", allocate_frame(2, &runtime_url, domain)).await?;
    let body = request_response(&mut ws, "allocate", 2, &mut last_seq).await?;
    check_code("allocate", &body)?;
    let hyperty = allocated_address(&body)
        .ok_or_else(|| ClientError::Protocol {
            step: "allocate",
            detail: format!("no body.value.allocated[0] string in {body}"),
        })?
        .to_owned();

    Ok(Session {
        ws,
        runtime_url,
        hyperty,
        last_seq,
    })
}

async fn send(ws: &mut WsStream, step: &'static str, text: String) -> Result<(), ClientError> {
    ws.send(Message::text(text))
        .await
        .map_err(|source| ClientError::Ws { step, source })
}

/// The first allocated address of an allocation response body.
pub(crate) fn allocated_address(body: &Value) -> Option<&str> {
    body.pointer("/value/allocated/0")?.as_str()
}

fn check_code(step: &'static str, body: &Value) -> Result<(), ClientError> {
    let code = body
        .get("code")
        .and_then(Value::as_u64)
        .ok_or_else(|| ClientError::Protocol {
            step,
            detail: format!("no numeric body.code in {body}"),
        })?;
    if (200..300).contains(&code) {
        return Ok(());
    }
    let description = ["description", "desc"]
        .iter()
        .find_map(|k| body.get(*k).and_then(Value::as_str))
        .unwrap_or("(no description)")
        .to_owned();
    Err(ClientError::Refused {
        step,
        code: u16::try_from(code).unwrap_or(u16::MAX),
        description,
    })
}

/// Reads frames until the response with `id`; returns its body. Other messages
/// are skipped; every `seq` seen raises `last_seq`.
async fn request_response(
    ws: &mut WsStream,
    step: &'static str,
    id: u64,
    last_seq: &mut u64,
) -> Result<Value, ClientError> {
    let wait = async {
        loop {
            let text = match ws.next().await {
                None => return Err(ClientError::Closed(step)),
                Some(Err(source)) => return Err(ClientError::Ws { step, source }),
                Some(Ok(Message::Text(t))) => t.as_str().to_owned(),
                Some(Ok(Message::Binary(b))) => String::from_utf8_lossy(&b).into_owned(),
                Some(Ok(Message::Close(_))) => return Err(ClientError::Closed(step)),
                Some(Ok(_)) => continue,
            };
            let value: Value = serde_json::from_str(&text).map_err(|e| ClientError::Protocol {
                step,
                detail: format!("not JSON ({e}): {text}"),
            })?;
            let messages = match value {
                Value::Array(items) => items,
                other => vec![other],
            };
            let mut found = None;
            for mut m in messages {
                if let Some(seq) = m.get("seq").and_then(Value::as_u64) {
                    *last_seq = (*last_seq).max(seq);
                }
                let is_answer = m.get("type").and_then(Value::as_str) == Some("response")
                    && m.get("id").and_then(Value::as_u64) == Some(id);
                if is_answer && found.is_none() {
                    found = Some(m.get_mut("body").map(Value::take).unwrap_or(Value::Null));
                }
            }
            if let Some(body) = found {
                return Ok(body);
            }
        }
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, wait)
        .await
        .unwrap_or(Err(ClientError::Timeout(step, HANDSHAKE_TIMEOUT)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Value {
        serde_json::from_str(text).expect("valid JSON")
    }

    #[test]
    fn open_frame_matches_protocol() {
        let v = parse(&open_frame(1, "hyperty-runtime://bench.local/rt-1"));
        assert_eq!(
            v,
            json!({"id": 1, "type": "open", "from": "hyperty-runtime://bench.local/rt-1",
                   "to": "mn:/session", "body": {}})
        );
    }

    #[test]
    fn allocate_frame_matches_protocol() {
        let v = parse(&allocate_frame(2, "hyperty-runtime://d/rt", "d"));
        assert_eq!(v["type"], "create");
        assert_eq!(v["from"], "hyperty-runtime://d/rt/registry/allocation");
        assert_eq!(v["to"], "domain://msg-node.d/address-allocation");
        assert_eq!(
            v["body"],
            json!({"scheme": "hyperty", "value": {"number": 1}})
        );
    }

    #[test]
    fn ack_and_close_frames() {
        let v = parse(&ack_frame(7, "hyperty-runtime://d/rt", 42));
        assert_eq!(
            v,
            json!({"id": 7, "type": "ack", "from": "hyperty-runtime://d/rt",
                   "to": "mn:/session", "body": {"seq": 42}})
        );
        let v = parse(&close_frame(8, "hyperty-runtime://d/rt"));
        assert_eq!(v["type"], "close");
        assert_eq!(v["to"], "mn:/session");
    }

    #[test]
    fn ping_message_has_fields_and_size() {
        let from = "hyperty://bench.local/5f0c1a9e-2b7d-4a55-9a7e-0d4f6b1e2c3a";
        let to = "hyperty://bench.local/7a1d2e3f-4b5c-6d7e-8f90-a1b2c3d4e5f6";
        // The smallest message here (no padding) is about 215 bytes.
        for size in [256usize, 1000, 4096] {
            let t = PingTemplate::new(from, to, size);
            let frame = t.frame(
                PING_ID_BASE + 12..PING_ID_BASE + 13,
                12_345_678_901,
                12_345_999_999,
            );
            let v = parse(&frame);
            assert_eq!(v["id"], PING_ID_BASE + 12);
            assert_eq!(v["type"], "PING");
            assert_eq!(v["from"], from);
            assert_eq!(v["to"], to);
            assert_eq!(v["body"]["t"], 12_345_678_901u64);
            assert_eq!(v["body"]["s"], 12_345_999_999u64);
            assert!(v["body"]["pad"].is_string());
            assert!(
                frame.len().abs_diff(size) <= 4,
                "size {size}: got {}",
                frame.len()
            );
        }
        // Too small a size: no padding, still valid.
        let frame = PingTemplate::new(from, to, 10).frame(1..2, 0, 3);
        let v = parse(&frame);
        assert_eq!(v["body"], json!({"t": 0, "s": 3, "pad": ""}));
    }

    #[test]
    fn ping_batch_is_an_array() {
        let t = PingTemplate::new("hyperty://d/a", "hyperty://d/b", 100);
        let v = parse(&t.frame(10..13, 5, 8));
        let items = v.as_array().expect("array");
        assert_eq!(items.len(), 3);
        assert_eq!(items[0]["id"], 10);
        assert_eq!(items[2]["id"], 12);
        assert!(items.iter().all(|m| m["body"]["t"] == 5));
        assert!(items.iter().all(|m| m["body"]["s"] == 8));
    }

    #[test]
    fn received_ping_is_parsed() {
        let t = PingTemplate::new("hyperty://d/a", "hyperty://d/b", 300);
        let sent = t.frame(PING_ID_BASE..PING_ID_BASE + 1, 987_654, 990_321);
        // The node inserts `"seq":N,` first.
        let received = format!(r#"{{"seq":17,{}"#, &sent[1..]);
        let mut got = Vec::new();
        for_each_message(&received, |m| got.push(m)).expect("parses");
        assert_eq!(
            got,
            vec![Inbound {
                seq: Some(17),
                event: Event::Ping {
                    t_ns: 987_654,
                    s_ns: 990_321
                }
            }]
        );
    }

    #[test]
    fn batch_frame_and_responses_are_parsed() {
        let text = r#"[
            {"seq":3,"id":4294967297,"type":"response","from":"hyperty://d/b","to":"hyperty://d/a",
             "body":{"code":503,"description":"outbox full"}},
            {"seq":4,"id":9,"type":"response","from":"mn:/session","to":"x","body":{"code":404,"desc":"gone"}},
            {"seq":5,"id":"abc","type":"response","from":"mn:/session","to":"x","body":{"code":200,"value":{}}},
            {"seq":6,"type":"PING","from":"a","to":"b","body":{"t":55,"pad":"x"},"extra":[1,2]},
            {"seq":7,"type":"update","from":"a","to":"b"},
            {"seq":8,"type":"PING","from":"a","to":"b","body":{"t":60,"s":61,"pad":""}},
            {"seq":9,"type":"PING","from":"a","to":"b","body":{"s":61,"pad":""}}
        ]"#;
        let mut got = Vec::new();
        for_each_message(text, |m| got.push(m)).expect("parses");
        assert_eq!(got.len(), 7);
        assert_eq!(
            got[0].event,
            Event::Response {
                code: 503,
                id: Some(PING_ID_BASE + 1),
                description: Some("outbox full".into())
            }
        );
        assert_eq!(
            got[1].event,
            Event::Response {
                code: 404,
                id: Some(9),
                description: Some("gone".into())
            }
        );
        assert_eq!(
            got[2].event,
            Event::Response {
                code: 200,
                id: None,
                description: None
            }
        );
        assert_eq!(
            got[3],
            Inbound {
                seq: Some(6),
                // No `s` (an older sender): the actual send time is taken to be `t`.
                event: Event::Ping { t_ns: 55, s_ns: 55 }
            }
        );
        assert_eq!(
            got[4],
            Inbound {
                seq: Some(7),
                event: Event::Other
            }
        );
        assert_eq!(got[5].event, Event::Ping { t_ns: 60, s_ns: 61 });
        // A PING without `t` is not measured.
        assert_eq!(got[6].event, Event::Other);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(for_each_message("not json", |_| {}).is_err());
        assert!(
            for_each_message(r#"{"seq":1}"#, |_| {}).is_err(),
            "type is required"
        );
    }

    #[test]
    fn allocation_response_is_read() {
        let body = json!({"code": 200, "value": {"allocated": ["hyperty://d/123"]}});
        assert_eq!(allocated_address(&body), Some("hyperty://d/123"));
        assert!(check_code("allocate", &body).is_ok());
        let refused = json!({"code": 403, "description": "no"});
        assert!(matches!(
            check_code("open", &refused),
            Err(ClientError::Refused { code: 403, .. })
        ));
    }

    #[test]
    fn emfile_is_recognised() {
        let e = tungstenite::Error::Io(io::Error::from_raw_os_error(24));
        assert!(matches!(
            ClientError::connect("ws://x", e),
            ClientError::TooManyOpenFiles
        ));
        let e = tungstenite::Error::Io(io::Error::from_raw_os_error(111));
        assert!(matches!(
            ClientError::connect("ws://x", e),
            ClientError::Connect { .. }
        ));
    }
}
