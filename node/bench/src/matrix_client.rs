//! The Matrix Client-Server calls the scenario makes (register with
//! `m.login.dummy`, createRoom, join, send, sync), their request paths and
//! bodies, and the parsing of their answers. A benchmark message carries its
//! sequence id and send time (`bench_seq`, `bench_t`: ns since the run's epoch)
//! so that receivers recognise it and time its delivery.

use hyper::Method;
use hyper::body::Bytes;
use serde::Deserialize;
use serde_json::json;

use crate::http::{HttpConn, HttpError, encode};

/// The client API prefix.
const PREFIX: &str = "/_matrix/client/v3";
/// The sync filter: a timeline long enough that a busy room is not cut (`limited`) between
/// two syncs, and no presence.
const SYNC_FILTER: &str = r#"{"room":{"timeline":{"limit":1000},"state":{"lazy_load_members":true}},"presence":{"not_types":["*"]}}"#;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("{step}: {source}")]
    Http {
        step: &'static str,
        #[source]
        source: HttpError,
    },
    #[error("{step} answered {status} {errcode}: {error}")]
    Status {
        step: &'static str,
        status: u16,
        errcode: String,
        error: String,
    },
    #[error("{step}: unexpected answer: {detail}")]
    Parse { step: &'static str, detail: String },
}

/// A registered user and its access token.
#[derive(Debug, Clone)]
pub(crate) struct User {
    pub(crate) user_id: String,
    pub(crate) token: String,
}

/// A Matrix error body's `errcode` and `error`, if the body is one.
pub(crate) fn error_body(body: &[u8]) -> Option<(String, String)> {
    #[derive(Deserialize)]
    struct ErrorBody {
        errcode: String,
        #[serde(default)]
        error: String,
    }
    serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .map(|e| (e.errcode, e.error))
}

/// Sends a request and parses a 200 answer as `T`.
async fn call<T: for<'de> Deserialize<'de>>(
    conn: &mut HttpConn,
    step: &'static str,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: serde_json::Value,
) -> Result<T, ApiError> {
    let response = conn
        .request(method, path, token, Some(Bytes::from(body.to_string())))
        .await
        .map_err(|source| ApiError::Http { step, source })?;
    if response.status != 200 {
        let (errcode, error) = error_body(&response.body).unwrap_or_else(|| {
            (
                String::new(),
                String::from_utf8_lossy(&response.body).into_owned(),
            )
        });
        return Err(ApiError::Status {
            step,
            status: response.status,
            errcode,
            error,
        });
    }
    serde_json::from_slice(&response.body).map_err(|e| ApiError::Parse {
        step,
        detail: e.to_string(),
    })
}

/// `POST /register` with the one-stage `m.login.dummy` flow.
pub(crate) async fn register(
    conn: &mut HttpConn,
    username: &str,
    password: &str,
) -> Result<User, ApiError> {
    #[derive(Deserialize)]
    struct Registered {
        user_id: String,
        access_token: Option<String>,
    }
    let body = json!({
        "username": username,
        "password": password,
        "auth": {"type": "m.login.dummy"},
        "initial_device_display_name": "rethink-bench",
    });
    let path = format!("{PREFIX}/register");
    let r: Registered = call(conn, "register", Method::POST, &path, None, body).await?;
    let token = r.access_token.ok_or_else(|| ApiError::Parse {
        step: "register",
        detail: "no access_token".into(),
    })?;
    Ok(User {
        user_id: r.user_id,
        token,
    })
}

/// `POST /createRoom`: a public room (anyone may join by id).
pub(crate) async fn create_room(
    conn: &mut HttpConn,
    token: &str,
    name: &str,
) -> Result<String, ApiError> {
    #[derive(Deserialize)]
    struct Created {
        room_id: String,
    }
    let body = json!({"preset": "public_chat", "name": name});
    let path = format!("{PREFIX}/createRoom");
    let created: Created = call(conn, "createRoom", Method::POST, &path, Some(token), body).await?;
    Ok(created.room_id)
}

/// `POST /rooms/{roomId}/join`.
pub(crate) async fn join(conn: &mut HttpConn, token: &str, room_id: &str) -> Result<(), ApiError> {
    let path = format!("{PREFIX}/rooms/{}/join", encode(room_id));
    let _: serde_json::Value =
        call(conn, "join", Method::POST, &path, Some(token), json!({})).await?;
    Ok(())
}

/// The path of `PUT /rooms/{roomId}/send/m.room.message/{txnId}`.
pub(crate) fn send_path(room_id: &str, txn_id: &str) -> String {
    format!(
        "{PREFIX}/rooms/{}/send/m.room.message/{}",
        encode(room_id),
        encode(txn_id)
    )
}

/// The content of benchmark message `seq`, sent at `t_ns`.
pub(crate) fn message_body(seq: u64, t_ns: u64) -> Bytes {
    Bytes::from(format!(
        r#"{{"msgtype":"m.text","body":"rethink-bench {seq}","bench_seq":{seq},"bench_t":{t_ns}}}"#
    ))
}

/// The `event_id` of a send's 200 answer.
pub(crate) fn event_id(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Sent {
        event_id: String,
    }
    serde_json::from_slice::<Sent>(body)
        .ok()
        .map(|s| s.event_id)
}

/// The path and query of `GET /sync` with the bench's filter and a timeout, encoded once:
/// a receiver makes thousands of syncs a second, each adding only its `since`.
#[derive(Debug, Clone)]
pub(crate) struct SyncPath {
    without_since: String,
}

