//! The domain registry (world `protocol-stub`): hyperty instances and data objects register
//! here, runtimes look them up. It listens at `domain://registry.<domain>` and speaks the reTHINK
//! registry messages (the registry connector of the reTHINK message nodes):
//!
//! | type | body | does | answer `value` |
//! | --- | --- | --- | --- |
//! | `create` | `value`: `{hypertyURL, user, descriptor \| hypertyDescriptorURL, resources, dataSchemes, expires}` or `{url, name, schema, reporter, resources, expires}` | registers (or re-registers) a hyperty or a data object | |
//! | `update` | `resource`: a registered URL | keep-alive: its expiry starts again, its status is `live` | |
//! | `update` | `value`: as for `create` | replaces a registration (404 if there is none) | |
//! | `delete` | `resource` (or `value.hypertyURL` / `value.url`) | removes it | |
//! | `read` | `resource`: `user://...` | the user's hyperties | `{<url>: registration}` |
//! | `read` | `resource`: a URL | that registration | `{<url>: registration}` |
//! | `read` | `search`: `hypertyResourcesDataSchemes` (or `hyperties`), `resource` or `criteria`: `{user, schemes, resources, dataSchemes}` | hyperties matching every given criterion | `{<url>: registration}` |
//! | `read` | `search`: `dataObjectPerURL` / `dataObjectPerReporter` / `dataObjectPerName`, `resource` | data objects | `{<url>: registration}` |
//!
//! Answers are `response`s with `body.code`: 200, 400 (malformed, with `description`), 403
//! (not from a runtime of this domain, or a registration of another runtime), 404 (nothing
//! registered or found), 413 (the registry or its store is full).
//!
//! Registrations are made by runtimes: the sender must be `hyperty-runtime://<domain>/<id>` or
//! an address below it (the reTHINK runtime registry sends from `<runtime>/registry`); the bus
//! guarantees a sender owns its `from`. Only that runtime may update or delete them. The node
//! checks, before delivering a `create` or `update`, that the URL it registers was allocated to
//! the sending runtime (403 otherwise): the registry never sees another runtime's URL.
//!
//! # Expiry and status
//! A registration lives `expires` seconds (default `default_expires`) after its last create,
//! update or keep-alive, then it is removed. The registry subscribes to `<runtime>/status` of
//! every runtime holding registrations; the node publishes `live`, `disconnected` and `expired`
//! there, and the runtime's registrations take that status (`expired`: removed); the node's
//! answer to each subscription carries the runtime's current status (`body.value.status`), so
//! after a node restart the registrations of runtimes not yet back are `disconnected`. Every status
//! change (`live`, `disconnected`, `expired`, `deleted`) is sent as an `update` from the
//! registry to `<url>/registration` with `body: {resource, attribute: "status", value}`: its
//! subscribers get it (without subscribers, the owner of the URL does).
//!
//! # Configuration (`host.config`)
//! `domain` (required), `address` (default `domain://registry.<domain>`), `default_expires`
//! (3600 s), `max_expires` (86400 s), `max_registrations` (1000, at most 1000).
//!
//! # State
//! Each registration is stored in the host's key-value store under `reg/<url>` before it is
//! answered, and read back by `init`: the registry survives restarts of the instance and of the
//! node. The instance keeps them in one thread-local cell.

mod record;
mod registry;

use std::cell::RefCell;

use rethink_guest_envelope::Msg;

use record::{Limits, Record};
use registry::{Io, PREFIX, Refusal, Registry, Settings};

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

thread_local! {
    static REGISTRY: RefCell<Option<Registry>> = const { RefCell::new(None) };
}

/// The host's imports, as the registry uses them.
struct Host;

impl Io for Host {
    fn now_ms(&self) -> u64 {
        host::now_ms()
    }
    fn send(&mut self, msg: Msg) -> Result<(), Refusal> {
        bus::send(&to_envelope(msg)).map_err(|f| (f.code, f.description))
    }
    fn kv_set(&mut self, key: &str, value: &[u8]) -> Result<(), Refusal> {
        host::kv_set(key, value).map_err(|f| (f.code, f.description))
    }
    fn kv_delete(&mut self, key: &str) {
        host::kv_delete(key);
    }
    fn set_timer(&mut self, id: u64, delay_ms: u64) {
        if let Err(f) = host::set_timer(id, delay_ms) {
            self.warn(&format!(
                "registry: timer refused: {} {}",
                f.code, f.description
            ));
        }
    }
    fn cancel_timer(&mut self, id: u64) {
        host::cancel_timer(id);
    }
    fn warn(&mut self, text: &str) {
        host::log(host::Level::Warn, text);
    }
}

fn number(key: &str, default: u64) -> Result<u64, String> {
    match host::config(key) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("config {key}: {v:?} is not a positive number")),
    }
}

fn settings() -> Result<Settings, String> {
    let domain = host::config("domain").ok_or("config `domain` is required")?;
    let address = host::config("address").unwrap_or_else(|| format!("domain://registry.{domain}"));
    Ok(Settings {
        domain,
        address,
        max_registrations: number("max_registrations", 1000)?.min(1000) as usize,
        limits: Limits {
            default_expires: number("default_expires", 3600)?,
            max_expires: number("max_expires", 86_400)?,
            max_list: 64,
            max_text: 1024,
        },
    })
}

struct Component;

impl Guest for Component {
    fn init() -> Result<(), String> {
        let settings = settings()?;
        bus::add_listener(&settings.address).map_err(|f| {
            format!(
                "add-listener {}: {} {}",
                settings.address, f.code, f.description
            )
        })?;
        let mut records = Vec::new();
        let keys = host::kv_keys(PREFIX, settings.max_registrations as u32);
        for key in keys {
            let Some(bytes) = host::kv_get(&key) else {
                continue;
            };
            match serde_json::from_slice::<Record>(&bytes) {
                Ok(r) => records.push(r),
                Err(e) => {
                    Host.warn(&format!("registry: dropping unreadable {key}: {e}"));
                    host::kv_delete(&key);
                }
            }
        }
        let registry = Registry::new(settings, records, &mut Host);
        REGISTRY.with(|r| *r.borrow_mut() = Some(registry));
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
        REGISTRY.with(|r| {
            if let Some(reg) = r.borrow_mut().as_mut() {
                reg.on_message(&mut Host, &msg);
            }
        });
    }

    fn on_network(_event: NetEvent) {}

    fn on_timer(id: u64) {
        if id != registry::EXPIRY_TIMER {
            return;
        }
        REGISTRY.with(|r| {
            if let Some(reg) = r.borrow_mut().as_mut() {
                reg.on_timer(&mut Host);
            }
        });
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
