//! An echo bot (world `connector`), the smallest WebAssembly connector with a Matrix side: its
//! user `@<localpart>:<domain>` (config `localpart`, default `echo`; it must be in the
//! connector's user namespace) is registered at `init`.
//!
//! On `on-event`:
//! - an invite of its user to a room: it joins the room;
//! - an `m.room.message` of type `m.text` by someone else in a room: it answers there as its
//!   user with `echo: <body>`;
//! - a message `!as <user id>`: it tries to send `hello` as that user and answers
//!   `sent` or `refused <code>` (how a test sees the host enforce the namespace);
//! - `!room <alias localpart>`: it creates a room with that alias (`create-room`) and answers
//!   `room <room id>` or `refused <code>` (the alias namespace);
//! - `!trap`: the call traps, every time it is given (a poisonous event: the host skips it
//!   after its tries);
//! - `!trap-once`: the call traps the first time; given again (to the next instance), it
//!   answers `recovered` (at-least-once delivery across a trap);
//! - `!busy`: it answers `busy`, then spins until the call's deadline (or until the node is
//!   killed); given again, it returns at once without answering.
//!
//! The trap switches remember an event (by id) in the host's key-value store before they
//! trap, which is how a second delivery tells itself apart from the first.
//!
//! Events it cannot use are ignored; a failed call is logged.

use std::cell::RefCell;

use serde_json::{Value, json};

/// The bindings generated from `../wit` (world `connector`), and the export of [`Component`].
/// The generated glue is `unsafe` by nature (the canonical ABI).
#[allow(unsafe_code, clippy::too_many_arguments)]
mod bindings {
    wit_bindgen::generate!({
        world: "connector",
        path: "../../wit",
        generate_all,
    });

    use super::Component;
    export!(Component with_types_in self);
}

use bindings::rethink::stub::{appservice, host};
use bindings::{Envelope, Guest, NetEvent};

thread_local! {
    /// The bot's full user id, once registered.
    static USER: RefCell<Option<String>> = const { RefCell::new(None) };
}

struct Component;

fn log(level: host::Level, message: &str) {
    host::log(level, message);
}

/// The bot's user id, registering it if that has not happened yet.
fn user() -> Option<String> {
    if let Some(u) = USER.with(|u| u.borrow().clone()) {
        return Some(u);
    }
    let localpart = host::config("localpart").unwrap_or_else(|| "echo".to_owned());
    match appservice::register_user(&localpart) {
        Ok(id) => {
            USER.with(|u| *u.borrow_mut() = Some(id.clone()));
            Some(id)
        }
        Err(f) => {
            log(
                host::Level::Warn,
                &format!("register {localpart}: {} {}", f.code, f.description),
            );
            None
        }
    }
}

/// Whether this is the first delivery of `event_id` for switch `switch` (and remembers it).
fn first_time(switch: &str, event_id: &str) -> bool {
    let key = format!("{switch}/{event_id}");
    if host::kv_get(&key).is_some() {
        return false;
    }
    if let Err(f) = host::kv_set(&key, b"1") {
        log(
            host::Level::Warn,
            &format!("kv {key}: {} {}", f.code, f.description),
        );
    }
    true
}

/// The trap and busy switches; `true` if `body` was one.
fn switch(body: &str, event_id: &str, me: &str, room: &str) -> bool {
    match body {
        "!trap" => {
            log(host::Level::Info, "trapping on request");
            panic!("!trap");
        }
        "!trap-once" => {
            if first_time("trap", event_id) {
                log(host::Level::Info, "trapping on request, once");
                panic!("!trap-once");
            }
            answer(me, room, "recovered");
        }
        "!busy" => {
            if first_time("busy", event_id) {
                answer(me, room, "busy");
                loop {
                    std::hint::black_box(host::monotonic_ms());
                }
            }
        }
        _ => return false,
    }
    true
}

fn text(body: &str) -> String {
    json!({"msgtype": "m.text", "body": body}).to_string()
}

fn answer(me: &str, room: &str, body: &str) {
    if let Err(f) = appservice::send_event(me, room, "m.room.message", &text(body)) {
        log(
            host::Level::Warn,
            &format!("answer in {room}: {} {}", f.code, f.description),
        );
    }
}

/// What to do with one event.
fn handle(event: &Value, me: &str) {
    let field = |k: &str| event.get(k).and_then(Value::as_str);
    let (Some(kind), Some(room), Some(sender)) = (field("type"), field("room_id"), field("sender"))
    else {
        return;
    };
    let content = event.get("content").unwrap_or(&Value::Null);
    match kind {
        "m.room.member"
            if field("state_key") == Some(me)
                && content.get("membership").and_then(Value::as_str) == Some("invite") =>
        {
            if let Err(f) = appservice::join_room(me, room) {
                log(
                    host::Level::Warn,
                    &format!("join {room}: {} {}", f.code, f.description),
                );
            }
        }
        "m.room.message" if sender != me => {
            if content.get("msgtype").and_then(Value::as_str) != Some("m.text") {
                return;
            }
            let Some(body) = content.get("body").and_then(Value::as_str) else {
                return;
            };
            if switch(body, field("event_id").unwrap_or_default(), me, room) {
                return;
            }
            if let Some(alias) = body.strip_prefix("!room ") {
                let reply = match appservice::create_room(me, Some(alias.trim()), Some("echo room"))
                {
                    Ok(id) => format!("room {id}"),
                    Err(f) => format!("refused {}", f.code),
                };
                answer(me, room, &reply);
                return;
            }
            match body.strip_prefix("!as ") {
                Some(other) => {
                    let reply = match appservice::send_event(
                        other.trim(),
                        room,
                        "m.room.message",
                        &text("hello"),
                    ) {
                        Ok(_) => "sent".to_owned(),
                        Err(f) => format!("refused {}", f.code),
                    };
                    answer(me, room, &reply);
                }
                None => answer(me, room, &format!("echo: {body}")),
            }
        }
        _ => {}
    }
}

impl Guest for Component {
    fn init() -> Result<(), String> {
        // A failed registration is retried on the first event.
        let _ = user();
        Ok(())
    }

    fn on_message(_message: Envelope) {}

    fn on_network(_event: NetEvent) {}

    fn on_timer(_id: u64) {}

    fn on_event(event: String) {
        let Ok(event) = serde_json::from_str::<Value>(&event) else {
            log(host::Level::Warn, "on-event: not JSON");
            return;
        };
        let Some(me) = user() else { return };
        handle(&event, &me);
    }
}
