//! Matrix application services in the node: the registrations in force (`appservices.dir`,
//! reloaded when the directory changes, like the policy directory), one pusher task per service
//! with a `url` (`rethink_connectors::pusher`) fed by `queue`, and the questions the Matrix
//! layer asks: which service an `as_token` belongs to, whether an ID is in an exclusive
//! namespace, and the user and alias queries.
//!
//! Registration parsing, namespaces, the HTTP client and the pusher loop are the
//! `rethink-connectors` crate's; the queue's storage is `store::appservice`.
//!
//! A service with `rethink_namespaces` also has a session on the bus (`bus_link`): messages for
//! the addresses it claims reach it in its transactions (`rethink_messages`), and it sends with
//! [`AppServices::bus_session`] (`POST /_rethink/app/v1/send`, `matrix::appservice_send`).

mod bus_link;
mod ephemeral;
pub(crate) mod interest;
pub(crate) mod leader;
mod queue;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use rethink_connectors::pusher::{self, Backoff, PushObserver, QueuedTxn};
use rethink_connectors::{AppService, ClientError, Directory, DirectoryError, Kind};
use ruma::{OwnedRoomAliasId, OwnedServerName, OwnedTransactionId, OwnedUserId, UserId};
use tokio_util::sync::CancellationToken;

use crate::bus::Bus;
use crate::clock::Clock;
use crate::config::AppservicesConfig;
use crate::locks::{lock, read, write};
use crate::metrics::{Metrics, ServiceLabel};
use crate::rooms::Rooms;
use crate::store::StoreError;
use crate::store::appservice::AppserviceStore;
use crate::stream::StreamWriter;
use crate::userdata::Typing;

pub use bus_link::BusLink;
pub use ephemeral::TO_DEVICE;
pub use queue::{QueueError, RETHINK_MESSAGES};

/// What the application services use of the node.
#[derive(Debug, Clone)]
pub struct AppservicesDeps {
    /// Their transaction queues.
    pub store: AppserviceStore,
    /// The room events and memberships that concern them.
    pub rooms: Rooms,
    /// Commits (wake-ups, positions).
    pub stream: StreamWriter,
    /// Their sessions and claims (`rethink_namespaces`).
    pub bus: Bus,
    /// Typing, for `receive_ephemeral`.
    pub typing: Typing,
    pub clock: Clock,
    /// The TLS client configuration of `https://` service URLs (`rethink_stubs::tls`, with
    /// `appservices.ca_file`).
    pub tls: Arc<rustls::ClientConfig>,
    /// Delivered and failed transactions are counted here.
    pub metrics: Arc<Metrics>,
    /// In a cluster (the Matrix stores on PostgreSQL): the database whose advisory locks elect
    /// the one node that pushes to each service, and this node's id (`appservice/leader.rs`);
    /// `None` on one node.
    pub leader: Option<leader::Leader>,
}

/// The bus session of each service id with `rethink_namespaces`, and the service it is for.
type Links = HashMap<String, (Arc<AppService>, Arc<BusLink>)>;

/// The node's application services (a cheap-clone handle).
#[derive(Debug, Clone)]
pub struct AppServices {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: AppservicesConfig,
    /// The Matrix sides of WebAssembly connectors, beside the directory's services.
    connectors: Vec<Arc<AppService>>,
    server_name: OwnedServerName,
    current: RwLock<Arc<Directory>>,
    deps: AppservicesDeps,
    /// The running pusher of each service id, and the service it pushes for.
    pushers: Mutex<HashMap<String, (Arc<AppService>, CancellationToken)>>,
    /// The bus session of each service id with `rethink_namespaces`.
    links: Mutex<Links>,
    /// The queue memory of each service id that had a pusher (kept across its pushers).
    memories: Mutex<HashMap<String, Arc<queue::QueueMemory>>>,
    /// One reload (or start) at a time.
    reloading: tokio::sync::Mutex<()>,
    /// Counts the successful reloads (for those following them: a cluster's other nodes).
    reloaded: tokio::sync::watch::Sender<u64>,
    shutdown: CancellationToken,
}

