//! The way out to each other domain: its own `default` stub, run in the stub host and fed from
//! the domain's gateway session (`bus/gateways.rs`).
//!
//! [`start_gateways`] turns cross-domain routing on in the bus and runs one task per domain
//! announced (opened on first use, or restored at start with what its outbox still holds).
//! That task attaches to the gateway session as its in-process connection, then:
//!
//! - loads the domain's stub (`CrossDomain::load_stub`: descriptor signature, sha256, cache),
//!   fetches a challenge from its node and signs it (our proof, the stub's `token`), checks the
//!   component in the host and starts it with egress only to the descriptor's origins, the whole
//!   remote domain as its addresses and listeners, `runtime` = `hyperty-runtime://<D>/node/<us>`;
//!   a pump moves the outbox's frames into its mailbox, each with its outbox position as
//!   `gseq`, and acknowledges them only once the stub holds them durably (`held.rs`): the
//!   outbox (persisted in bus.db, its frames settled for their senders by the group commit)
//!   and then the stub's store are the domain's persisted queue, so a SIGKILL of this node or
//!   a trap of the stub loses nothing; a router passes what the stub hands back through
//!   `Bus::authorize` / `route` as [`Origin::Node`];
//! - if any of that fails, logs why once and answers every message for the domain with the
//!   error's code (502, 504 for a timeout) naming the domain, for `cross_domain.retry_secs`,
//!   then tries again.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rethink_crossdomain::CrossDomainError;
use rethink_proto::{Code, Envelope, MessageType};
use rethink_stubs::{
    BreakerState, BusPort, Failure, Host, HostConfig, KvStore, LostReason, Mailbox, Refused,
    StubMetrics, StubSpec,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::CrossDomain;
use super::held::HeldKv;
use crate::bus::{Bus, Origin, Session};
use crate::locks::lock;
use crate::ws::codec;

/// Frames taken from the outbox at once.
const BATCH: usize = 64;
/// Messages a stub may have handed back and not yet routed.
const OUTGOING: usize = 1024;
/// How often a full mailbox is retried.
const RETRY_FULL: Duration = Duration::from_millis(5);

/// What a task of one domain needs.
#[derive(Debug, Clone)]
struct Ctx {
    bus: Bus,
    cross: CrossDomain,
    host: Host,
    kv: Arc<dyn KvStore>,
    shutdown: CancellationToken,
}

/// Turns on routing to other domains and runs their stubs until `shutdown` (nothing when
/// `cross_domain.enabled` is off).
pub fn start_gateways(
    bus: Bus,
    cross: CrossDomain,
    metrics: StubMetrics,
    kv: Arc<dyn KvStore>,
    cache_dir: std::path::PathBuf,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    if !cross.config().enabled {
        return tokio::spawn(async {});
    }
    let restored = bus.set_gateway_starter(tx.clone());
    for d in restored {
        let _ = tx.send(d);
    }
    tokio::spawn(async move {
        let mut host: Option<Host> = None;
        loop {
            let domain = tokio::select! {
                () = shutdown.cancelled() => return,
                d = rx.recv() => match d { Some(d) => d, None => return },
            };
            if host.is_none() {
                let config = HostConfig {
                    cache_dir: Some(cache_dir.clone()),
                    threads: 1,
                    ..HostConfig::default()
                };
                match Host::new(config, metrics.clone()) {
                    Ok(h) => host = Some(h),
                    Err(e) => {
                        tracing::error!(error = %e, "no stub host for other domains' stubs");
                        continue;
                    }
                }
            }
            let Some(h) = host.clone() else { continue };
            let ctx = Ctx {
                bus: bus.clone(),
                cross: cross.clone(),
                host: h,
                kv: Arc::clone(&kv),
                shutdown: shutdown.clone(),
            };
            tokio::spawn(run_domain(ctx, domain));
        }
    })
}

/// The addresses of domain `d` a stub of `d` may send from and listen on.
fn domain_addresses(d: &str) -> Vec<String> {
    [
        format!("hyperty://{d}"),
        format!("comm://{d}"),
        format!("user://{d}"),
        format!("hyperty-runtime://{d}"),
        format!("runtime://{d}"),
        format!("domain://msg-node.{d}"),
        format!("domain://registry.{d}"),
    ]
    .into()
}

async fn run_domain(ctx: Ctx, domain: String) {
    let bus = &ctx.bus;
    let Some(session) = bus.session_by_runtime(&bus.gateway_runtime_url(&domain)) else {
        return;
    };
    let connection = bus.next_connection_id();
    let _ = bus.attach(&session, connection, None).await;
    let origin = Origin::Node {
        session: Arc::clone(&session),
        domain: Arc::from(domain.as_str()),
    };
    while !ctx.shutdown.is_cancelled() {
        match start_stub(&ctx, &domain).await {
            Ok(running) => {
                run_stub(&ctx, &session, connection, &origin, running).await;
                break;
            }
            Err(e) => {
                tracing::warn!(
                    domain = %domain,
                    code = e.code(),
                    error = %e,
                    "the way to another domain is refused: its messages are answered with an error until the next try"
                );
                let retry = ctx.cross.config().retry;
                refuse_for(&ctx, &session, connection, &origin, &e, retry).await;
            }
        }
    }
    bus.detach(&session, connection);
}

/// A started stub of another domain.
struct Running {
    handle: rethink_stubs::StubHandle,
    port: Arc<GatewayPort>,
    sends: mpsc::Receiver<Outgoing>,
    lost: mpsc::UnboundedReceiver<Outgoing>,
    /// The highest outbox position the stub holds durably.
    held: watch::Receiver<u64>,
}

/// Key-value bytes a stub of another domain may keep (its queue is stored there).
const STUB_KV_TOTAL: usize = 256 << 20;

async fn start_stub(ctx: &Ctx, domain: &str) -> Result<Running, CrossDomainError> {
    let stub = ctx.cross.load_stub(domain).await?;
    let peer = ctx.cross.resolve(domain);
    let token = ctx.cross.proof_for(&peer).await?;
    let checked = ctx
        .host
        .check(&stub.bytes)
        .map_err(|e| CrossDomainError::Malformed {
            domain: domain.to_owned(),
            what: "the stub component",
            problem: e.to_string(),
        })?;
    let addresses = domain_addresses(domain);
    let ours = [
        "runtime",
        "token",
        "listen",
        "queue_max",
        "deliver_timeout_ms",
        "domain",
    ];
    let mut config: Vec<(String, String)> = stub
        .configuration
        .iter()
        .filter(|(k, _)| !ours.contains(&k.as_str()))
        .cloned()
        .collect();
    config.push((
        "runtime".into(),
        format!("hyperty-runtime://{domain}/node/{}", ctx.bus.domain()),
    ));
    config.push(("token".into(), token));
    config.push(("listen".into(), addresses.join(",")));
    let cd = ctx.cross.config();
    config.push(("queue_max".into(), cd.queue_limit.to_string()));
    config.push((
        "deliver_timeout_ms".into(),
        cd.delivery_timeout.as_millis().to_string(),
    ));
    config.push(("domain".into(), domain.to_owned()));
    let mut spec = StubSpec::new(format!("xdomain-{domain}"));
    spec.config = config;
    spec.addresses = addresses;
    spec.allow = stub.origins.clone();
    spec.mailbox = 1024;
    spec.kv_limits.2 = STUB_KV_TOTAL;
    let (kv, held) = HeldKv::new(Arc::clone(&ctx.kv));
    let (sends_tx, sends) = mpsc::channel(OUTGOING);
    let (lost_tx, lost) = mpsc::unbounded_channel();
    let port = Arc::new(GatewayPort {
        sends: sends_tx,
        lost: lost_tx,
        listeners: Mutex::new(Vec::new()),
    });
    let handle = ctx.host.start(&checked, spec, port.clone(), Arc::new(kv));
    handle.started().await;
    tracing::info!(domain, version = %stub.version, sha256 = %stub.sha256, "the stub of another domain is running");
    Ok(Running {
        handle,
        port,
        sends,
        lost,
        held,
    })
}

/// Runs the pump and the router of a started stub until shutdown.
async fn run_stub(
    ctx: &Ctx,
    session: &Arc<Session>,
    connection: u64,
    origin: &Origin,
    running: Running,
) {
    let Running {
        handle,
        port,
        sends,
        lost,
        mut held,
    } = running;
    let router = tokio::spawn(route_back(
        ctx.bus.clone(),
        Arc::clone(session),
        origin.clone(),
        sends,
        lost,
    ));
    let mailbox = handle.mailbox();
    let mut frames = Vec::with_capacity(BATCH);
    let mut settles = Vec::new();
    // Frames handed on and not yet acknowledged: (outbox seq, whether it waits for the stub
    // to hold it; false when it was answered here).
    let mut handed: VecDeque<(u64, bool)> = VecDeque::new();
    'pump: loop {
        frames.clear();
        // The senders are settled by the group commit of their frames (durable here), not
        // when the stub's mailbox takes them.
        settles.clear();
        session.take_unsent(connection, BATCH, &mut frames, &mut settles);
        if frames.is_empty() {
            tokio::select! {
                () = ctx.shutdown.cancelled() => break 'pump,
                () = session.wait_for_frames() => continue,
                r = held.changed() => {
                    if r.is_err() {
                        break 'pump;
                    }
                    let upto = *held.borrow_and_update();
                    release(&ctx.bus, session, &mut handed, upto).await;
                    continue;
                }
            }
        }
        for frame in frames.drain(..) {
            let Some(seq) = frame_seq(&frame) else {
                continue;
            };
            let to_stub = match Envelope::parse(&with_gseq(&frame)) {
                Ok(env) => match deliver(&port, &mailbox, env, &ctx.shutdown).await {
                    Handed::ToStub => true,
                    Handed::Answered => false,
                    Handed::ShutDown => break 'pump,
                },
                Err(e) => {
                    tracing::error!(error = %e, "an outbox frame does not parse");
                    false
                }
            };
            handed.push_back((seq, to_stub));
        }
        let upto = *held.borrow_and_update();
        release(&ctx.bus, session, &mut handed, upto).await;
    }
    handle.stop().await;
    drop(port);
    if tokio::time::timeout(Duration::from_secs(5), router)
        .await
        .is_err()
    {
        tracing::warn!("a gateway's router did not finish within 5 s");
    }
}

