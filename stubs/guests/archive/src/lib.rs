//! The archive connector (world `protocol-stub`): the message node's log. It keeps the messages
//! sent into its namespace and those published on the addresses it follows, and answers history
//! queries. Its address is `address` (default `domain://archive.<domain>`); messages for
//! addresses below it (the node gives it `<address>/log`, and routes `<address>/log/<topic>`
//! there) are posts to its log.
//!
//! | message | to | does | answer |
//! | --- | --- | --- | --- |
//! | any type but `response` | below `<address>` (`<address>/log/<topic>`) | logs it under its `to` | `{code: 200}` |
//! | `subscribe` | `<address>`, `body.resources`: addresses of this domain | follows them: what the bus publishes there is logged (persisted: followed again after a restart) | `{code: 200}` |
//! | `unsubscribe` | `<address>`, `body.resources` | stops following them (their log stays) | `{code: 200}` |
//! | `read` | `<address>`, `body.resource`, optional `body.limit` (50, at most `max_per_resource`) and `body.since` (Unix ms) | the last `limit` entries of that address's log at or after `since`, oldest first | `{code: 200, value: [{seq, at, type, from, to, body}]}` |
//!
//! Refusals: 400 (a malformed query or an unknown type to `<address>`, with `description`), 413
//! (the key-value store's quota). A message published on a followed address is logged and not
//! answered (it was not sent to the archive).
//!
//! # Configuration (`host.config`)
//! `domain` (required), `address`, `follow` (comma-separated addresses followed from the start),
//! `max_per_resource` (100, at most 1000: older entries of an address are dropped).
//!
//! # State
//! Entries are kept in the host's key-value store under `log/<address> <seq, 16 hex digits>`
//! (a space never occurs in an address), followed addresses under `follow/<address>`; the next
//! `seq` of each address is in the instance's memory, read back from the store on first use.

use std::cell::RefCell;
use std::collections::BTreeMap;

use rethink_guest_envelope::Msg;
use serde_json::{Value, json};

/// The bindings generated from `../wit` (world `protocol-stub`), and the export of
/// [`Component`]. The generated glue is `unsafe` by nature (the canonical ABI).
#[allow(unsafe_code, clippy::too_many_arguments)]
mod bindings {
    wit_bindgen::generate!({
        world: "protocol-stub",
        path: "../../wit",
        generate_all,
    });

    use super::Component;
    export!(Component with_types_in self);
}

use bindings::rethink::stub::{bus, host};
use bindings::{Envelope, Guest, NetEvent};

const DEFAULT_LIMIT: u64 = 50;

#[derive(Debug)]
struct Archive {
    address: String,
    sm: String,
    max: u64,
    /// Address → (first seq kept, next seq), once known.
    seqs: BTreeMap<String, (u64, u64)>,
    followed: Vec<String>,
    next_id: u64,
}

thread_local! {
    static ARCHIVE: RefCell<Option<Archive>> = const { RefCell::new(None) };
}

