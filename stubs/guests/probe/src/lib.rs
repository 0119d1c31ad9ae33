//! The probe: a test protocol stub (world `protocol-stub`) that runs the host's imports on
//! command, so that a host's tests can exercise every import with one real component.
//!
//! # Configuration
//! - `listen`: comma-separated addresses; `init` adds a listener for each (an error from
//!   `add-listener` fails `init` with its code and description).
//!
//! # Commands
//! Every message delivered to `on-message` whose `body` holds an `op` is a command. The probe
//! answers it with a `response` from the message's first `to`, to its `from`, with the same
//! `id` and `body: {"code": C, "value": V}`: `C` is 200, or the code of the host's `failure`
//! (with `V` its description), or 400 for a command the probe cannot read. A message without
//! `op` (for example a `response` from the bus) is not answered; it is kept as the last
//! unsolicited message, which `last` returns.
//!
//! | op | fields | does | value |
//! | --- | --- | --- | --- |
//! | `echo` | any | nothing | the whole message: `{id, type, from, to, body, extra}` (JSON values) |
//! | `last` | | nothing | the last message received without `op` (or `null`) |
//! | `send` | `message`: a message as JSON | `bus.send` of it (spoofing tests) | `null` |
//! | `listen` / `unlisten` | `address` | `add-listener` / `remove-listener` | `null` |
//! | `kv-set` | `key`, `value` (string, stored as its UTF-8 bytes) | `kv-set` | `null` |
//! | `kv-get` | `key` | `kv-get` | the value (UTF-8, lossy) or `null` |
//! | `kv-delete` | `key` | `kv-delete` | `null` |
//! | `kv-keys` | `prefix`, `limit` | `kv-keys` | the keys |
//! | `timer` | `id`, `delay_ms`, `report` | `set-timer`; when it fires, sends `{"timer": id}` to `report` | `null` |
//! | `timer-cancel` | `id` | `cancel-timer` | `null` |
//! | `config` | `key` | `config` | the value or `null` |
//! | `config-all` | | `config-all` | an object of every entry |
//! | `time` | | `now-ms`, `monotonic-ms` | `{now_ms, monotonic_ms}` |
//! | `log` | `level` (`trace`..`error`), `message` | `log` | `null` |
//! | `ws-open` | `url`, `protocols` (list), `report` | `ws-open` | the socket handle |
//! | `ws-send` | `socket`, `text` | `ws-send` | `null` |
//! | `ws-close` | `socket`, `code`, `reason` | `ws-close` | `null` |
//! | `http-fetch` | `method`, `url`, `headers` (object), `body` (string), `timeout_ms`, `report` | `http-fetch` | the request handle |
//! | `trap` | | panics: the call traps | (none) |
//! | `spin` | `ms` (absent: forever) | busy loop on `monotonic-ms` | `{spun_ms}` |
//! | `grow` | `mib` | allocates and touches `mib` MiB, kept until the instance ends | `{held_mib}` |
//!
//! # Reports
//! Messages the probe sends by itself have type `update`, `from` the address the command was
//! sent to, `to` the command's `report`, and a number `id` counting from 1 per instance:
//! - a timer firing: `body: {"timer": id}`;
//! - a network event (`events`): `{"event": "ws-opened", "socket"}`,
//!   `{"event": "ws-text", "socket", "text"}`, `{"event": "ws-closed", "socket", "code",
//!   "reason"}`, `{"event": "http-response", "request", "status", "headers" (pairs), "body"
//!   (UTF-8, lossy)}`, `{"event": "http-failed", "request", "description"}`.
//!
//! Where to report is kept in the instance's memory: a restarted instance reports nothing for
//! timers, sockets or requests of the previous one.
//!
//! # State
//! The component model calls exported functions; the instance's linear memory is the only place
//! that lives between calls, so the probe keeps its state in one thread-local cell (one
//! instance, one thread).

mod ops;

use std::cell::RefCell;
use std::collections::BTreeMap;

use rethink_guest_envelope::Msg;
use serde_json::{Value, json};

/// The bindings generated from `../wit` (world `protocol-stub`), and the export of [`Probe`].
/// The generated glue is `unsafe` by nature (the canonical ABI); nothing else here is.
#[allow(unsafe_code, clippy::too_many_arguments)]
mod bindings {
    wit_bindgen::generate!({
        world: "protocol-stub",
        path: "../../wit",
        generate_all,
    });

