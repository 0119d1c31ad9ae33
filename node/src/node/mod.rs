//! The node: [`Node`], the cheap-clone handle every handler receives (axum state), and
//! [`RunningNode`], which starts the parts and stops them gracefully.
//!
//! Start, in order: metrics; the policy point (an invalid policy set stops the start); the stub
//! catalogue (an unreadable `stubs.dir` stops the start); the SQLite
//! store and its migrations; the bus's store (that SQLite store, or PostgreSQL with `store.url`:
//! `BusStore`); the next epoch; the persisted sessions; the Matrix stream writer;
//! the server signing key; the room caches and engine; the session writer; the bus, which
//! restores the persisted sessions; the checkpoint task; the bridge task; the authenticator (key
//! sets loaded); Matrix accounts and user data; then the listener, the application services'
//! pushers and watcher, the session reaper, the policy watcher, the stub directory's watcher, the
//! presence writer (with its timeouts) and the typing timer.
//!
//! Stop: cancel the shutdown token (the listener stops accepting, connections close with 1001,
//! long-polls answer), wait for the listener's sockets and the WebSocket sessions until the
//! `server.shutdown_timeout_secs` deadline, then drop those left; stop the reaper, the watcher and
//! the typing timer, let the presence writer store what is queued, flush the stream writer and
//! then the session writer, close the store. Sessions stay resumable.

use std::net::SocketAddr;
use std::sync::Arc;

use rethink_stubs::catalogue::{Catalogue, CatalogueError, DEFAULT_STUB};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod backends;

use backends::BusStore;