/// Acknowledges the outbox up to the last frame of `handed` that needs nothing more: answered
/// here, or held by the stub (`upto`).
async fn release(bus: &Bus, session: &Arc<Session>, handed: &mut VecDeque<(u64, bool)>, upto: u64) {
    let mut last = None;
    while let Some(&(seq, to_stub)) = handed.front() {
        if to_stub && seq > upto {
            break;
        }
        last = Some(seq);
        handed.pop_front();
    }
    if let Some(seq) = last {
        bus.ack(session, seq).await;
    }
}

/// The frame with its `seq` renamed `gseq` (an outbox frame starts with `{"seq":`), so that
/// the stub sees its outbox position.
fn with_gseq(frame: &str) -> std::borrow::Cow<'_, str> {
    match frame.strip_prefix("{\"seq\":") {
        Some(rest) => format!("{{\"gseq\":{rest}").into(),
        None => frame.into(),
    }
}

/// Where [`deliver`] put a message.
enum Handed {
    /// In the stub's mailbox.
    ToStub,
    /// Answered here (breaker open, not listened to, stub gone).
    Answered,
    ShutDown,
}

/// The seq of a frame the outbox rendered (`{"seq":N,...`).
fn frame_seq(frame: &str) -> Option<u64> {
    let rest = frame.strip_prefix("{\"seq\":")?;
    let end = rest.find(',')?;
    rest[..end].parse().ok()
}

