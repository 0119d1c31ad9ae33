//! The store data of one instance ([`State`]) and the host imports the guest calls: `bus`
//! (send, listeners: only the stub's own addresses), `host` (log, time, timers, config, kv)
//! and `appservice` (through the embedder's [`MatrixPort`]; refused with 501 without one). `net` is in `net.rs`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::appservice::MatrixPort;
use crate::bindings::connector::rethink::stub::appservice;
use crate::bindings::protocol_stub::rethink::stub::{bus, host, net_events, types};
use crate::bindings::{WitEnvelope, WitFailure};
use crate::envelope::from_wit;
use crate::error::{Failure, StoreUnavailable};
use crate::net::NetState;
use crate::port::{BusPort, KvStore};
use crate::spec::StubSpec;
use crate::writebehind::WriteBehind;

/// What the stub's instances share: identity, limits and the embedder's ports.
#[derive(Debug)]
pub(crate) struct StubCtx {
    pub(crate) spec: StubSpec,
    pub(crate) port: Arc<dyn BusPort>,
    pub(crate) kv: Arc<dyn KvStore>,
    /// The Matrix side of a connector; `None`: the `appservice` imports answer 501.
    pub(crate) matrix: Option<Arc<dyn MatrixPort>>,
    pub(crate) started: Instant,
    /// The key-value writes committed behind the calls (`StubSpec::kv_write_behind`).
    pub(crate) wb: Option<Arc<WriteBehind>>,
}

impl StubCtx {
    /// Waits, with write-behind, until the writes made so far are committed (before a read
    /// of the store or an effect of the call); `Err` traps the instance.
    pub(crate) async fn flush(&self) -> wasmtime::Result<()> {
        match &self.wb {
            Some(wb) => wb.flush().await.map_err(wasmtime::Error::from),
            None => Ok(()),
        }
    }

    /// The trap of a key-value call the store could not answer: the store's outage (503,
    /// [`StoreUnavailable`]: not counted against an event), or any other failure of the store
    /// (an ordinary trap).
    pub(crate) fn unavailable(&self, failure: Failure) -> wasmtime::Error {
        if failure.code == 503 {
            wasmtime::Error::from(StoreUnavailable {
                stub: self.spec.name.clone(),
                failure,
            })
        } else {
            wasmtime::format_err!(
                "stub {}: its key-value store failed ({failure})",
                self.spec.name
            )
        }
    }
}

/// Something for the actor that is not a message: a timer fired or a network event, tagged
/// with the generation (instance) it belongs to.
#[derive(Debug)]
pub(crate) enum Event {
    Timer {
        generation: u64,
        id: u64,
        /// Which setting of timer `id` fired: a fire of one since replaced or cancelled is
        /// not delivered ([`State::take_fired`]).
        token: u64,
    },
    Net {
        generation: u64,
        event: net_events::NetEvent,
    },
}

/// Memory bound of one instance; remembers that it refused a growth, so the trap that
/// follows is reported as memory exhaustion.
#[derive(Debug)]
pub(crate) struct Limiter {
    pub(crate) max_bytes: usize,
    pub(crate) exhausted: bool,
    pub(crate) peak: usize,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.exhausted = true;
            return Err(wasmtime::format_err!(
                "memory limit of {} bytes reached",
                self.max_bytes
            ));
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// The data of one instance's store.
pub(crate) struct State {
    pub(crate) ctx: Arc<StubCtx>,
    pub(crate) generation: u64,
    pub(crate) limiter: Limiter,
    /// When the current call must have returned.
    pub(crate) deadline: Option<Instant>,
    /// The current call ran past its deadline.
    pub(crate) timed_out: bool,
    pub(crate) events: mpsc::Sender<Event>,
    /// The timers set and not yet delivered (armed, or fired with their event queued): what
    /// `max_timers` bounds, so the events queued for the instance are bounded too. Each with the
    /// token of its setting.
    timers: HashMap<u64, (u64, AbortHandle)>,
    /// The token of the next timer set.
    next_token: u64,
    pub(crate) net: NetState,
    /// Built on first use: only guests that import `wasi:*` get one, and it is empty.
    wasi: Option<WasiCtx>,
    table: ResourceTable,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("stub", &self.ctx.spec.name)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl Drop for State {
    fn drop(&mut self) {
        // The instance is gone: its timers must not fire into the next one.
        for (_, (_, t)) in self.timers.drain() {
            t.abort();
        }
    }
}

impl State {
    /// Whether the fire of timer `id`'s setting `token` is to be delivered (it is still that
    /// setting: not replaced nor cancelled since); from now on the timer is no longer set.
    pub(crate) fn take_fired(&mut self, id: u64, token: u64) -> bool {
        match self.timers.get(&id) {
            Some((current, _)) if *current == token => {
                self.timers.remove(&id);
                true
            }
            _ => false,
        }
    }

