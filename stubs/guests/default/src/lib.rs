//! The `default` protocol stub: the client side of this node's WebSocket session protocol
//! (README, "The WebSocket protocol in brief"), as a component of world `protocol-stub`. It is
//! what a hyperty runtime downloads to talk to the node, and what another node runs to reach
//! this one.
//!
//! # Configuration (`host.config`)
//! - `url` (required): the node's WebSocket URL, `ws://host:port/ws` or `wss://...`.
//! - `runtime` (required): the runtime URL the session is opened for
//!   (`hyperty-runtime://<domain>/<id>`); the `from` of `open`, `re-open`, `ack` and `close`.
//! - `token`: a bearer token, sent as `body.token` of `open` and `re-open` (a component cannot
//!   set the upgrade request's headers).
//! - `stub`: this stub's URL, written into `body.via` of every message it hands to the bus;
//!   default `<runtime>/protostub/default`.
//! - `listen`: comma-separated addresses `init` adds listeners for (default none).
//! - `queue_max` (1024), `queue_max_bytes` (4194304: the JSON text of the queued and unconfirmed
//!   messages; each is held in the instance's memory about twice over, so this keeps a queue of
//!   large messages within a 16 MiB instance), `ack_every` (32), `ack_delay_ms` (20),
//!   `backoff_min_ms` (100), `backoff_max_ms` (30000), `handshake_timeout_ms` (10000).
//! - `report_held` (`true`): `false` ignores the host's `gseq` (below) and writes no `g`, as a
//!   stub that does not know that contract would (the node's gateway then counts on what the
//!   node confirms; its tests use it).
//! - `deliver_timeout_ms` (0: never): a message for the node not yet written to it this long
//!   after it was taken is answered 504 and forgotten; `domain`: how the 503 and 504 answers
//!   name the node (default `url`).
//!
//! # What it listens on
//! Every message its host delivers to `on-message` goes to the node, except the loop and
//! control cases below. Which messages those are is the host's routing: in a hyperty runtime,
//! every message on the runtime's bus whose `to` is outside the runtime (the JavaScript
//! runtime delivers them to the stub without a listener); in the node, the messages for the
//! addresses the operator gave the stub, which `init` listens to from `listen`. A message whose
//! `body.via` is this stub's own URL came from the node through this stub and is dropped (loop
//! prevention, DESIGN.md section 3). A message to `mn:/session` of type `close` ends the
//! session (answered 200); any other message to `mn:/session` is answered 400.
//!
//! # The session
//! `init` connects at once (`net.ws-open`), then sends `open` (with `token`) or, when the kv
//! store holds a session for the same `url` and `runtime`, `re-open` with its `runtimeToken`
//! and `lastSeq`. A `re-open` refused for good (404 expired, 403, 401 for another identity)
//! opens a new session on the same socket; one refused 401 for its credential (an expired node
//! proof) keeps the session and tries again after the backoff, so that the instance its host
//! restarts with a new `token` resumes it; a refused `open`, a lost socket or a handshake without answer within
//! `handshake_timeout_ms` reconnect after a backoff doubling from `backoff_min_ms` to
//! `backoff_max_ms`, each delay drawn in its upper half (jitter), reset once a session is open.
//! After `close`, the next message from the bus opens a new session.
//!
//! Frames from the node go to `bus.send` without their `seq`, with `body.via` set. Acks are
//! cumulative and batched: one `ack` every `ack_every` frames, or `ack_delay_ms` after the
//! first frame not yet acknowledged. Before each ack the acknowledged `seq` and the
//! `runtimeToken` are saved in the kv store (key `session`), so a restarted instance resumes.
//!
//! # What "without loss" covers
//! - Node to bus: every frame the node put in our session's outbox is handed to `bus.send` at
//!   least once, provided the session is resumed within the node's resume window: a frame is
//!   acknowledged only once the bus has accepted it, and `re-open` asks for every frame after
//!   the last one received (in memory) or acknowledged (kv store, after an instance restart).
//!   Frames the bus answers with 503 or 429 wait in order and are retried, holding back the
//!   ack; a frame the bus refuses for good (400, 403, 404) is logged and acknowledged (it could
//!   never be delivered). After an instance restart, frames handed to the bus but not yet
//!   acknowledged are handed again (duplicates, never gaps). A session that expired is lost
//!   with its outbox: the stub opens a new one.
//! - Bus to node: a message taken by `on-message` is numbered (top-level `cseq`, increasing
//!   for the stub's whole life) and stored in the kv store (`out/<cseq>`, `store.rs`) before it
//!   is taken; when it cannot be stored, or the queue (`queue_max` messages or
//!   `queue_max_bytes`, with the unconfirmed ones) is full, the sender gets a `response` 503 at
//!   once. Stored messages are written to the
//!   node in order, now or after the next `open` / `re-open`. The node drops a message whose
//!   `cseq` is not above the highest it handled for the session, so sending again is safe. A
//!   `sync` to `mn:/session` (one at a time, while messages wait for confirmation) is answered
//!   with that highest `cseq` (as is `re-open`); messages up to it are confirmed and their
//!   stored copies deleted. After a lost connection, or a trap or restart of the instance
//!   (`init` queues the stored messages again), the unconfirmed ones are sent again: nothing
//!   is lost, nothing handled twice by the node. After `close` the queued messages are
//!   answered 503 and forgotten.
//! - A host that feeds the stub from its own persisted queue (the node's gateway to another
//!   domain) puts the queue position in a top-level `gseq`; see `store.rs` for how the stub
//!   tells it what it holds.
//!
//! # State
//! Exported functions are all the component model calls; the instance's memory is the only
//! place that lives between calls, so the session is kept in one thread-local cell (one
//! instance, one thread), created by `init`.

