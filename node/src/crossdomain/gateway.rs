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
//!   remote domain as its addresses and listeners, `runtime` = `hyperty-runtime://<D>/node/<us>`,
//!   on the node's one stub host (`stubhost::LazyHost`); the stub host's pump moves the
//!   outbox's frames into its mailbox, each with its outbox position as `gseq`, and
//!   acknowledges them only once the stub holds them durably (`AckRule::Held`, `held.rs`; for a
//!   stub that does not say so in its records, once the other node confirmed them, `tap.rs`): the
//!   outbox (persisted in bus.db, its frames settled for their senders by the group commit)
//!   and then the stub's store are the domain's persisted queue, so a SIGKILL of this node or
//!   a trap of the stub loses nothing; the stub host's router passes what the stub hands back
//!   through `Bus::authorize` / `route` as [`Origin::Node`];
//! - if the domain's node is down or unreachable (`CrossDomainError::is_unreachable`: refused,
//!   reset, a 502-504 from a proxy), its messages wait in the outbox (`waiting.rs`: capped at
//!   `queue_limit`, 504 after `delivery_timeout_secs`) and the start is tried again with a
//!   backoff (200 ms doubling up to `retry_secs`);
//! - if anything else fails, logs why once and answers every message for the domain with the
//!   error's code (502, 504 for a timeout) naming the domain, for `cross_domain.retry_secs`,
//!   then tries again.

use std::sync::Arc;
use std::time::Duration;

use rethink_crossdomain::CrossDomainError;
use rethink_proto::{Code, Envelope};
use rethink_stubs::{KvStore, StubSpec};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::held::HeldKv;
use super::tap::SessionTap;
use super::waiting::Waiting;
use super::{CrossDomain, Proof};
use crate::bus::{Bus, Origin, Session};
use crate::stubhost::{
    AckRule, LazyHost, LostRx, NodePort, Pump, PumpTarget, QueueRx, answer_error, frame_seq,
    lost_queue, outgoing, route_stub,
};

/// Frames taken from the outbox at once while the domain is refused.
const BATCH: usize = 64;
/// Messages a stub may have handed back and not yet routed.
const OUTGOING: usize = 1024;
/// Stub instances the node's host keeps for other domains' stubs (one per domain at once).
pub const GATEWAY_INSTANCES: u32 = 16;

/// What a task of one domain needs.
#[derive(Debug, Clone)]
struct Ctx {
    bus: Bus,
    cross: CrossDomain,
    host: Arc<LazyHost>,
    kv: Arc<dyn KvStore>,
    shutdown: CancellationToken,
}

