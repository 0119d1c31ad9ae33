//! The probe's commands (`op`s), each running one or more host imports, and the bodies of its
//! network reports. The table of commands is in the crate docs.

use rethink_guest_envelope::Msg;
use serde_json::{Map, Value, json};

use crate::bindings::rethink::stub::net_events::NetEvent;
use crate::bindings::rethink::stub::types::Failure;
use crate::bindings::rethink::stub::{bus, host, net};
use crate::{Route, message_json, to_envelope, with_state};

/// A command that did not succeed: its answer's code and description.
#[derive(Debug)]
pub(crate) struct Refused {
    pub(crate) code: u16,
    pub(crate) description: String,
}

impl From<Failure> for Refused {
    fn from(f: Failure) -> Self {
        Self {
            code: f.code,
            description: f.description,
        }
    }
}

fn bad(description: impl Into<String>) -> Refused {
    Refused {
        code: 400,
        description: description.into(),
    }
}

fn str_field<'a>(body: &'a Value, name: &str) -> Result<&'a str, Refused> {
    body.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("`{name}` must be a string")))
}

fn u64_field(body: &Value, name: &str) -> Result<u64, Refused> {
    body.get(name)
        .and_then(Value::as_u64)
        .ok_or_else(|| bad(format!("`{name}` must be a non-negative integer")))
}

/// Where reports of this command go: from the address the command came to, to `report`.
fn route(body: &Value, msg: &Msg) -> Result<Route, Refused> {
    Ok(Route {
        from: msg.to.first().cloned().unwrap_or_default(),
        to: str_field(body, "report")?.to_owned(),
    })
}

/// Runs command `op` of message `msg` (whose body is `body`).
pub(crate) fn run(op: &str, body: &Value, msg: &Msg) -> Result<Value, Refused> {
    match op {
        "echo" => Ok(message_json(msg)),
        "last" => Ok(with_state(|s| s.last.clone()).unwrap_or(Value::Null)),
        "send" => {
            let message = body
                .get("message")
                .ok_or_else(|| bad("`message` is missing"))?;
            let parsed = Msg::parse(&message.to_string()).map_err(|e| bad(e.to_string()))?;
            bus::send(&to_envelope(parsed))?;
            Ok(Value::Null)
        }
        "listen" => {
            bus::add_listener(str_field(body, "address")?)?;
            Ok(Value::Null)
        }
        "unlisten" => {
            bus::remove_listener(str_field(body, "address")?);
            Ok(Value::Null)
        }
        "kv-set" => {
            let value = str_field(body, "value")?;
            host::kv_set(str_field(body, "key")?, value.as_bytes())?;
            Ok(Value::Null)
        }
        "kv-get" => Ok(host::kv_get(str_field(body, "key")?)
            .map(|v| Value::String(String::from_utf8_lossy(&v).into_owned()))
            .unwrap_or(Value::Null)),
        "kv-delete" => {
            host::kv_delete(str_field(body, "key")?);
            Ok(Value::Null)
        }
        "kv-keys" => {
            let limit = u32::try_from(u64_field(body, "limit")?).unwrap_or(u32::MAX);
            Ok(json!(host::kv_keys(str_field(body, "prefix")?, limit)))
        }
        "timer" => {
            let id = u64_field(body, "id")?;
            let route = route(body, msg)?;
            host::set_timer(id, u64_field(body, "delay_ms")?)?;
            with_state(|s| s.timers.insert(id, route));
            Ok(Value::Null)
        }
        "timer-cancel" => {
            let id = u64_field(body, "id")?;
            host::cancel_timer(id);
            with_state(|s| s.timers.remove(&id));
            Ok(Value::Null)
        }
        "config" => Ok(host::config(str_field(body, "key")?).map_or(Value::Null, Value::String)),
        "config-all" => Ok(Value::Object(
            host::config_all()
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect::<Map<_, _>>(),
        )),
        "time" => Ok(json!({ "now_ms": host::now_ms(), "monotonic_ms": host::monotonic_ms() })),
        "log" => {
            host::log(
                level(str_field(body, "level")?)?,
                str_field(body, "message")?,
            );
            Ok(Value::Null)
        }
        "ws-open" => {
            let route = route(body, msg)?;
            let protocols: Vec<String> = match body.get("protocols") {
                None | Some(Value::Null) => Vec::new(),
                Some(p) => serde_json::from_value(p.clone())
                    .map_err(|_| bad("`protocols` must be a list of strings"))?,
            };
            let socket = net::ws_open(str_field(body, "url")?, &protocols)?;
            with_state(|s| s.handles.insert(socket, route));
            Ok(json!(socket))
        }
        "ws-send" => {
            net::ws_send(u64_field(body, "socket")?, str_field(body, "text")?)?;
            Ok(Value::Null)
        }
        "ws-close" => {
            let code = u16::try_from(u64_field(body, "code")?).map_err(|_| bad("bad `code`"))?;
            let reason = body.get("reason").and_then(Value::as_str).unwrap_or("");
            net::ws_close(u64_field(body, "socket")?, code, reason);
            Ok(Value::Null)
        }
        "http-fetch" => http_fetch(body, msg),
        "trap" => panic!("probe: trap on command"),
        "spin" => Ok(spin(body.get("ms").and_then(Value::as_u64))),
        "grow" => {
            let mib = usize::try_from(u64_field(body, "mib")?).map_err(|_| bad("bad `mib`"))?;
            let block = vec![1u8; mib << 20];
            let held = with_state(|s| {
                s.held.push(block);
                s.held.iter().map(Vec::len).sum::<usize>() >> 20
            });
            Ok(json!({ "held_mib": held }))
        }
        other => Err(bad(format!("unknown op {other:?}"))),
    }
}