    pub(crate) fn new(ctx: Arc<StubCtx>, generation: u64, events: mpsc::Sender<Event>) -> Self {
        let limiter = Limiter {
            max_bytes: ctx.spec.memory_bytes,
            exhausted: false,
            peak: 0,
        };
        let net = NetState::new(ctx.spec.max_connections);
        Self {
            ctx,
            generation,
            limiter,
            deadline: None,
            timed_out: false,
            events,
            timers: HashMap::new(),
            next_token: 0,
            net,
            wasi: None,
            table: ResourceTable::new(),
        }
    }

    fn name(&self) -> &str {
        &self.ctx.spec.name
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        // Nothing inherited: no environment, arguments, preopened directories or network;
        // stdin is empty and stdout/stderr are sinks.
        let ctx = self.wasi.get_or_insert_with(|| WasiCtx::builder().build());
        WasiCtxView {
            ctx,
            table: &mut self.table,
        }
    }
}

pub(crate) fn wit_failure(f: Failure) -> WitFailure {
    WitFailure {
        code: f.code,
        description: f.description,
    }
}

impl types::Host for State {}
impl net_events::Host for State {}

impl bus::Host for State {
    async fn send(&mut self, message: WitEnvelope) -> wasmtime::Result<Result<(), WitFailure>> {
        let env = match from_wit(&message) {
            Ok(env) => env,
            Err(f) => return Ok(Err(wit_failure(f))),
        };
        if !self.ctx.spec.owns(env.from()) {
            return Ok(Err(wit_failure(Failure::new(
                403,
                format!(
                    "stub {} may not send from {}: not one of its addresses",
                    self.name(),
                    env.from()
                ),
            ))));
        }
        self.ctx.flush().await?;
        Ok(self.ctx.port.send(self.name(), env).map_err(wit_failure))
    }

    fn add_listener(&mut self, address: String) -> wasmtime::Result<Result<(), WitFailure>> {
        if !self.ctx.spec.may_listen(&address) {
            return Ok(Err(wit_failure(Failure::new(
                403,
                format!(
                    "stub {} may not listen on {address}: not one of its addresses",
                    self.name()
                ),
            ))));
        }
        Ok(self
            .ctx
            .port
            .add_listener(self.name(), &address)
            .map_err(wit_failure))
    }

    fn remove_listener(&mut self, address: String) -> wasmtime::Result<()> {
        self.ctx.port.remove_listener(self.name(), &address);
        Ok(())
    }
}

impl host::Host for State {
    fn log(&mut self, level: host::Level, message: String) -> wasmtime::Result<()> {
        let stub = self.name();
        let message = truncate(&message, 4096);
        match level {
            host::Level::Trace => tracing::trace!(stub, "{message}"),
            host::Level::Debug => tracing::debug!(stub, "{message}"),
            host::Level::Info => tracing::info!(stub, "{message}"),
            host::Level::Warn => tracing::warn!(stub, "{message}"),
            host::Level::Error => tracing::error!(stub, "{message}"),
        }
        Ok(())
    }

    fn now_ms(&mut self) -> wasmtime::Result<u64> {
        Ok(SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64))
    }

    fn monotonic_ms(&mut self) -> wasmtime::Result<u64> {
        Ok(self.ctx.started.elapsed().as_millis() as u64)
    }