fn at_or_below(address: &str, prefix: &str) -> bool {
    address == prefix
        || address
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

fn prefix(resource: &str) -> String {
    format!("log/{resource} ")
}

fn key(resource: &str, seq: u64) -> String {
    format!("log/{resource} {seq:016x}")
}

fn warn(text: &str) {
    host::log(host::Level::Warn, text);
}

type Answer = (u16, Value);

fn refuse(code: u16, text: impl Into<String>) -> Answer {
    (code, Value::String(text.into()))
}

impl Archive {
    fn id(&mut self) -> String {
        self.next_id += 1;
        self.next_id.to_string()
    }

    /// Subscribes to (or unsubscribes from) `resources` at the node.
    fn subscription(&mut self, kind: &str, resources: &[String]) {
        let msg = Msg {
            id: self.id(),
            kind: kind.into(),
            from: self.address.clone(),
            to: vec![self.sm.clone()],
            body: Some(json!({ "resources": resources }).to_string()),
            extra: None,
        };
        if let Err(f) = bus::send(&to_envelope(msg)) {
            warn(&format!(
                "archive: {kind} refused: {} {}",
                f.code, f.description
            ));
        }
    }

    fn seqs(&mut self, resource: &str) -> (u64, u64) {
        if let Some(s) = self.seqs.get(resource) {
            return *s;
        }
        let p = prefix(resource);
        let seqs: Vec<u64> = host::kv_keys(&p, 1000)
            .iter()
            .filter_map(|k| u64::from_str_radix(&k[p.len()..], 16).ok())
            .collect();
        let s = match (seqs.first(), seqs.last()) {
            (Some(first), Some(last)) => (*first, last + 1),
            _ => (0, 0),
        };
        self.seqs.insert(resource.to_owned(), s);
        s
    }

    /// Appends `msg` to the log of `resource`, dropping the oldest beyond the bound.
    fn log(&mut self, resource: &str, msg: &Msg) -> Result<(), Answer> {
        let (mut first, next) = self.seqs(resource);
        let body = msg
            .body
            .as_deref()
            .and_then(|b| serde_json::from_str::<Value>(b).ok())
            .unwrap_or(Value::Null);
        let entry = json!({"seq": next, "at": host::now_ms(), "type": msg.kind,
            "from": msg.from, "to": resource, "body": body});
        host::kv_set(&key(resource, next), entry.to_string().as_bytes())
            .map_err(|f| refuse(f.code, format!("not logged: {}", f.description)))?;
        while next + 1 - first > self.max {
            host::kv_delete(&key(resource, first));
            first += 1;
        }
        self.seqs.insert(resource.to_owned(), (first, next + 1));
        Ok(())
    }

    fn read(&mut self, body: &Value) -> Answer {
        let Some(resource) = body.get("resource").and_then(Value::as_str) else {
            return refuse(
                400,
                "body.resource must be a string: the address whose log is read",
            );
        };
        let limit = match body.get("limit") {
            None => DEFAULT_LIMIT.min(self.max),
            Some(v) => match v.as_u64() {
                Some(n) if (1..=self.max).contains(&n) => n,
                _ => {
                    return refuse(
                        400,
                        format!("body.limit must be a whole number from 1 to {}", self.max),
                    );
                }
            },
        };
        let since = match body.get("since") {
            None => 0,
            Some(v) => match v.as_u64() {
                Some(n) => n,
                None => return refuse(400, "body.since must be Unix milliseconds"),
            },
        };
        let keys = host::kv_keys(&prefix(resource), self.max as u32);
        let mut entries: Vec<Value> = keys
            .iter()
            .rev()
            .filter_map(|k| host::kv_get(k))
            .filter_map(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
            .take_while(|e| e["at"].as_u64().unwrap_or(0) >= since)
            .take(limit as usize)
            .collect();
        entries.reverse();
        (200, Value::Array(entries))
    }

    fn follow(&mut self, subscribe: bool, body: &Value) -> Answer {
        let resources: Vec<String> = match body.get("resources").and_then(Value::as_array) {
            Some(list) if !list.is_empty() && list.len() <= 64 => {
                match list.iter().map(|v| v.as_str().map(str::to_owned)).collect() {
                    Some(r) => r,
                    None => return refuse(400, "body.resources must list addresses"),
                }
            }
            _ => return refuse(400, "body.resources must list 1 to 64 addresses"),
        };
        for r in &resources {
            if subscribe {
                if let Err(f) = host::kv_set(&format!("follow/{r}"), b"1") {
                    return refuse(f.code, format!("not followed: {}", f.description));
                }
                if !self.followed.contains(r) {
                    self.followed.push(r.clone());
                }
            } else {
                host::kv_delete(&format!("follow/{r}"));
                self.followed.retain(|f| f != r);
            }
        }
        let kind = if subscribe {
            "subscribe"
        } else {
            "unsubscribe"
        };
        self.subscription(kind, &resources);
        (200, Value::Null)
    }

    fn on_message(&mut self, msg: &Msg) {
        if msg.kind == "response" {
            return;
        }
        let mut answer = None;
        for to in &msg.to {
            if *to == self.address {
                let body = msg.body_value();
                answer = Some(match msg.kind.as_str() {
                    "read" => self.read(&body),
                    "subscribe" => self.follow(true, &body),
                    "unsubscribe" => self.follow(false, &body),
                    other => refuse(
                        400,
                        format!("the archive answers read, subscribe and unsubscribe, not {other}"),
                    ),
                });
            } else if at_or_below(to, &self.address) {
                let logged = self.log(to, msg);
                answer = Some(logged.err().unwrap_or((200, Value::Null)));
            } else if self.followed.iter().any(|f| at_or_below(to, f))
                && let Err((code, text)) = self.log(to, msg)
            {
                warn(&format!(
                    "archive: a message on {to} was not logged: {code} {text}"
                ));
            }
        }
        let Some((code, value)) = answer else {
            return;
        };
        let body = match (code, value) {
            (200, Value::Null) => json!({ "code": 200 }),
            (200, value) => json!({ "code": 200, "value": value }),
            (code, description) => json!({ "code": code, "description": description }),
        };
        let mut reply = msg.reply(body);
        reply.from.clone_from(&self.address);
        if let Err(f) = bus::send(&to_envelope(reply)) {
            warn(&format!(
                "archive: an answer was refused: {} {}",
                f.code, f.description
            ));
        }
    }
}

fn settings() -> Result<Archive, String> {
    let domain = host::config("domain").ok_or("config `domain` is required")?;
    let address = host::config("address").unwrap_or_else(|| format!("domain://archive.{domain}"));
    let max = match host::config("max_per_resource") {
        None => 100,
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| {
                format!("config max_per_resource: {v:?} is not a number from 1 to 1000")
            })?,
    };
    Ok(Archive {
        address,
        sm: format!("domain://msg-node.{domain}/sm"),
        max,
        seqs: BTreeMap::new(),
        followed: Vec::new(),
        next_id: host::now_ms(),
    })
}

struct Component;

impl Guest for Component {
    fn init() -> Result<(), String> {
        let mut archive = settings()?;
        bus::add_listener(&archive.address).map_err(|f| {
            format!(
                "add-listener {}: {} {}",
                archive.address, f.code, f.description
            )
        })?;
        let mut followed: Vec<String> = host::kv_keys("follow/", 1000)
            .iter()
            .map(|k| k["follow/".len()..].to_owned())
            .collect();
        if let Some(list) = host::config("follow") {
            for a in list.split(',').map(str::trim).filter(|a| !a.is_empty()) {
                if !followed.iter().any(|f| f == a) {
                    followed.push(a.to_owned());
                }
            }
        }
        if !followed.is_empty() {
            archive.subscription("subscribe", &followed);
        }
        archive.followed = followed;
        ARCHIVE.with(|a| *a.borrow_mut() = Some(archive));
        Ok(())
    }

    fn on_message(message: Envelope) {
        let msg = Msg {
            id: message.id,
            kind: message.type_,
            from: message.from,
            to: message.to,
            body: message.body,
            extra: message.extra,
        };
        ARCHIVE.with(|a| {
            if let Some(archive) = a.borrow_mut().as_mut() {
                archive.on_message(&msg);
            }
        });
    }

    fn on_network(_event: NetEvent) {}

    fn on_timer(_id: u64) {}
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
