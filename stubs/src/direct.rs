//! [`DirectStub`]: one instance called in the caller's own task, without mailbox, supervisor
//! or the stubs' runtime. For benchmarks and tools that measure or drive a stub call by call;
//! the node uses [`crate::StubHandle`].

use std::sync::Arc;
use std::sync::atomic::AtomicU8;
use std::time::Instant;

use rethink_proto::Envelope;

use crate::actor::{Actor, Call, Live};
use crate::error::{LostReason, StubError};
use crate::host::{Checked, Host};
use crate::port::{BusPort, KvStore};
use crate::spec::StubSpec;
use crate::state::StubCtx;

/// A stub instance driven directly (see the module docs). Timers it sets and network events
/// are not delivered; as [`DirectStub::on_timer`] passes no setting's token, a timer set stays
/// counted against `max_timers` until the stub cancels or replaces it.
pub struct DirectStub {
    actor: Actor,
    live: Live,
}

impl std::fmt::Debug for DirectStub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectStub").finish_non_exhaustive()
    }
}

impl DirectStub {
    /// Instantiates `checked` and runs its `init`. Must be called within a tokio runtime.
    pub async fn new(
        host: &Host,
        checked: &Checked,
        spec: StubSpec,
        port: Arc<dyn BusPort>,
        kv: Arc<dyn KvStore>,
    ) -> Result<Self, StubError> {
        let name = spec.name.clone();
        let ctx = Arc::new(StubCtx {
            spec,
            port,
            kv,
            matrix: None,
            started: Instant::now(),
            wb: None,
        });
        let mut actor = Actor::new(
            Arc::clone(host.shared()),
            checked.pre.clone(),
            ctx,
            Arc::new(AtomicU8::new(0)),
        );
        match actor.instantiate().await {
            Some(live) => Ok(Self { actor, live }),
            None => Err(StubError::Instantiate {
                stub: name,
                reason: "instantiation or init failed (see the log)".into(),
            }),
        }
    }

    /// Calls `on-message` with `message`. After an error the instance is unusable.
    pub async fn on_message(&mut self, message: Envelope) -> Result<(), LostReason> {
        self.actor
            .call(&mut self.live, Call::Message(message))
            .await
            .map_err(|(reason, _)| reason)
    }

    /// Calls `on-timer` with `id`.
    pub async fn on_timer(&mut self, id: u64) -> Result<(), LostReason> {
        self.actor
            .call(&mut self.live, Call::Timer(id, None))
            .await
            .map_err(|(reason, _)| reason)
    }
}