/// Turns on routing to other domains and runs their stubs on the node's stub `host` until
/// `shutdown` (nothing when `cross_domain.enabled` is off).
pub fn start_gateways(
    bus: Bus,
    cross: CrossDomain,
    host: Arc<LazyHost>,
    kv: Arc<dyn KvStore>,
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
        loop {
            let domain = tokio::select! {
                () = shutdown.cancelled() => return,
                d = rx.recv() => match d { Some(d) => d, None => return },
            };
            let ctx = Ctx {
                bus: bus.clone(),
                cross: cross.clone(),
                host: Arc::clone(&host),
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
    let Some(session) = ctx
        .bus
        .session_by_runtime(&ctx.bus.gateway_runtime_url(&domain))
    else {
        return;
    };
    // The domain's task ends with the node, or when its gateway session leaves this node (in
    // a cluster, taken over by another node after this one was thought gone: two stubs must
    // not speak for one gateway).
    let stop = ctx.shutdown.child_token();
    let left = session.left().clone();
    let linked = stop.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = left.cancelled() => linked.cancel(),
            () = linked.cancelled() => {}
        }
    });
    let ctx = Ctx {
        shutdown: stop,
        ..ctx
    };
    let bus = &ctx.bus;
    // The pump settles nothing (the stub's store, then the outbox's commit, hold a message):
    // the senders' frames are committed at once, not after the group-commit delay.
    session.settled_by_commit();
    let mut connection = bus.next_connection_id();
    let _ = bus.attach(&session, connection, None).await;
    let origin = Origin::Node {
        session: Arc::clone(&session),
        domain: Arc::from(domain.as_str()),
    };
    let mut renewed = None;
    let mut waiting = Waiting::default();
    let mut backoff = RENEW_RETRY_MIN;
    // Proofs in a row the other node refused (a renewal that was due resets it).
    let mut refusals = 0u32;
    while !ctx.shutdown.is_cancelled() {
        match start_stub(&ctx, &domain, renewed.take()).await {
            Ok((running, proof)) => {
                backoff = RENEW_RETRY_MIN;
                if waiting.is_active() {
                    // The stub gets what waited from the start of the outbox.
                    waiting.end(&session);
                    bus.detach(&session, connection);
                    connection = bus.next_connection_id();
                    let _ = bus.attach(&session, connection, None).await;
                    tracing::info!(domain = %domain, "the node of another domain is reachable again: what waited for it is handed to its stub");
                }
                let stop = ctx.shutdown.child_token();
                // The stub stops when a new proof is in hand, or when ours is about to expire
                // with none (`renew`); the renewal goes on until shutdown.
                let refused = running.refused.clone();
                let renewal = async {
                    let p = tokio::select! {
                        p = renew(&ctx, &domain, proof, &stop, refused, refusals) => Some(p),
                        () = ctx.shutdown.cancelled() => None,
                    };
                    stop.cancel();
                    p
                };
                let run = run_stub(&ctx, &session, connection, &origin, &domain, &stop, running);
                let (proof, ()) = tokio::join!(renewal, run);
                let Some((proof, why)) = proof else { break };
                refusals = match why {
                    Renewal::Due => 0,
                    Renewal::Refused => refusals.saturating_add(1),
                };
                // The next instance gets what the outbox still holds from the start (what
                // the stopped one holds is a replay to it: `held.rs`).
                bus.detach(&session, connection);
                connection = bus.next_connection_id();
                let _ = bus.attach(&session, connection, None).await;
                tracing::info!(domain = %domain, "our proof for another domain is renewed: its stub restarts with it");
                renewed = Some(proof);
            }
            Err(e) if e.is_unreachable() => {
                let cd = ctx.cross.config();
                if !waiting.is_active() {
                    tracing::warn!(
                        domain = %domain,
                        error = %e,
                        "the node of another domain is down or unreachable: its messages wait for it"
                    );
                }
                waiting.begin(&session, cd.queue_limit);
                waiting
                    .hold(
                        bus,
                        &session,
                        connection,
                        &origin,
                        &domain,
                        cd.delivery_timeout,
                        backoff,
                        &ctx.shutdown,
                    )
                    .await;
                backoff = (backoff * 2).min(cd.retry.max(RENEW_RETRY_MIN));
            }
            Err(e) => {
                if waiting.is_active() {
                    waiting.end(&session);
                    bus.detach(&session, connection);
                    connection = bus.next_connection_id();
                    let _ = bus.attach(&session, connection, None).await;
                }
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
    if session.left().is_cancelled() {
        tracing::warn!(
            domain = %domain,
            "the gateway session to another domain left this node (another node holds it now): its stub stopped here"
        );
    }
}

/// Shortest wait before a failed renewal is tried again (doubling up to
/// `cross_domain.retry_secs`).
const RENEW_RETRY_MIN: Duration = Duration::from_millis(200);

/// Why a proof was renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Renewal {
    /// Three quarters of its life had passed.
    Due,
    /// The other node refused it (401 to the stub's `open` or `re-open`, `tap.rs`).
    Refused,
}

/// A fresh proof for `domain`'s node, fetched once three quarters of the life of `current`
/// have passed (timed on that node's clock: `Proof::valid_until`), so that the stub never
/// reconnects with an expired one; or at once when that node refuses `current` (`refused`
/// changes: its clock jumped ahead, say), after a wait doubling with the `refusals` in a row
/// (200 ms up to `retry_secs`), so that a node that keeps refusing is not asked in a loop.
/// Failures (that node down) are retried with a backoff; the stub keeps running meanwhile, its
/// queue with it, until `current` is within an eighth of its life (at most 1 s) of expiring (or
/// at once, once refused): then `stop` stops it (its messages stay in the outbox and its store,
/// on disk), and it starts again with the proof this returns, and resumes its session with it
/// (the session's identity is our domain, whatever proof shows it).
async fn renew(
    ctx: &Ctx,
    domain: &str,
    current: Proof,
    stop: &CancellationToken,
    mut refused: tokio::sync::watch::Receiver<u64>,
    refusals: u32,
) -> (Proof, Renewal) {
    let life = CrossDomain::valid_for(&current);
    let margin = (life / 8).min(Duration::from_secs(1));
    let why = tokio::select! {
        () = tokio::time::sleep(life - life / 4) => Renewal::Due,
        () = async {
            if refused.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        } => Renewal::Refused,
    };
    let retry = ctx.cross.config().retry.max(RENEW_RETRY_MIN);
    if why == Renewal::Refused {
        let wait = RENEW_RETRY_MIN
            .saturating_mul(1 << refusals.min(16))
            .min(retry);
        tracing::warn!(
            domain,
            refusals_in_a_row = refusals + 1,
            retry_in = ?wait,
            "the node of another domain refused our proof (401): its clock may be ahead of ours by more than its cross_domain.proof_leeway_secs; its stub resumes its session with a fresh proof"
        );
        tokio::time::sleep(wait).await;
    }
    let peer = ctx.cross.resolve(domain);
    let mut delay = RENEW_RETRY_MIN;
    loop {
        match ctx.cross.proof_for(&peer).await {
            Ok(proof) => return (proof, why),
            Err(e) => {
                let left = if why == Renewal::Refused {
                    Duration::ZERO
                } else {
                    CrossDomain::valid_for(&current).saturating_sub(margin)
                };
                tracing::warn!(domain, error = %e, valid_for = ?left, "renewing our proof for another domain failed: tried again");
                if left.is_zero() && !stop.is_cancelled() {
                    tracing::warn!(
                        domain,
                        "our proof for another domain expires and its node does not answer: its stub stops until a new proof"
                    );
                    stop.cancel();
                }
                // Woken at the latest when the stub must stop.
                let wait = if left.is_zero() {
                    delay
                } else {
                    delay.min(left)
                };
                tokio::time::sleep(wait).await;
                delay = (delay * 2).min(retry);
            }
        }
    }
}

/// A started stub of another domain.
struct Running {
    handle: rethink_stubs::StubHandle,
    target: PumpTarget,
    sends: QueueRx,
    lost: LostRx,
    /// The highest outbox position the stub holds durably.
    held: tokio::sync::watch::Receiver<u64>,
    /// How many times the other node refused the stub's proof (`tap.rs`).
    refused: tokio::sync::watch::Receiver<u64>,
    /// What sees the stub's socket, told of each message handed to the stub.
    tap: Arc<SessionTap>,
}

/// Key-value bytes a stub of another domain may keep (its queue is stored there).
const STUB_KV_TOTAL: usize = 256 << 20;

/// Starts `domain`'s stub with `proof` (a fresh one fetched when `None`).
async fn start_stub(
    ctx: &Ctx,
    domain: &str,
    proof: Option<Proof>,
) -> Result<(Running, Proof), CrossDomainError> {
    let stub = ctx.cross.load_stub(domain).await?;

    let malformed = |e: rethink_stubs::StubError| CrossDomainError::Malformed {
        domain: domain.to_owned(),
        what: "the stub component",
        problem: e.to_string(),
    };
    // Our own host failing to start is not the other domain's fault.
    let host = ctx.host.get().map_err(|e| CrossDomainError::Internal {
        what: "starting the stub host",
        problem: e.to_string(),
    })?;
    let checked = {
        let host = host.clone();
        let bytes = stub.bytes.clone();
        tokio::task::spawn_blocking(move || host.check(&bytes))
            .await
            .map_err(|e| CrossDomainError::Internal {
                what: "checking a stub component",
                problem: e.to_string(),
            })?
            .map_err(malformed)?
    };
    // Fetched once the component is ready (a compilation can take longer than a short
    // proof TTL).
    let proof = match proof {
        Some(p) => p,
        None => ctx.cross.proof_for(&ctx.cross.resolve(domain)).await?,
    };
    let addresses = domain_addresses(domain);
    let ours = [
        "runtime",
        "token",
        "listen",
        "queue_max",
        "queue_max_bytes",
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
    config.push(("token".into(), proof.token.clone()));
    config.push(("listen".into(), addresses.join(",")));
    let cd = ctx.cross.config();
    config.push(("queue_max".into(), cd.queue_limit.to_string()));
    config.push((
        "deliver_timeout_ms".into(),
        cd.delivery_timeout.as_millis().to_string(),
    ));
    config.push(("domain".into(), domain.to_owned()));
    let mut spec = StubSpec::new(format!("xdomain-{domain}"));
    // What it holds for D in memory, bounded by its memory whatever `queue_limit` says: each
    // message is held about twice over (a queue past its memory trapped the instance, and
    // every restart loaded the stored queue again).
    config.push((
        "queue_max_bytes".into(),
        (spec.memory_bytes / 4).to_string(),
    ));
    spec.config = config;
    spec.addresses = addresses;
    spec.allow = stub.origins.clone();
    spec.mailbox = 1024;
    spec.kv_limits.2 = STUB_KV_TOTAL;
    // Its store is written once or twice per message: committed in batches behind its calls,
    // its frames to the other node held until the writes before them are (rethink-stubs,
    // `writebehind.rs`).
    spec.kv_write_behind = true;
    let (kv, raise, held) = HeldKv::new(Arc::clone(&ctx.kv), &spec.name)
        .await
        .map_err(|f| CrossDomainError::Unavailable {
            what: "reading the gateway's queue",
            problem: f.to_string(),
        })?;
    let (tap, refused) = SessionTap::new(raise);
    let tap = Arc::new(tap);
    spec.tap = Some(Arc::clone(&tap) as Arc<dyn rethink_stubs::NetTap>);
    let (sends_tx, sends) = outgoing(OUTGOING);
    let (lost_tx, lost) = lost_queue();
    let port = Arc::new(NodePort::new(sends_tx, lost_tx));
    let handle = host.start(&checked, spec, port.clone(), Arc::new(kv));
    handle.started().await;
    tracing::info!(domain, version = %stub.version, sha256 = %stub.sha256, "the stub of another domain is running");
    let target = PumpTarget {
        port,
        mailbox: handle.mailbox(),
    };
    Ok((
        Running {
            handle,
            target,
            sends,
            lost,
            held,
            refused,
            tap,
        },
        proof,
    ))
}

/// Runs the stub host's pump (acknowledging what the stub holds) and router of a started
/// stub until `stop`, then stops the stub (it handles what its mailbox holds).
async fn run_stub(
    ctx: &Ctx,
    session: &Arc<Session>,
    connection: u64,
    origin: &Origin,
    domain: &str,
    stop: &CancellationToken,
    running: Running,
) {
    let Running {
        handle,
        target,
        sends,
        lost,
        held,
        refused: _,
        tap,
    } = running;
    let router = tokio::spawn(route_stub(
        ctx.bus.clone(),
        Arc::clone(session),
        origin.clone(),
        format!("of {domain}"),
        sends,
        lost,
    ));
    // No swaps: a closed channel.
    let (_, swaps) = mpsc::channel(1);
    Pump {
        bus: ctx.bus.clone(),
        session: Arc::clone(session),
        connection,
        cancel: stop.clone(),
        target,
        swaps,
        ack: AckRule::Held(held, Some(Arc::new(move |g, env| tap.handed(g, env)))),
    }
    .run()
    .await;
    handle.stop().await;
    if tokio::time::timeout(Duration::from_secs(5), router)
        .await
        .is_err()
    {
        tracing::warn!("a gateway's router did not finish within 5 s");
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
    let description = error.public_description();
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