impl AppServices {
    /// Loads `appservices.dir` (a bad file is an error: the node does not start).
    pub fn new(
        config: &AppservicesConfig,
        server_name: OwnedServerName,
        deps: AppservicesDeps,
        shutdown: CancellationToken,
    ) -> Result<Self, DirectoryError> {
        let connectors = connector_services(config, &deps.tls);
        let directory = match &config.dir {
            Some(dir) => Directory::load(dir, &deps.tls)?,
            None => Directory::empty(),
        };
        let directory = with_connectors(&directory, &connectors);
        if let Some(dir) = &config.dir {
            tracing::info!(dir = %dir.display(), services = directory.services().len(),
                "application services loaded");
        }
        Ok(Self {
            inner: Arc::new(Inner {
                config: config.clone(),
                connectors,
                server_name,
                current: RwLock::new(Arc::new(directory)),
                deps,
                pushers: Mutex::new(HashMap::new()),
                links: Mutex::new(HashMap::new()),
                memories: Mutex::new(HashMap::new()),
                reloading: tokio::sync::Mutex::new(()),
                reloaded: tokio::sync::watch::Sender::new(0),
                shutdown,
            }),
        })
    }

    /// The services in force.
    pub fn directory(&self) -> Arc<Directory> {
        Arc::clone(&read(&self.inner.current))
    }

    pub fn server_name(&self) -> &OwnedServerName {
        &self.inner.server_name
    }

    /// In a cluster, the database whose advisory locks choose the one node doing a duty of
    /// the whole cluster (`leader.rs`); `None` on one node.
    pub fn leader(&self) -> Option<&leader::Leader> {
        self.inner.deps.leader.as_ref()
    }

    /// Starts (or restarts, after a reload) the services in force: the bus sessions and
    /// claims of those with `rethink_namespaces`, and one pusher per service with a `url`;
    /// stops those of services gone or changed.
    pub async fn start(&self) {
        let _one = self.inner.reloading.lock().await;
        self.link_sessions().await;
        self.start_pushers();
    }

    /// The bus session of service `id`, if it has `rethink_namespaces`.
    pub fn bus_session(&self, id: &str) -> Option<Arc<BusLink>> {
        lock(&self.inner.links)
            .get(id)
            .map(|(_, link)| Arc::clone(link))
    }

    /// Opens the bus session of every service with `rethink_namespaces` (kept across reloads
    /// while its file is unchanged) and puts the claims of those with a `url` in force.
    async fn link_sessions(&self) {
        let directory = self.directory();
        let server = self.inner.server_name.to_string();
        let mut fresh: Links = HashMap::new();
        let old = std::mem::take(&mut *lock(&self.inner.links));
        for service in directory.services() {
            if service.registration.namespaces.rethink.is_empty() {
                continue;
            }
            let link = match old.get(service.id()) {
                Some((s, link)) if Arc::ptr_eq(s, service) => Arc::clone(link),
                _ => match BusLink::open(&self.inner.deps.bus, service, &server).await {
                    Ok(link) => Arc::new(link),
                    Err(e) => {
                        tracing::error!(service = %service.id(), error = %e,
                            "no bus session for the application service");
                        continue;
                    }
                },
            };
            fresh.insert(service.id().to_owned(), (Arc::clone(service), link));
        }
        for (id, (_, link)) in &old {
            if !fresh.get(id).is_some_and(|(_, l)| Arc::ptr_eq(l, link)) {
                link.detach();
            }
        }
        let claims = fresh
            .values()
            .filter(|(service, _)| service.client.is_some())
            .flat_map(|(service, link)| link.claims(service))
            .collect();
        self.inner.deps.bus.set_claims(claims);
        *lock(&self.inner.links) = fresh;
    }