use crate::appservice::{AppServices, AppservicesDeps};
use crate::auth::{AuthStartError, Authenticator};
use crate::bridge::Bridge;
use crate::bus::{Bus, BusConfig};
use crate::clock::{Clock, Ticker};
use crate::config::Config;
use crate::crossdomain::CrossDomain;
use crate::matrix::Accounts;
use crate::metrics::Metrics;
use crate::policy::{PolicyLoadError, PolicyPoint};
use crate::rooms::{RoomCaches, Rooms, ServerKey};
use crate::server::{self, Server, ServerError};
use crate::store::accounts::AccountStore;
use crate::store::appservice::AppserviceStore;
use crate::store::db::Db;
use crate::store::postgres::PgStore;
use crate::store::rooms::RoomStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{StoreError, StoreWriter, WriterConfig, spawn_writer};
use crate::stream::StreamWriter;
use crate::stubhost::{RunningStubs, StubsError};
use crate::userdata::UserData;

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("policy: {0}")]
    Policy(#[from] PolicyLoadError),
    #[error(transparent)]
    Auth(#[from] AuthStartError),
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("stub catalogue: {0}")]
    Catalogue(#[from] CatalogueError),
    /// The task opening it panicked or was cancelled; the cause is the source (not repeated
    /// here: the command line prints the chain).
    #[error("stub catalogue: opening it did not finish")]
    CatalogueTask(#[source] tokio::task::JoinError),
    #[error(transparent)]
    Stubs(#[from] StubsError),
    #[error(transparent)]
    Appservices(#[from] rethink_connectors::DirectoryError),
    #[error("application services: TLS client configuration: {0}")]
    AppservicesTls(#[source] rustls::Error),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("invalid configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
}

#[derive(Debug)]
struct Inner {
    config: Config,
    bus: Bus,
    auth: Authenticator,
    accounts: Accounts,
    stream: StreamWriter,
    rooms: Rooms,
    bridge: Bridge,
    userdata: UserData,
    appservices: AppServices,
    /// The Matrix client API's rate limiter (`[matrix.rate_limit]`).
    rate_limits: crate::matrix::rate_limit::RateLimits,
    profile_resends: crate::matrix::profile::Resends,
    metrics: Arc<Metrics>,
    catalogue: Arc<Catalogue>,
    cross_domain: CrossDomain,
    shutdown: CancellationToken,
    sessions: TaskTracker,
    /// The bus's store when it is PostgreSQL (checked by `/healthz`).
    database: Option<Arc<PgStore>>,
    /// This node's membership of a cluster (`cluster.nats_url`).
    cluster: Option<Arc<crate::cluster::Cluster>>,
}

/// The node handle: configuration, bus, authenticator, Matrix accounts, metrics, shutdown signal.
#[derive(Debug, Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

impl Node {
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The node's time (from the configuration).
    pub fn clock(&self) -> &Clock {
        &self.inner.config.clock
    }

    pub fn bus(&self) -> &Bus {
        &self.inner.bus
    }

    pub fn auth(&self) -> &Authenticator {
        &self.inner.auth
    }

    /// Matrix accounts, devices and access tokens.
    pub fn accounts(&self) -> &Accounts {
        &self.inner.accounts
    }

    /// The Matrix stream writer (positions, commits, `/sync` wake-ups).
    pub fn stream(&self) -> &StreamWriter {
        &self.inner.stream
    }

    /// The Matrix room engine.
    pub fn rooms(&self) -> &Rooms {
        &self.inner.rooms
    }

    /// The bridge between data objects on the bus and rooms.
    pub fn bridge(&self) -> &Bridge {
        &self.inner.bridge
    }

    /// Per-user Matrix data: filters, profiles, account data, devices, keys, to-device
    /// messages, receipts, typing.
    pub fn userdata(&self) -> &UserData {
        &self.inner.userdata
    }

    /// The Matrix client API's rate limiter.
    pub fn rate_limits(&self) -> &crate::matrix::rate_limit::RateLimits {
        &self.inner.rate_limits
    }

    /// The re-sends of profile changes as member events running on this node.
    pub(crate) fn profile_resends(&self) -> &crate::matrix::profile::Resends {
        &self.inner.profile_resends
    }

    /// Matrix application services.
    pub fn appservices(&self) -> &AppServices {
        &self.inner.appservices
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The protocol stubs this node serves.
    pub fn catalogue(&self) -> &Arc<Catalogue> {
        &self.inner.catalogue
    }

    /// Routing to other domains: their keys and stubs, node authentication.
    pub fn cross_domain(&self) -> &CrossDomain {
        &self.inner.cross_domain
    }

    /// The bus's PostgreSQL store, when `store.url` names one.
    pub fn database(&self) -> Option<&PgStore> {
        self.inner.database.as_deref()
    }

    /// This node's membership of a cluster, when `cluster.nats_url` is set.
    pub fn cluster(&self) -> Option<&crate::cluster::Cluster> {
        self.inner.cluster.as_deref()
    }

    /// Cancelled when the node begins shutting down.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    /// Tracks connection tasks so shutdown can wait for them.
    pub fn session_tracker(&self) -> &TaskTracker {
        &self.inner.sessions
    }
}

/// A started node.
#[derive(Debug)]
pub struct RunningNode {
    node: Node,
    addr: SocketAddr,
    store: Arc<SqliteStore>,
    bus_store: BusStore,
    writer: StoreWriter,
    server: Server,
    reaper: JoinHandle<()>,
    watcher: JoinHandle<()>,
    stub_watcher: JoinHandle<()>,
    presence: JoinHandle<()>,
    presence_stop: CancellationToken,
    typing: JoinHandle<()>,
    stubs: RunningStubs,
}

impl RunningNode {
    /// Opens the store, restores resumable sessions and starts serving.
    pub async fn start(config: Config) -> Result<Self, NodeError> {
        let mut metrics = Metrics::new();
        let stub_metrics = rethink_stubs::StubMetrics::new(metrics.registry_mut());
        let stub_versions = crate::stubhost::RunningVersions::new(metrics.registry_mut());
        let cluster_metrics = config
            .cluster
            .as_ref()
            .map(|_| crate::cluster::ClusterMetrics::new(metrics.registry_mut()));
        let metrics = Arc::new(metrics);
        let policy = Arc::new(PolicyPoint::new(&config.policy, Arc::clone(&metrics))?);
        // One stub host per node, built when a stubs.dir component is checked or a stub runs.
        let stub_host = Arc::new(crate::stubhost::LazyHost::new(
            crate::stubhost::host_config(
                &config.stubs,
                if config.cross_domain.enabled {
                    crate::crossdomain::GATEWAY_INSTANCES
                } else {
                    0
                },
            ),
            stub_metrics,
        ));
        let catalogue = {
            let dir = config.stubs.dir.clone();
            let check = Arc::new(crate::stubhost::HostCheck::new(Arc::clone(&stub_host)));
            // Checking stubs.dir compiles its components (or loads them from the cache).
            let opened =
                tokio::task::spawn_blocking(move || Catalogue::open(dir, DEFAULT_STUB, check))
                    .await
                    .map_err(NodeError::CatalogueTask)?;
            Arc::new(opened?)
        };
        let store = Arc::new(SqliteStore::open(&config.data_dir).await?);
        let node_id = match &config.cluster {
            Some(c) => Some(c.resolve_node_id(&config.data_dir)?),
            None => None,
        };
        let leader_id = node_id.clone();
        let clustered = node_id
            .as_deref()
            .zip(config.cluster.as_ref().map(|c| c.membership_timeout));
        let bus_store = BusStore::open(&config.store.backend, &store, clustered).await?;
        // Connected, with a first heartbeat, before this node's sessions are loaded.
        let cluster_link = match (
            &config.cluster,
            &bus_store,
            node_id.clone(),
            cluster_metrics,
        ) {
            (Some(c), BusStore::Postgres(pg), Some(id), Some(m)) => {
                Some(crate::cluster::Cluster::connect(c, &id, pg, &config.session, m).await?)
            }
            _ => None,
        };
        let epoch = bus_store.sessions().next_epoch().await?;
        let persisted = bus_store.sessions().load_sessions().await?;
        let (stream, _stream_task) = StreamWriter::start(bus_store.stream_db()).await?;
        let matrix_db = bus_store.matrix_db();
        let server_key =
            ServerKey::load_or_generate(&matrix_db, config.matrix.server_name.clone()).await?;
        let room_store = RoomStore::new(matrix_db.clone());
        let caches = RoomCaches::new(stream.visible(), room_store.all_memberships().await?);
        let rooms = Rooms::new(
            room_store,
            stream.clone(),
            server_key,
            config.matrix.server_name.clone(),
            caches,
            config.matrix.txn_retention,
        );
        // Positions other nodes commit (PostgreSQL): their events into this node's caches.
        stream.set_remote_hook({
            let rooms = rooms.clone();
            Arc::new(move |after, upto| {
                let rooms = rooms.clone();
                Box::pin(async move { rooms.catch_up(after, upto).await })
            })
        });
        let (writer, _writer_task) = spawn_writer(
            bus_store.sessions(),
            WriterConfig {
                commit_delay: config.store.commit_delay,
                ..WriterConfig::default()
            },
        );
        let (bridge_tx, bridge_rx) = Bridge::channel();
        let bus = Bus::new(
            BusConfig {
                domain: config.domain.clone(),
                session: config.session.clone(),
                allocation: config.allocation.clone(),
                epoch,
                clock: config.clock.clone(),
                node_id,
            },
            writer.clone(),
            Arc::clone(&metrics),
            Arc::clone(&policy),
            Some(bridge_tx),
        );
        let restored = bus.restore(persisted);
        let cluster = match cluster_link {
            Some(link) => Some(Arc::new(crate::cluster::Cluster::start(link, &bus).await?)),
            None => None,
        };
        let stub_kv = bus_store.kv();
        let connector_matrix = Arc::new(crate::stubhost::NodeMatrix::new(
            config
                .appservices
                .connectors
                .iter()
                .map(|c| c.name.clone())
                .collect(),
            stub_kv.clone(),
        ));
        let stubs = crate::stubhost::start(
            &bus,
            &config.stubs,
            crate::stubhost::StubsDeps {
                host: Arc::clone(&stub_host),
                catalogue: Arc::clone(&catalogue),
                kv: stub_kv.clone(),
                versions: stub_versions,
                matrix: Arc::clone(&connector_matrix),
            },
        )
        .await?;
        let cross_domain = CrossDomain::new(&config, rooms.clone());
        let shutdown = CancellationToken::new();
        let _checkpoints = tokio::spawn(Arc::clone(&store).checkpoints(shutdown.clone()));
        let (bridge, _bridge_task) =
            Bridge::start(rooms.clone(), bus.clone(), bridge_rx, shutdown.clone());
        let auth = Authenticator::start(&config.auth, &shutdown, &config.clock).await?;
        let account_store = AccountStore::new(matrix_db.clone());
        let accounts = Accounts::new(account_store.clone(), &config.matrix);
        let userdata = UserData::new(
            matrix_db,
            account_store,
            stream.clone(),
            config.matrix.server_name.clone(),
            config.clock.clone(),
        );
        let appservices = AppServices::new(
            &config.appservices,
            config.matrix.server_name.clone(),
            AppservicesDeps {
                store: AppserviceStore::new(bus_store.appservice_db(), bus_store.matrix_db()),
                rooms: rooms.clone(),
                stream: stream.clone(),
                bus: bus.clone(),
                typing: userdata.typing().clone(),
                clock: config.clock.clone(),
                tls: rethink_stubs::tls::client_config(&config.appservices.extra_roots)
                    .map_err(NodeError::AppservicesTls)?,
                metrics: Arc::clone(&metrics),
                // In a cluster, one node pushes to each service.
                leader: match (&leader_id, bus_store.appservice_db()) {
                    (Some(node), Db::Postgres(pool)) => Some(crate::appservice::leader::Leader {
                        pool,
                        node: node.clone(),
                    }),
                    _ => None,
                },
            },
            shutdown.clone(),
        )?;
        let node = Node {
            inner: Arc::new(Inner {
                rate_limits: crate::matrix::rate_limit::RateLimits::new(
                    &config.matrix.rate_limit,
                    config.clock.clone(),
                ),
                profile_resends: crate::matrix::profile::Resends::default(),
                appservices,
                auth,
                accounts,
                stream,
                userdata,
                rooms,
                bridge,
                config,
                bus,
                metrics,
                catalogue,
                cross_domain,
                shutdown,
                sessions: TaskTracker::new(),
                database: match &bus_store {
                    BusStore::Postgres(store) => Some(Arc::clone(store)),
                    BusStore::Sqlite(_) => None,
                },
                cluster,
            }),
        };
        let (addr, server) = server::serve(node.clone()).await?;
        // Tickers are made before their tasks start, so that a test's manual clock knows them
        // from the start.
        let reaper = tokio::spawn(reap(node.clone(), reap_ticker(node.config())));
        let watcher = tokio::spawn(Arc::clone(&policy).watch(
            node.config().policy.watch_interval,
            node.shutdown_token().clone(),
        ));
        let stub_watcher = tokio::spawn(Arc::clone(node.catalogue()).watch(
            node.config().stubs.watch_interval,
            node.shutdown_token().clone(),
        ));
        let _gateways = crate::crossdomain::start_gateways(
            node.bus().clone(),
            node.cross_domain().clone(),
            Arc::clone(&stub_host),
            stub_kv,
            node.shutdown_token().clone(),
        );
        // Profile changes whose member events a stop or a crash left behind.
        let resuming = node.clone();
        tokio::spawn(async move {
            resuming.profile_resends().resume(&resuming).await;
        });
        node.appservices().start().await;
        connector_matrix.bind(node.clone());
        connector_matrix.start_feeds().await;
        tokio::spawn(node.appservices().clone().watch());
        if let Some(cluster) = node.cluster() {
            cluster
                .follow_reloads(followed_dirs(&node, &policy))
                .await?;
            cluster
                .follow_matrix(
                    node.stream(),
                    node.userdata().typing(),
                    node.userdata().presence(),
                )
                .await?;
        }
        // Stopped by `shutdown` once no request is left that could still store presence.
        let presence_stop = CancellationToken::new();
        let presence = tokio::spawn(
            node.userdata()
                .presence()
                .clone()
                .run(node.config().matrix.presence, presence_stop.clone()),
        );
        let typing = tokio::spawn(
            node.userdata()
                .typing()
                .clone()
                .run_timers(node.shutdown_token().clone()),
        );
        tracing::info!(
            %addr,
            domain = %node.config().domain,
            tls = node.config().tls.is_some(),
            epoch,
            restored,
            node_id = node.cluster().map(|c| c.node_id()),
            "rethink-node listening"
        );
        Ok(Self {
            node,
            addr,
            store,
            bus_store,
            writer,
            server,
            reaper,
            watcher,
            stub_watcher,
            presence,
            presence_stop,
            typing,
            stubs,
        })
    }

    /// The address the node listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The node handle.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Graceful shutdown: stop accepting, let every connection close (WebSocket sessions with
    /// 1001, resumable; long-polls answered; requests in progress finished) until the
    /// `server.shutdown_timeout_secs` deadline, then drop the connections left; commit everything
    /// to the store in either case.
    pub async fn shutdown(self) {
        let Self {
            node,
            mut server,
            store,
            bus_store,
            writer,
            reaper,
            watcher,
            stub_watcher,
            presence,
            presence_stop,
            typing,
            stubs,
            ..
        } = self;
        let deadline = Instant::now() + node.config().server.shutdown_timeout;
        node.shutdown_token().cancel();
        let tracker = node.session_tracker();
        tracker.close();
        let closed = async {
            server.closed().await;
            tracker.wait().await;
        };
        if tokio::time::timeout_at(deadline, closed).await.is_err() {
            tracing::warn!(
                connections = server.connections().open(),
                sessions = tracker.len(),
                "connections still open at the shutdown deadline; dropping them"
            );
            server.connections().drop_all();
            // Every socket now fails at once; the tasks only have to notice.
            let ended = async {
                server.closed().await;
                tracker.wait().await;
            };
            if tokio::time::timeout(DROP_GRACE, ended).await.is_err() {
                tracing::warn!(
                    sessions = tracker.len(),
                    "connection tasks still running after being dropped"
                );
            }
        }
        // What the stubs still send is routed while the store still takes it.
        stubs.stop().await;
        reaper.abort();
        watcher.abort();
        stub_watcher.abort();
        typing.abort();
        // It stores what is queued, then stops.
        presence_stop.cancel();
        let presence_deadline = deadline.max(Instant::now() + DROP_GRACE);
        if tokio::time::timeout_at(presence_deadline, presence)
            .await
            .is_err()
        {
            tracing::warn!("presence still being stored at the shutdown deadline");
        }
        if let Err(e) = node.stream().flush().await {
            tracing::error!(error = %e, "final matrix stream flush failed");
        }
        if let Err(e) = writer.flush().await {
            tracing::error!(error = %e, "final store flush failed");
        }
        if let Some(cluster) = node.cluster() {
            cluster.stop().await;
        }
        bus_store.close().await;
        store.close().await;
        tracing::info!("rethink-node stopped");
    }
}

/// How long connection tasks get to end once their sockets were dropped at the deadline.
const DROP_GRACE: Duration = Duration::from_secs(1);

/// Checks for expired sessions four times per resume window (between every 50 ms and 1 s).
fn reap_ticker(config: &Config) -> Ticker {
    let window = config.session.resume_window;
    let period = (window / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    config.clock.ticker(period)
}

async fn reap(node: Node, mut tick: Ticker) {
    loop {
        tokio::select! {
            _ = node.shutdown_token().cancelled() => return,
            _ = tick.tick() => { node.bus().reap_expired().await; }
        }
    }
}

/// The directories a cluster's nodes keep alike (`cluster::reloads`): those configured of
/// `policy.dir`, `stubs.dir` and `appservices.dir`.
fn followed_dirs(node: &Node, policy: &Arc<PolicyPoint>) -> Vec<crate::cluster::reloads::Followed> {
    use crate::cluster::reloads::{Followed, changes};
    let mut dirs = Vec::new();
    if let Some(dir) = policy.dir() {
        dirs.push(Followed {
            kind: "policy",
            dir: dir.to_path_buf(),
            reloaded: changes(policy.subscribe()),
            // Refused sets are logged and counted by the reload itself.
            reload: blocking_reload(Arc::clone(policy), PolicyPoint::reload),
        });
    }
    if let Some(dir) = &node.config().stubs.dir {
        let catalogue = node.catalogue();
        dirs.push(Followed {
            kind: "stubs",
            dir: dir.clone(),
            reloaded: changes(catalogue.subscribe()),
            reload: blocking_reload(Arc::clone(catalogue), |c| c.reload()),
        });
    }
    if let Some(dir) = node.appservices().dir() {
        let appservices = node.appservices().clone();
        dirs.push(Followed {
            kind: "appservices",
            dir: dir.to_path_buf(),
            reloaded: changes(appservices.subscribe()),
            reload: Box::new(move || {
                let appservices = appservices.clone();
                Box::pin(async move {
                    let _ = appservices.reload().await;
                })
            }),
        });
    }
    dirs
}

/// A reload of `target` that runs `reload` on the blocking pool (it reads a directory's files);
/// what it returns is reported by the reload itself.
fn blocking_reload<T, R>(
    target: Arc<T>,
    reload: fn(&T) -> R,
) -> Box<dyn Fn() -> futures_util::future::BoxFuture<'static, ()> + Send + Sync>
where
    T: Send + Sync + 'static,
    R: Send + 'static,
{
    Box::new(move || {
        let target = Arc::clone(&target);
        Box::pin(async move {
            let _ = tokio::task::spawn_blocking(move || reload(&target)).await;
        })
    })
}