impl SyncPath {
    pub(crate) fn new(timeout_ms: u64) -> Self {
        SyncPath {
            without_since: format!(
                "{PREFIX}/sync?timeout={timeout_ms}&filter={}",
                encode(SYNC_FILTER)
            ),
        }
    }

    /// The path of a sync from `since` (none: an initial sync).
    pub(crate) fn path(&self, since: Option<&str>) -> String {
        match since {
            None => self.without_since.clone(),
            Some(since) => {
                let since = encode(since);
                let mut path = String::with_capacity(self.without_since.len() + 7 + since.len());
                path.push_str(&self.without_since);
                path.push_str("&since=");
                path.push_str(&since);
                path
            }
        }
    }
}

/// A benchmark message found in a sync response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Delivered {
    pub(crate) seq: u64,
    pub(crate) t_ns: u64,
    /// Sent by the syncing user itself.
    pub(crate) own: bool,
}

/// What one sync response brought.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct SyncBatch {
    pub(crate) next_batch: String,
    pub(crate) messages: Vec<Delivered>,
    /// Joined rooms whose timeline was cut (`limited`): events may have been skipped.
    pub(crate) limited: u32,
}

/// Parses a sync response of `user_id`: the next token, the benchmark messages of the
/// joined rooms' timelines, and how many timelines were cut.
pub(crate) fn parse_sync(body: &[u8], user_id: &str) -> Result<SyncBatch, serde_json::Error> {
    #[derive(Deserialize)]
    struct Sync {
        next_batch: String,
        #[serde(default)]
        rooms: Rooms,
    }
    #[derive(Deserialize, Default)]
    struct Rooms {
        #[serde(default)]
        join: std::collections::HashMap<String, Joined>,
    }
    #[derive(Deserialize)]
    struct Joined {
        #[serde(default)]
        timeline: Timeline,
    }
    #[derive(Deserialize, Default)]
    struct Timeline {
        #[serde(default)]
        events: Vec<Event>,
        #[serde(default)]
        limited: bool,
    }
    #[derive(Deserialize)]
    struct Event {
        #[serde(default)]
        sender: String,
        #[serde(default)]
        content: Content,
    }
    #[derive(Deserialize, Default)]
    struct Content {
        bench_seq: Option<u64>,
        bench_t: Option<u64>,
    }
    let sync: Sync = serde_json::from_slice(body)?;
    let mut batch = SyncBatch {
        next_batch: sync.next_batch,
        ..SyncBatch::default()
    };
    for room in sync.rooms.join.into_values() {
        batch.limited += u32::from(room.timeline.limited);
        for event in room.timeline.events {
            if let (Some(seq), Some(t_ns)) = (event.content.bench_seq, event.content.bench_t) {
                batch.messages.push(Delivered {
                    seq,
                    t_ns,
                    own: event.sender == user_id,
                });
            }
        }
    }
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_response_is_parsed() {
        let body = json!({
            "next_batch": "s42_1",
            "rooms": {"join": {
                "!a:x": {"timeline": {"limited": true, "events": [
                    {"type": "m.room.member", "sender": "@u1:x", "content": {"membership": "join"}},
                    {"type": "m.room.message", "sender": "@u1:x",
                     "content": {"msgtype": "m.text", "body": "b", "bench_seq": 7, "bench_t": 1000}},
                    {"type": "m.room.message", "sender": "@u2:x",
                     "content": {"msgtype": "m.text", "body": "b", "bench_seq": 8, "bench_t": 2000}},
                ]}},
                "!b:x": {"state": {"events": []}},
            }, "invite": {}},
            "account_data": {"events": []},
        })
        .to_string();
        let batch = parse_sync(body.as_bytes(), "@u2:x").expect("parses");
        assert_eq!(batch.next_batch, "s42_1");
        assert_eq!(batch.limited, 1);
        assert_eq!(
            batch.messages,
            vec![
                Delivered {
                    seq: 7,
                    t_ns: 1000,
                    own: false
                },
                Delivered {
                    seq: 8,
                    t_ns: 2000,
                    own: true
                },
            ]
        );
        let empty = parse_sync(br#"{"next_batch":"s1"}"#, "@u:x").expect("parses");
        assert!(empty.messages.is_empty());
    }

    #[test]
    fn message_body_round_trips() {
        let body = message_body(12, 34_000);
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["bench_seq"], 12);
        assert_eq!(v["bench_t"], 34_000);
        assert_eq!(v["msgtype"], "m.text");
    }

    #[test]
    fn paths_are_encoded() {
        assert_eq!(
            send_path("!r:bench.local", "t1-2"),
            "/_matrix/client/v3/rooms/%21r%3Abench.local/send/m.room.message/t1-2"
        );
        let sync = SyncPath::new(30_000);
        let since = sync.path(Some("s5_0"));
        assert!(since.starts_with("/_matrix/client/v3/sync?timeout=30000&filter=%7B"));
        assert!(since.ends_with("%7D&since=s5_0"));
        assert_eq!(sync.path(None), since.trim_end_matches("&since=s5_0"));
        assert_eq!(
            error_body(br#"{"errcode":"M_FORBIDDEN","error":"no"}"#),
            Some(("M_FORBIDDEN".into(), "no".into()))
        );
        assert_eq!(event_id(br#"{"event_id":"$e"}"#), Some("$e".into()));
    }
}