    /// Starts one pusher per service with a `url` (after [`Self::link_sessions`]).
    fn start_pushers(&self) {
        let directory = self.directory();
        let mut pushers = lock(&self.inner.pushers);
        pushers.retain(|id, (service, stop)| {
            let same = directory
                .by_id(id)
                .is_some_and(|now| Arc::ptr_eq(now, service));
            if !same {
                stop.cancel();
            }
            same
        });
        for service in directory.services() {
            if service.client.is_none() || pushers.contains_key(service.id()) {
                continue;
            }
            let stop = self.inner.shutdown.child_token();
            let memory = Arc::clone(
                lock(&self.inner.memories)
                    .entry(service.id().to_owned())
                    .or_default(),
            );
            let backoff = Backoff {
                initial: self.inner.config.initial_backoff,
                max: self.inner.config.max_backoff,
            };
            // A fresh queue each time this node starts pushing; in a cluster, after another
            // node pushed for a while, the memory too: it reads where the shared queue stands.
            let clustered = self.inner.deps.leader.is_some();
            let run = {
                let service = Arc::clone(service);
                let deps = self.inner.deps.clone();
                let server_name = self.inner.server_name.to_string();
                let max_events = self.inner.config.max_events_per_txn;
                let link = self.bus_session(service.id());
                move |stop| {
                    let queue = queue::NodeQueue::new(
                        Arc::clone(&service),
                        deps.clone(),
                        server_name.clone(),
                        max_events,
                        link.clone(),
                        Arc::clone(&memory),
                    );
                    let metered = Metered(Arc::clone(&deps.metrics));
                    let (service, memory) = (Arc::clone(&service), Arc::clone(&memory));
                    async move {
                        if clustered {
                            memory.forget().await;
                        }
                        pusher::run(service, queue, metered, backoff, stop).await;
                    }
                }
            };
            match self.inner.deps.leader.clone() {
                Some(elected) => {
                    tokio::spawn(leader::while_held(
                        elected,
                        format!("rethink.appservice.{}", service.id()),
                        stop.clone(),
                        run,
                    ));
                }
                None => {
                    tokio::spawn(run(stop.clone()));
                }
            }
            pushers.insert(service.id().to_owned(), (Arc::clone(service), stop));
        }
    }

    /// Reloads the directory: a valid set replaces the old one (pushers follow); an invalid one
    /// is refused and the old one stays. A service whose file did not change keeps its pusher.
    pub async fn reload(&self) -> Result<usize, DirectoryError> {
        let Some(dir) = &self.inner.config.dir else {
            return Ok(0);
        };
        let _one = self.inner.reloading.lock().await;
        let fresh = match Directory::load(dir, &self.inner.deps.tls) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e,
                    "application services refused; the previous set stays in force");
                return Err(e);
            }
        };
        let old = self.directory();
        let kept: Vec<Arc<AppService>> = fresh
            .services()
            .iter()
            .map(|s| match old.by_id(s.id()) {
                Some(o) if same_registration(o, s) => Arc::clone(o),
                _ => Arc::clone(s),
            })
            .collect();
        let count = kept.len();
        let fresh = with_connectors(&Directory::from_services(kept), &self.inner.connectors);
        *write(&self.inner.current) = Arc::new(fresh);
        tracing::info!(dir = %dir.display(), services = count, "application services reloaded");
        self.link_sessions().await;
        self.start_pushers();
        self.inner.reloaded.send_modify(|n| *n += 1);
        Ok(count)
    }

    /// A receiver that sees each successful reload from now on.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.reloaded.subscribe()
    }

    /// The directory of registration files, when one is configured.
    pub fn dir(&self) -> Option<&std::path::Path> {
        self.inner.config.dir.as_deref()
    }

    /// Polls the directory and reloads when a registration file changes.
    pub async fn watch(self) {
        let Some(dir) = self.inner.config.dir.clone() else {
            return;
        };
        let mut last: Vec<(PathBuf, SystemTime, u64)> =
            rethink_connectors::directory::fingerprint(&dir);
        let mut tick = tokio::time::interval(self.inner.config.watch_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = rethink_connectors::directory::fingerprint(&dir);
            if now != last {
                last = now;
                let _ = self.reload().await;
            }
        }
    }

    /// The service holding `id` in an exclusive namespace of `kind`, unless it is `caller`'s
    /// own service (a service acts freely in its own namespace).
    pub fn exclusive_to_other(
        &self,
        kind: Kind,
        id: &str,
        caller: Option<&AppService>,
    ) -> Option<Arc<AppService>> {
        let directory = self.directory();
        directory
            .exclusive_owner(kind, id)
            .filter(|owner| caller.is_none_or(|c| c.id() != owner.id()))
            .cloned()
    }

    /// Whether `user` belongs to a service (its sender or in its user namespaces).
    pub fn owner_of_user(&self, user: &UserId) -> Option<Arc<AppService>> {
        let directory = self.directory();
        let server = self.inner.server_name.as_str();
        directory
            .services()
            .iter()
            .find(|s| s.owns_user(user.as_str(), server))
            .cloned()
    }

    /// Asks the services whose user namespace holds `user` (`GET /_matrix/app/v1/users/..`):
    /// found once one answers that it exists (it should have registered it meanwhile).
    pub async fn query_user(&self, user: &UserId) -> Queried {
        let directory = self.directory();
        let mut queried = Queried::NotFound;
        for service in directory.interested(Kind::User, user.as_str()) {
            let Some(client) = &service.client else {
                continue;
            };
            match client.query_user(OwnedUserId::from(user)).await {
                Ok(true) => return Queried::Found,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(service = %service.id(), error = %e, "user query failed");
                    queried = Queried::Unanswered;
                }
            }
        }
        queried
    }

    /// Asks the services whose alias namespace holds `alias`: found once one created it.
    pub async fn query_alias(&self, alias: &OwnedRoomAliasId) -> Queried {
        let directory = self.directory();
        let mut queried = Queried::NotFound;
        for service in directory.interested(Kind::Alias, alias.as_str()) {
            let Some(client) = &service.client else {
                continue;
            };
            match client.query_alias(alias.clone()).await {
                Ok(true) => return Queried::Found,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(service = %service.id(), error = %e, "alias query failed");
                    queried = Queried::Unanswered;
                }
            }
        }
        queried
    }

    /// Pings `service` (`POST /_matrix/app/v1/ping`): how long it took to answer.
    pub async fn ping(
        &self,
        service: &AppService,
        txn_id: Option<OwnedTransactionId>,
    ) -> Result<Duration, PingError> {
        let client = service.client.as_ref().ok_or(PingError::NoUrl)?;
        let start = Instant::now();
        client.ping(txn_id).await?;
        Ok(start.elapsed())
    }
}