    fn set_timer(&mut self, id: u64, delay_ms: u64) -> wasmtime::Result<Result<(), WitFailure>> {
        if let Some((_, old)) = self.timers.remove(&id) {
            old.abort();
        } else if self.timers.len() >= self.ctx.spec.max_timers {
            return Ok(Err(wit_failure(Failure::new(
                429,
                format!("at most {} timers may be set", self.ctx.spec.max_timers),
            ))));
        }
        let events = self.events.clone();
        let generation = self.generation;
        let token = self.next_token;
        self.next_token += 1;
        let delay = std::time::Duration::from_millis(delay_ms.min(u64::from(u32::MAX)));
        let task = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            // Waits for room (aborted meanwhile if replaced or cancelled): the queue holds at
            // most `max_timers`, as the timers set do.
            let _ = events
                .send(Event::Timer {
                    generation,
                    id,
                    token,
                })
                .await;
        });
        self.timers.insert(id, (token, task.abort_handle()));
        Ok(Ok(()))
    }

    fn cancel_timer(&mut self, id: u64) -> wasmtime::Result<()> {
        if let Some((_, t)) = self.timers.remove(&id) {
            t.abort();
        }
        Ok(())
    }

    fn config(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self
            .ctx
            .spec
            .config
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.clone()))
    }

    fn config_all(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self.ctx.spec.config.clone())
    }

    async fn kv_get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        let ctx = Arc::clone(&self.ctx);
        ctx.flush().await?;
        ctx.kv
            .get(&ctx.spec.name, &key)
            .await
            .map_err(|f| ctx.unavailable(f))
    }

    async fn kv_set(
        &mut self,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), WitFailure>> {
        let (max_key, max_value, max_total) = self.ctx.spec.kv_limits;
        if key.len() > max_key || value.len() > max_value {
            return Ok(Err(wit_failure(Failure::new(
                413,
                format!("keys are limited to {max_key} bytes and values to {max_value}"),
            ))));
        }
        let ctx = Arc::clone(&self.ctx);
        if let Some(wb) = &ctx.wb {
            return Ok(wb.set(key, value).await?.map_err(wit_failure));
        }
        Ok(ctx
            .kv
            .set(&ctx.spec.name, &key, value, max_total)
            .await
            .map_err(wit_failure))
    }

    async fn kv_delete(&mut self, key: String) -> wasmtime::Result<()> {
        if key.len() > self.ctx.spec.kv_limits.0 {
            // `kv-set` refuses such a key: nothing is stored under it.
            return Ok(());
        }
        let ctx = Arc::clone(&self.ctx);
        if let Some(wb) = &ctx.wb {
            return Ok(wb.delete(key).await?);
        }
        ctx.kv
            .delete(&ctx.spec.name, &key)
            .await
            .map_err(|f| ctx.unavailable(f))
    }

    async fn kv_keys(&mut self, prefix: String, limit: u32) -> wasmtime::Result<Vec<String>> {
        let ctx = Arc::clone(&self.ctx);
        ctx.flush().await?;
        ctx.kv
            .keys(&ctx.spec.name, &prefix, limit.min(1000))
            .await
            .map_err(|f| ctx.unavailable(f))
    }
}

/// Appservice calls: the embedder's Matrix layer acts as the connector's user (it enforces the
/// namespace); without one (a plain stub host) every call is refused with 501.
impl appservice::Host for State {
    async fn register_user(
        &mut self,
        localpart: String,
    ) -> wasmtime::Result<Result<String, WitFailure>> {
        let ctx = Arc::clone(&self.ctx);
        let Some(m) = &ctx.matrix else {
            return Ok(Err(no_appservice()));
        };
        ctx.flush().await?;
        Ok(m.register_user(&ctx.spec.name, &localpart)
            .await
            .map_err(wit_failure))
    }

    async fn join_room(
        &mut self,
        user_id: String,
        room: String,
    ) -> wasmtime::Result<Result<String, WitFailure>> {
        let ctx = Arc::clone(&self.ctx);
        let Some(m) = &ctx.matrix else {
            return Ok(Err(no_appservice()));
        };
        ctx.flush().await?;
        Ok(m.join_room(&ctx.spec.name, &user_id, &room)
            .await
            .map_err(wit_failure))
    }

    async fn send_event(
        &mut self,
        user_id: String,
        room_id: String,
        event_type: String,
        content: String,
    ) -> wasmtime::Result<Result<String, WitFailure>> {
        let ctx = Arc::clone(&self.ctx);
        let Some(m) = &ctx.matrix else {
            return Ok(Err(no_appservice()));
        };
        ctx.flush().await?;
        Ok(
            m.send_event(&ctx.spec.name, &user_id, &room_id, &event_type, &content)
                .await
                .map_err(wit_failure),
        )
    }

    async fn create_room(
        &mut self,
        user_id: String,
        alias_localpart: Option<String>,
        name: Option<String>,
    ) -> wasmtime::Result<Result<String, WitFailure>> {
        let ctx = Arc::clone(&self.ctx);
        let Some(m) = &ctx.matrix else {
            return Ok(Err(no_appservice()));
        };
        ctx.flush().await?;
        Ok(m.create_room(
            &ctx.spec.name,
            &user_id,
            alias_localpart.as_deref(),
            name.as_deref(),
        )
        .await
        .map_err(wit_failure))
    }
}

fn no_appservice() -> WitFailure {
    wit_failure(Failure::new(
        501,
        "this host runs the stub without a Matrix application service",
    ))
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