fn level(name: &str) -> Result<host::Level, Refused> {
    Ok(match name {
        "trace" => host::Level::Trace,
        "debug" => host::Level::Debug,
        "info" => host::Level::Info,
        "warn" => host::Level::Warn,
        "error" => host::Level::Error,
        other => return Err(bad(format!("unknown level {other:?}"))),
    })
}

fn http_fetch(body: &Value, msg: &Msg) -> Result<Value, Refused> {
    let route = route(body, msg)?;
    let headers = match body.get("headers") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| {
                Ok((
                    k.clone(),
                    v.as_str()
                        .ok_or_else(|| bad("header values are strings"))?
                        .to_owned(),
                ))
            })
            .collect::<Result<Vec<_>, Refused>>()?,
        Some(_) => return Err(bad("`headers` must be an object")),
    };
    let request = net::HttpRequest {
        method: body
            .get("method")
            .and_then(Value::as_str)
            .unwrap_or("GET")
            .to_owned(),
        url: str_field(body, "url")?.to_owned(),
        headers,
        body: body
            .get("body")
            .and_then(Value::as_str)
            .map(|b| b.as_bytes().to_vec()),
        timeout_ms: body
            .get("timeout_ms")
            .and_then(Value::as_u64)
            .map_or(10_000, |t| u32::try_from(t).unwrap_or(u32::MAX)),
    };
    let handle = net::http_fetch(&request)?;
    with_state(|s| s.handles.insert(handle, route));
    Ok(json!(handle))
}

/// Busy-loops for `ms` milliseconds of `monotonic-ms` (forever when `None`).
fn spin(ms: Option<u64>) -> Value {
    let start = host::monotonic_ms();
    let mut spins = 0u64;
    loop {
        let elapsed = host::monotonic_ms().saturating_sub(start);
        if ms.is_some_and(|ms| elapsed >= ms) {
            return json!({ "spun_ms": elapsed });
        }
        spins = std::hint::black_box(spins.wrapping_add(1));
    }
}

/// The handle a network event is about, and the body reporting it. After a `ws-closed`,
/// `http-response` or `http-failed` the handle is no longer valid.
pub(crate) fn network_report(event: NetEvent) -> (u64, Value) {
    match event {
        NetEvent::WsOpened(socket) => (socket, json!({ "event": "ws-opened", "socket": socket })),
        NetEvent::WsText((socket, text)) => (
            socket,
            json!({ "event": "ws-text", "socket": socket, "text": text }),
        ),
        NetEvent::WsClosed(info) => (
            info.socket,
            json!({ "event": "ws-closed", "socket": info.socket, "code": info.code, "reason": info.reason }),
        ),
        NetEvent::HttpResponse(r) => (
            r.request,
            json!({
                "event": "http-response",
                "request": r.request,
                "status": r.status,
                "headers": r.headers,
                "body": String::from_utf8_lossy(&r.body),
            }),
        ),
        NetEvent::HttpFailed(f) => (
            f.request,
            json!({ "event": "http-failed", "request": f.request, "description": f.description }),
        ),
    }
}