/// Puts `env` in the mailbox, waiting while it is full, or has it answered.
async fn deliver(
    port: &GatewayPort,
    mailbox: &Mailbox,
    env: Envelope,
    shutdown: &CancellationToken,
) -> Handed {
    if mailbox.breaker() == BreakerState::Open {
        port.report_lost(env, LostReason::Unavailable);
        return Handed::Answered;
    }
    if !env.to().any(|to| port.listens(to)) {
        port.report_lost(env, LostReason::NotListening);
        return Handed::Answered;
    }
    let mut env = env;
    loop {
        match mailbox.deliver(env) {
            Ok(()) => return Handed::ToStub,
            Err((Refused::MailboxFull, back)) => {
                env = back;
                tokio::select! {
                    () = shutdown.cancelled() => return Handed::ShutDown,
                    () = tokio::time::sleep(RETRY_FULL) => {}
                }
            }
            Err((_, back)) => {
                port.report_lost(back, LostReason::Unavailable);
                return Handed::Answered;
            }
        }
    }
}

/// Answers every frame of the gateway with `error` for `period` (or until shutdown).
async fn refuse_for(
    ctx: &Ctx,
    session: &Arc<Session>,
    connection: u64,
    origin: &Origin,
    error: &CrossDomainError,
    period: Duration,
) {
    let deadline = tokio::time::sleep(period);
    tokio::pin!(deadline);
    let code = Code(error.code());
    let description = error.to_string();
    let mut frames = Vec::with_capacity(BATCH);
    let mut settles = Vec::new();
    loop {
        frames.clear();
        settles.clear();
        session.take_unsent(connection, BATCH, &mut frames, &mut settles);
        if frames.is_empty() {
            tokio::select! {
                () = ctx.shutdown.cancelled() => return,
                () = &mut deadline => return,
                () = session.wait_for_frames() => continue,
            }
        }
        for frame in frames.drain(..) {
            let Some(seq) = frame_seq(&frame) else {
                continue;
            };
            if let Ok(env) = Envelope::parse(&frame) {
                answer_error(&ctx.bus, origin, &env, code, &description).await;
            }
            ctx.bus.ack(session, seq).await;
        }
        for s in settles.drain(..) {
            s.fire();
        }
    }
}