    use super::Probe;
    export!(Probe with_types_in self);
}

use bindings::rethink::stub::{bus, host};
use bindings::{Envelope, Guest, NetEvent};

/// Where a report goes: sent from `from` to `to`.
#[derive(Debug, Clone)]
struct Route {
    from: String,
    to: String,
}

/// What the probe remembers between calls.
#[derive(Debug, Default)]
struct State {
    /// Timer id → where its firing is reported.
    timers: BTreeMap<u64, Route>,
    /// Socket or request handle → where its events are reported.
    handles: BTreeMap<u64, Route>,
    /// Memory held by `grow`.
    held: Vec<Vec<u8>>,
    /// The last message received without `op`.
    last: Option<Value>,
    /// The id of the last report sent.
    next_id: u64,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

fn with_state<T>(f: impl FnOnce(&mut State) -> T) -> T {
    STATE.with(|s| f(&mut s.borrow_mut()))
}

struct Probe;

impl Guest for Probe {
    fn init() -> Result<(), String> {
        let Some(listen) = host::config("listen") else {
            return Ok(());
        };
        for address in listen.split(',').map(str::trim).filter(|a| !a.is_empty()) {
            bus::add_listener(address)
                .map_err(|f| format!("add-listener {address}: {} {}", f.code, f.description))?;
        }
        Ok(())
    }

    fn on_message(message: Envelope) {
        let msg = from_envelope(message);
        let body = msg.body_value();
        let Some(op) = body.get("op").and_then(Value::as_str) else {
            let seen = message_json(&msg);
            with_state(|s| s.last = Some(seen));
            return;
        };
        let (code, value) = match ops::run(op, &body, &msg) {
            Ok(value) => (200, value),
            Err(ops::Refused { code, description }) => (code, Value::String(description)),
        };
        let reply = msg.reply(json!({ "code": code, "value": value }));
        if let Err(f) = bus::send(&to_envelope(reply)) {
            host::log(
                host::Level::Warn,
                &format!("probe: reply to {op} refused: {} {}", f.code, f.description),
            );
        }
    }

    fn on_network(event: NetEvent) {
        let last = !matches!(event, NetEvent::WsOpened(_) | NetEvent::WsText(_));
        let (handle, body) = ops::network_report(event);
        let route = with_state(|s| {
            if last {
                s.handles.remove(&handle)
            } else {
                s.handles.get(&handle).cloned()
            }
        });
        report(route, body);
    }

    fn on_timer(id: u64) {
        let route = with_state(|s| s.timers.remove(&id));
        report(route, json!({ "timer": id }));
    }
}

/// Sends a report along `route`, if there is one (failures are logged).
fn report(route: Option<Route>, body: Value) {
    let Some(route) = route else {
        host::log(
            host::Level::Warn,
            &format!("probe: nowhere to report {body}"),
        );
        return;
    };
    let id = with_state(|s| {
        s.next_id += 1;
        s.next_id
    });
    let msg = Msg {
        id: id.to_string(),
        kind: "update".to_owned(),
        from: route.from,
        to: vec![route.to],
        body: Some(body.to_string()),
        extra: None,
    };
    if let Err(f) = bus::send(&to_envelope(msg)) {
        host::log(
            host::Level::Warn,
            &format!("probe: report refused: {} {}", f.code, f.description),
        );
    }
}

/// The message as a JSON value (`id`, `body`, `extra` parsed).
fn message_json(msg: &Msg) -> Value {
    let parse = |text: &str| serde_json::from_str::<Value>(text).unwrap_or(Value::Null);
    json!({
        "id": parse(&msg.id),
        "type": msg.kind,
        "from": msg.from,
        "to": msg.to,
        "body": msg.body.as_deref().map(parse),
        "extra": msg.extra.as_deref().map(parse),
    })
}

fn from_envelope(e: Envelope) -> Msg {
    Msg {
        id: e.id,
        kind: e.type_,
        from: e.from,
        to: e.to,
        body: e.body,
        extra: e.extra,
    }
}

fn to_envelope(m: Msg) -> Envelope {
    Envelope {
        id: m.id,
        type_: m.kind,
        from: m.from,
        to: m.to,
        body: m.body,
        extra: m.extra,
    }
}
