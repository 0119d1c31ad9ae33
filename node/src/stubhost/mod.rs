//! The protocol stubs the node runs (`[stubs.run.<instance>]`), with the host of crate
//! `rethink-stubs`. Each running stub is a participant of the bus like a runtime:
//!
//! - its session (`Bus::open_stub`) owns the addresses the operator gave it; messages for them
//!   land in its outbox (persisted, bounded: 503 when full);
//! - a pump task is its in-process connection: it takes frames from the outbox and puts them
//!   in the stub's mailbox, acknowledging each once the mailbox took it (a message lost after
//!   that is answered by the router: 502 or 504 naming the stub); while the mailbox is full the
//!   frames wait in the outbox; with the breaker open they are answered 503;
//! - a router task passes what the stub sends through `Bus::authorize` and `Bus::route` with
//!   origin `Origin::Stub` (`context.transport` is `"stub"`): anti-spoofing, rate and policy
//!   apply as to any runtime, and refusals come back to the stub as responses, through
//!   `on-message`.

mod kv;
mod port;

pub use kv::SqliteKv;

use std::sync::Arc;
use std::time::Duration;

use rethink_proto::{Code, Envelope, MessageType};
use rethink_stubs::{
    BreakerState, Host, HostConfig, KvStore, LostReason, Mailbox, Refused, StubError, StubHandle,
    StubMetrics, StubSpec,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::bus::{Bus, Origin, RouteError, Session};
use crate::config::{StubRunConfig, StubsConfig};
use crate::ws::codec;
use port::{NodePort, Outgoing};

/// Messages a stub may have sent and not yet routed.
const OUTGOING: usize = 256;
/// Frames taken from the outbox at once.
const BATCH: usize = 64;
/// How often the pump retries a full mailbox.
const RETRY: Duration = Duration::from_millis(5);

/// Why the configured stubs could not start.
#[derive(Debug, thiserror::Error)]
pub enum StubsError {
    #[error("stub {name}: reading {path}: {source}")]
    Read {
        name: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("stub {name}: {source}")]
    Stub {
        name: String,
        #[source]
        source: StubError,
    },
    #[error("stub {name}: its addresses: {source}")]
    Addresses {
        name: String,
        #[source]
        source: RouteError,
    },
}

struct Running {
    handle: StubHandle,
    session: Arc<Session>,
    connection: u64,
    pump: JoinHandle<()>,
    router: JoinHandle<()>,
    cancel: CancellationToken,
}

/// The running stubs.
pub struct RunningStubs {
    bus: Bus,
    stubs: Vec<Running>,
}

impl std::fmt::Debug for RunningStubs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningStubs")
            .field("stubs", &self.stubs.len())
            .finish_non_exhaustive()
    }
}

/// Starts every configured stub. With none configured, no engine is built.
pub async fn start(
    bus: &Bus,
    config: &StubsConfig,
    metrics: StubMetrics,
    kv: Arc<dyn KvStore>,
) -> Result<RunningStubs, StubsError> {
    let mut running = RunningStubs {
        bus: bus.clone(),
        stubs: Vec::new(),
    };
    if config.run.is_empty() {
        return Ok(running);
    }
    let host = Host::new(
        HostConfig {
            cache_dir: Some(config.cache_dir.clone()),
            max_instances: (config.run.len() as u32).max(1),
            ..HostConfig::default()
        },
        metrics,
    )
    .map_err(|source| StubsError::Stub {
        name: "(host)".into(),
        source,
    })?;
    for run in &config.run {
        let stub = start_one(bus, &host, run, Arc::clone(&kv)).await?;
        running.stubs.push(stub);
    }
    tracing::info!(stubs = running.stubs.len(), "protocol stubs running");
    Ok(running)
}

async fn start_one(
    bus: &Bus,
    host: &Host,
    run: &StubRunConfig,
    kv: Arc<dyn KvStore>,
) -> Result<Running, StubsError> {
    let name = run.name.clone();
    let bytes = tokio::fs::read(&run.component)
        .await
        .map_err(|source| StubsError::Read {
            name: name.clone(),
            path: run.component.display().to_string(),
            source,
        })?;
    let checked = host.check(&bytes).map_err(|source| StubsError::Stub {
        name: name.clone(),
        source,
    })?;
    let session = bus
        .open_stub(&name, &run.addresses)
        .await
        .map_err(|source| StubsError::Addresses {
            name: name.clone(),
            source,
        })?;
    let (sends, sends_rx) = mpsc::channel(OUTGOING);
    let (lost, lost_rx) = mpsc::unbounded_channel();
    let port = Arc::new(NodePort::new(sends, lost));
    let mut spec = StubSpec::new(&name);
    spec.config = run.config.clone();
    spec.addresses = run.addresses.clone();
    spec.allow = run.allow.clone();
    spec.memory_bytes = run.memory_bytes;
    spec.call_timeout = run.call_timeout;
    spec.mailbox = run.mailbox;
    let handle = host.start(&checked, spec, port.clone(), kv);
    // Its listeners are set by its first init: messages are taken from its outbox after that
    // (or after init failed), so that none is refused for arriving first.
    handle.started().await;
    let connection = bus.next_connection_id();
    let cancel = bus.attach(&session, connection, None).await;
    let pump = tokio::spawn(pump(
        bus.clone(),
        Arc::clone(&session),
        connection,
        cancel.clone(),
        PumpTarget {
            port: Arc::clone(&port),
            mailbox: handle.mailbox(),
        },
    ));
    let router = tokio::spawn(route_stub(
        bus.clone(),
        Arc::clone(&session),
        name.clone(),
        sends_rx,
        lost_rx,
    ));
    Ok(Running {
        handle,
        session,
        connection,
        pump,
        router,
        cancel,
    })
}