mod config;
mod frames;
mod io;
mod session;
mod store;

use std::cell::RefCell;
use std::collections::BTreeMap;

use rethink_guest_envelope::Msg;

use config::Config;
use io::{Failure, Io, Level, Timer};
use session::Session;

/// The bindings generated from `../wit` (world `protocol-stub`), and the export of
/// [`DefaultStub`]. The generated glue is `unsafe` by nature (the canonical ABI); nothing else
/// here is.
#[allow(unsafe_code, clippy::too_many_arguments)]
mod bindings {
    wit_bindgen::generate!({
        world: "protocol-stub",
        path: "../../wit",
        generate_all,
    });

    use super::DefaultStub;
    export!(DefaultStub with_types_in self);
}

use bindings::rethink::stub::{bus, host, net};
use bindings::{Envelope, Guest, NetEvent};

thread_local! {
    static SESSION: RefCell<Option<Session>> = const { RefCell::new(None) };
}

/// Runs `f` on the session, if `init` created one.
fn with_session(f: impl FnOnce(&mut Session, &mut dyn Io)) {
    SESSION.with(|s| {
        if let Some(session) = s.borrow_mut().as_mut() {
            f(session, &mut WitIo);
        }
    });
}

struct DefaultStub;

impl Guest for DefaultStub {
    fn init() -> Result<(), String> {
        let entries: BTreeMap<String, String> = host::config_all().into_iter().collect();
        let cfg = Config::from_entries(&entries).map_err(|e| e.to_string())?;
        for address in &cfg.listen {
            bus::add_listener(address)
                .map_err(|f| format!("add-listener {address}: {} {}", f.code, f.description))?;
        }
        let mut io = WitIo;
        let mut session = Session::new(cfg, &mut io);
        session.connect(&mut io);
        SESSION.with(|s| *s.borrow_mut() = Some(session));
        Ok(())
    }

    fn on_message(message: Envelope) {
        with_session(|s, io| s.on_message(io, from_envelope(message)));
    }

    fn on_network(event: NetEvent) {
        with_session(|s, io| match event {
            NetEvent::WsOpened(socket) => s.on_opened(io, socket),
            NetEvent::WsText((socket, text)) => s.on_text(io, socket, &text),
            NetEvent::WsClosed(info) => s.on_closed(io, info.socket, info.code, &info.reason),
            NetEvent::HttpResponse(_) | NetEvent::HttpFailed(_) => {}
        });
    }

    fn on_timer(id: u64) {
        if let Some(timer) = Timer::from_id(id) {
            with_session(|s, io| s.on_timer(io, timer));
        }
    }
}

/// [`Io`] over the WIT imports.
#[derive(Debug)]
struct WitIo;

fn failure(f: bindings::rethink::stub::types::Failure) -> Failure {
    Failure {
        code: f.code,
        description: f.description,
    }
}

impl Io for WitIo {
    fn bus_send(&mut self, message: Msg) -> Result<(), (Failure, Msg)> {
        // The record is lowered from the guest's own strings: moved in and, when refused,
        // moved back, never copied.
        let envelope = to_envelope(message);
        bus::send(&envelope).map_err(|f| (failure(f), from_envelope(envelope)))
    }

    fn ws_open(&mut self, url: &str) -> Result<u64, Failure> {
        net::ws_open(url, &[]).map_err(failure)
    }

    fn ws_send(&mut self, socket: u64, text: &str) -> Result<(), Failure> {
        net::ws_send(socket, text).map_err(failure)
    }

    fn ws_close(&mut self, socket: u64, code: u16, reason: &str) {
        net::ws_close(socket, code, reason);
    }

    fn set_timer(&mut self, timer: Timer, delay_ms: u64) {
        if let Err(f) = host::set_timer(timer as u64, delay_ms) {
            host::log(
                host::Level::Error,
                &format!("set-timer {timer:?} refused: {} {}", f.code, f.description),
            );
        }
    }

    fn cancel_timer(&mut self, timer: Timer) {
        host::cancel_timer(timer as u64);
    }

    fn kv_get(&mut self, key: &str) -> Option<Vec<u8>> {
        host::kv_get(key)
    }

    fn kv_set(&mut self, key: &str, value: &[u8]) -> Result<(), Failure> {
        host::kv_set(key, value).map_err(failure)
    }

    fn kv_delete(&mut self, key: &str) {
        host::kv_delete(key);
    }

    fn kv_keys(&mut self, prefix: &str, limit: u32) -> Vec<String> {
        host::kv_keys(prefix, limit)
    }

    fn monotonic_ms(&mut self) -> u64 {
        host::monotonic_ms()
    }

    fn now_ms(&mut self) -> u64 {
        host::now_ms()
    }

    fn log(&mut self, level: Level, message: &str) {
        let level = match level {
            Level::Debug => host::Level::Debug,
            Level::Info => host::Level::Info,
            Level::Warn => host::Level::Warn,
            Level::Error => host::Level::Error,
        };
        host::log(level, message);
    }
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
