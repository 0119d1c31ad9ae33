//! A service's link to the bus, for its `rethink_namespaces`: its session
//! (`Bus::open_appservice`, restored with its outbox after a restart), the claims of its
//! patterns, and the in-process "connection" through which its queue takes the frames waiting
//! in the outbox into transactions (`rethink_messages`). A frame is acknowledged (and its sender
//! released) only once the transaction holding it is committed, so a kill loses nothing; a
//! frame already in a transaction is recognised by its seq (`AsPosition::bus_seq`) and not
//! sent twice.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rethink_connectors::AppService;
use serde_json::Value;

use crate::bus::{Bus, Claim, RouteError, Session};
use crate::store::Settle;

/// A service's session on the bus.
#[derive(Debug)]
pub struct BusLink {
    bus: Bus,
    session: Arc<Session>,
    /// The in-process connection currently attached (a fresh one rewinds the outbox).
    connection: AtomicU64,
}

/// Frames taken from the outbox, not yet acknowledged.
#[derive(Debug, Default)]
pub(super) struct Taken {
    /// `(seq, message without seq)`, in order.
    pub(super) frames: Vec<(u64, Value)>,
    pub(super) settles: Vec<Settle>,
}

impl BusLink {
    /// Opens (or takes over) the session of `service` and attaches the queue to it.
    pub(super) async fn open(
        bus: &Bus,
        service: &AppService,
        server_name: &str,
    ) -> Result<Self, RouteError> {
        let subject = format!("@{}:{server_name}", service.registration.sender_localpart);
        let session = bus.open_appservice(service.id(), subject).await?;
        let connection = bus.next_connection_id();
        bus.attach(&session, connection, None).await;
        Ok(Self {
            bus: bus.clone(),
            session,
            connection: AtomicU64::new(connection),
        })
    }

    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }

    /// The claims of `service`'s patterns, routed to this session.
    pub(super) fn claims(&self, service: &AppService) -> Vec<Claim> {
        service
            .registration
            .namespaces
            .rethink
            .iter()
            .map(|ns| Claim {
                service: Arc::from(service.id()),
                namespace: ns.clone(),
                session: Arc::clone(&self.session),
            })
            .collect()
    }

    /// Takes up to `max` frames not yet taken.
    pub(super) fn take(&self, max: usize) -> Taken {
        let mut rendered = Vec::new();
        let mut taken = Taken::default();
        self.session.take_unsent(
            self.connection.load(Ordering::Acquire),
            max,
            &mut rendered,
            &mut taken.settles,
        );
        for frame in rendered {
            match serde_json::from_str::<Value>(&frame) {
                Ok(mut v) => {
                    let seq = v.get("seq").and_then(Value::as_u64).unwrap_or(0);
                    if let Some(map) = v.as_object_mut() {
                        map.remove("seq");
                    }
                    taken.frames.push((seq, v));
                }
                Err(e) => tracing::error!(error = %e, "an outbox frame does not parse"),
            }
        }
        taken
    }

    /// The frames up to `seq` are in a committed transaction: release them.
    pub(super) async fn done(&self, seq: u64, settles: Vec<Settle>) {
        for s in settles {
            s.fire();
        }
        self.bus.ack(&self.session, seq).await;
    }

    /// A transaction could not be stored: the frames taken are taken again next time.
    pub(super) async fn rewind(&self) {
        let connection = self.bus.next_connection_id();
        self.connection.store(connection, Ordering::Release);
        self.bus.attach(&self.session, connection, None).await;
    }

    /// Resolves when frames may wait in the outbox.
    pub(super) async fn wait(&self) {
        self.session.wait_for_frames().await;
    }

    /// Detaches the queue (a reload replaced the service).
    pub(super) fn detach(&self) {
        self.bus
            .detach(&self.session, self.connection.load(Ordering::Acquire));
    }
}