/// Answers the sender of `env` (a message for the other domain) with `code`, from the address
/// it was sent to.
async fn answer_error(bus: &Bus, origin: &Origin, env: &Envelope, code: Code, description: &str) {
    if *env.kind() == MessageType::Response {
        tracing::debug!(
            id = env.id_json(),
            "a response to another domain was not delivered"
        );
        return;
    }
    let reply = codec::error_response(env.id_json(), env.first_to(), env.from(), code, description);
    match bus.authorize(&reply, origin) {
        Ok(permit) => {
            let report = bus.route(permit).await;
            for f in &report.failures {
                tracing::debug!(error = %f.error, "an error answer from a gateway was not delivered");
            }
        }
        Err(denied) => tracing::debug!(%denied, "an error answer from a gateway was refused"),
    }
}

/// Routes what the stub hands back (messages of the other domain), and answers the senders of
/// messages it lost.
async fn route_back(
    bus: Bus,
    session: Arc<Session>,
    origin: Origin,
    mut sends: mpsc::Receiver<Outgoing>,
    mut lost: mpsc::UnboundedReceiver<Outgoing>,
) {
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
            Outgoing::Lost(env, reason) => {
                let description = format!("the stub of the other domain: {reason}");
                answer_error(&bus, &origin, &env, Code(reason.code()), &description).await;
            }
        }
    }
}

/// One message of the other domain into our bus; a refusal goes back to its sender through
/// the gateway (and so the stub).
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
            codec::failures_response(&env, &report.failures)
        }
    };
    if let Some(a) = answer
        && *env.kind() != MessageType::Response
        && bus.answer(session, &a).await.is_err()
    {
        tracing::debug!("a gateway ended before its answer");
    }
}

/// Something for a gateway's router.
#[derive(Debug)]
enum Outgoing {
    Send(Envelope),
    Lost(Envelope, LostReason),
}

/// The bus as another domain's stub sees it.
#[derive(Debug)]
struct GatewayPort {
    sends: mpsc::Sender<Outgoing>,
    /// Only messages the mailbox accepted can be lost: bounded by it.
    lost: mpsc::UnboundedSender<Outgoing>,
    listeners: Mutex<Vec<String>>,
}

impl GatewayPort {
    fn listens(&self, address: &str) -> bool {
        lock(&self.listeners).iter().any(|l| {
            address == l
                || address
                    .strip_prefix(l.as_str())
                    .is_some_and(|rest| l.ends_with('/') || rest.starts_with('/'))
        })
    }

    fn report_lost(&self, message: Envelope, reason: LostReason) {
        let _ = self.lost.send(Outgoing::Lost(message, reason));
    }
}

impl BusPort for GatewayPort {
    fn send(&self, stub: &str, message: Envelope) -> Result<(), Failure> {
        self.sends
            .try_send(Outgoing::Send(message))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => Failure::new(
                    503,
                    format!("stub {stub}: the outgoing queue is full, try again later"),
                ),
                mpsc::error::TrySendError::Closed(_) => {
                    Failure::new(503, format!("stub {stub}: the node is stopping"))
                }
            })
    }

    fn add_listener(&self, _stub: &str, address: &str) -> Result<(), Failure> {
        let mut l = lock(&self.listeners);
        if !l.iter().any(|a| a == address) {
            l.push(address.to_owned());
        }
        Ok(())
    }

    fn remove_listener(&self, _stub: &str, address: &str) {
        lock(&self.listeners).retain(|a| a != address);
    }

    fn lost(&self, _stub: &str, message: Envelope, reason: LostReason) {
        self.report_lost(message, reason);
    }
}