impl RunningStubs {
    /// Stops every stub: the pumps stop taking frames (what is left stays in the outboxes,
    /// persisted), the mailboxes are drained, then what the stubs sent is routed.
    pub async fn stop(self) {
        for s in self.stubs {
            s.cancel.cancel();
            let _ = s.pump.await;
            s.handle.stop().await;
            // The host dropped its port with the actor: the router ends once it has routed
            // what is queued.
            if tokio::time::timeout(Duration::from_secs(5), s.router)
                .await
                .is_err()
            {
                tracing::warn!("a stub's router did not finish within 5 s");
            }
            self.bus.detach(&s.session, s.connection);
        }
    }
}

/// What the pump delivers into: the stub's mailbox, and where refusals are reported.
struct PumpTarget {
    port: Arc<NodePort>,
    mailbox: Mailbox,
}

/// The seq of a frame the outbox rendered (`{"seq":N,...`).
fn frame_seq(frame: &str) -> Option<u64> {
    let rest = frame.strip_prefix("{\"seq\":")?;
    let end = rest.find(',')?;
    rest[..end].parse().ok()
}

/// The stub's in-process connection: outbox → mailbox, acknowledging what the mailbox took.
async fn pump(
    bus: Bus,
    session: Arc<Session>,
    connection: u64,
    cancel: CancellationToken,
    target: PumpTarget,
) {
    let mut frames = Vec::with_capacity(BATCH);
    let mut settles = Vec::new();
    loop {
        frames.clear();
        settles.clear();
        session.take_unsent(connection, BATCH, &mut frames, &mut settles);
        if frames.is_empty() {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = session.wait_for_frames() => continue,
            }
        }
        for frame in frames.drain(..) {
            let Some(seq) = frame_seq(&frame) else {
                continue;
            };
            match Envelope::parse(&frame) {
                Ok(env) => {
                    if !deliver(&target, env, &cancel).await {
                        return;
                    }
                }
                Err(e) => tracing::error!(error = %e, "an outbox frame does not parse"),
            }
            bus.ack(&session, seq).await;
        }
        for s in settles.drain(..) {
            s.fire();
        }
    }
}

/// Puts `env` in the mailbox, waiting while it is full. `false` if the pump was cancelled
/// meanwhile (the frame stays in the outbox).
async fn deliver(target: &PumpTarget, env: Envelope, cancel: &CancellationToken) -> bool {
    if target.mailbox.breaker() == BreakerState::Open {
        target.port.report_lost(env, LostReason::Unavailable);
        return true;
    }
    if !env.to().any(|to| target.port.listens(to)) {
        target.port.report_lost(env, LostReason::NotListening);
        return true;
    }
    let mut env = env;
    loop {
        match target.mailbox.deliver(env) {
            Ok(()) => return true,
            Err((Refused::MailboxFull, back)) => {
                env = back;
                tokio::select! {
                    () = cancel.cancelled() => return false,
                    () = tokio::time::sleep(RETRY) => {}
                }
            }
            Err((_, back)) => {
                target.port.report_lost(back, LostReason::Unavailable);
                return true;
            }
        }
    }
}

/// Routes what the stub sends, and answers the senders of messages it lost.
async fn route_stub(
    bus: Bus,
    session: Arc<Session>,
    name: String,
    mut sends: mpsc::Receiver<Outgoing>,
    mut lost: mpsc::UnboundedReceiver<Outgoing>,
) {
    let origin = Origin::Stub(Arc::clone(&session));
    loop {
        let item = tokio::select! {
            biased;
            Some(item) = lost.recv() => item,
            item = sends.recv() => match item {
                Some(item) => item,
                None => match lost.try_recv() {
                    Ok(item) => item,
                    Err(_) => return,
                },
            },
        };
        match item {
            Outgoing::Send(env) => send(&bus, &session, &origin, env).await,
            Outgoing::Lost(env, reason) => answer_lost(&bus, &origin, &name, &env, reason).await,
        }
    }
}

async fn send(bus: &Bus, session: &Arc<Session>, origin: &Origin, env: Envelope) {
    let env = crate::bus::identity::stamp(&env, origin).unwrap_or(env);
    let answer = match bus.authorize(&env, origin) {
        Err(denied) => Some(codec::error_response(
            env.id_json(),
            env.first_to(),
            env.from(),
            codec::denied_code(&denied),
            &denied.to_string(),
        )),
        Ok(permit) => {
            let report = bus.route(permit).await;
            for reply in &report.replies {
                if bus.answer(session, reply).await.is_err() {
                    return;
                }
            }
            codec::failures_response(&env, &report.failures)
        }
    };
    // A refusal of a response is not answered (a response never gets one).
    if let Some(a) = answer
        && *env.kind() != MessageType::Response
        && bus.answer(session, &a).await.is_err()
    {
        tracing::debug!("a stub's session ended before its answer");
    }
}

/// Answers the sender of a message the stub lost, from the address it was sent to.
async fn answer_lost(bus: &Bus, origin: &Origin, name: &str, env: &Envelope, reason: LostReason) {
    if *env.kind() == MessageType::Response {
        tracing::warn!(stub = name, %reason, id = env.id_json(), "a response to the stub was lost");
        return;
    }
    let description = format!("stub {name}: {reason}");
    let reply = codec::error_response(
        env.id_json(),
        env.first_to(),
        env.from(),
        Code(reason.code()),
        &description,
    );
    match bus.authorize(&reply, origin) {
        Ok(permit) => {
            let report = bus.route(permit).await;
            for f in &report.failures {
                tracing::warn!(stub = name, error = %f.error, "the answer to a lost message was not delivered");
            }
        }
        Err(denied) => {
            tracing::warn!(stub = name, %denied, "the answer to a lost message was refused");
        }
    }
}