/// What the services asked about a user or an alias said ([`AppServices::query_user`],
/// [`AppServices::query_alias`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queried {
    /// A service answered that it exists (it made it).
    Found,
    /// Every service asked (none, when no namespace holds it) answered that it does not.
    NotFound,
    /// None said it exists, and at least one could not be asked (unreachable, no answer in
    /// time, an error status): whether it exists is unknown, so nobody may be told it does not.
    Unanswered,
}

/// Why a ping failed.
#[derive(Debug, thiserror::Error)]
pub enum PingError {
    #[error("the service has no url")]
    NoUrl,
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// The Matrix sides of WebAssembly connectors (`[connectors.<name>.matrix]`), each with a
/// fresh random `as_token` (held by the node only: the connector's guest never sees it).
fn connector_services(
    config: &AppservicesConfig,
    tls: &Arc<rustls::ClientConfig>,
) -> Vec<Arc<AppService>> {
    config
        .connectors
        .iter()
        .filter_map(|c| {
            let mut registration = c.registration.clone();
            let (Some(a), Some(h)) = (random_token(), random_token()) else {
                tracing::error!(connector = %c.name,
                    "no random source: the connector runs without its Matrix side");
                return None;
            };
            registration.as_token = a;
            registration.hs_token = h;
            let file = PathBuf::from(format!("[connectors.{}.matrix]", c.name));
            Some(Arc::new(AppService::new(registration, file, tls)))
        })
        .collect()
}

fn random_token() -> Option<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).ok()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// `directory`'s services and the connectors'.
fn with_connectors(directory: &Directory, connectors: &[Arc<AppService>]) -> Directory {
    let mut all = directory.services().to_vec();
    all.extend(connectors.iter().cloned());
    Directory::from_services(all)
}

/// Same file contents (a reload keeps the running pusher and the client's connections).
fn same_registration(a: &AppService, b: &AppService) -> bool {
    let (a, b) = (&a.registration, &b.registration);
    format!("{a:?}") == format!("{b:?}")
}

/// Counts (and logs) what the pushers do: `rethink_appservice_txns_total` and
/// `rethink_appservice_txn_failures_total` by service (the pusher logs each failure at `warn`).
#[derive(Debug, Clone)]
struct Metered(Arc<Metrics>);

impl PushObserver for Metered {
    fn pushed(&self, service: &str, txn: &QueuedTxn) {
        self.0
            .appservice_txns
            .get_or_create(&ServiceLabel {
                service: service.to_owned(),
            })
            .inc();
        tracing::debug!(
            service,
            txn = txn.txn_id,
            items = txn.items,
            "transaction delivered"
        );
    }

    fn failed(&self, service: &str, txn_id: i64, error: &ClientError) {
        self.0
            .appservice_txn_failures
            .get_or_create(&ServiceLabel {
                service: service.to_owned(),
            })
            .inc();
        tracing::debug!(service, txn = txn_id, error = %error, "transaction failed");
    }
}

impl From<StoreError> for QueueError {
    fn from(e: StoreError) -> Self {
        QueueError::Store(e)
    }
}
