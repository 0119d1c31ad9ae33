//! Several nodes serving one domain (`[cluster]`, on when `cluster.nats_url` is set).
//!
//! The nodes share the bus's store in PostgreSQL (`store.url`): sessions name the node holding
//! them (`sessions.node`), and the address book of every node is readable by the others. Each
//! node subscribes to its own NATS subject (`rethink.node.<node_id>`). A message for a session
//! held by another node is stored in that session's queue (`cluster_inbox`) first, then the
//! holder is told over NATS; the holder moves it into the session's outbox and delivers it like
//! any frame (`link.rs`). A node writes a heartbeat; one silent for
//! `cluster.membership_timeout_ms` is gone, and a runtime of it may re-open on any node, which
//! takes the session over (`adopt.rs`, `membership.rs`); a runtime of a live node re-opening
//! elsewhere has its session handed over (`handover.rs`: the holder releases it on request). Each node keeps the answers of its
//! lookups in the other nodes' address books; a node whose book grew tells the others to
//! forget theirs before it answers its runtime (`book.rs`, `directory.rs`). A node asks the
//! holder of a runtime for its status when a subscription's answer needs it (`status.rs`).
//!
//! The policy, stub and application-service directories are each node's own; a reload on one
//! node reaches the others ([`reloads`]).
//!
//! The bus sees all of this through one narrow handle, [`crate::bus::remote::Remote`], which
//! [`Link`] implements.
//!
//! Matrix: the nodes share the rooms and the stream in the same database; each node's stream
//! writer takes positions under one row lock, so they are committed in order across the nodes,
//! and a commit on one node is announced to the others over NATS ([`stream`]), whose writers
//! then load what they did not write into their caches and wake their `/sync` requests.
//! Typing notifications, kept in memory by each node, travel over NATS too ([`typing`]).

mod adopt;
mod book;
mod directory;
mod drain;
mod forwarder;
pub mod handover;
mod link;
mod membership;
mod metrics;
mod notices;
pub mod presence;
mod refusal;
pub mod reloads;
mod status;
pub mod stream;
pub mod typing;

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use link::{Link, subject};
pub use metrics::ClusterMetrics;

use crate::bus::Bus;
use crate::config::ClusterConfig;
use crate::store::postgres::PgStore;

/// How many notices for other nodes may wait to be published (`Link::run_notifier`).
const NOTICE_QUEUE: usize = 1024;

/// How long the node waits for NATS at start.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Why clustering could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot connect to NATS at `cluster.nats_url` ({url}): {source}")]
    Connect {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("cannot subscribe to this node's NATS subject {subject}: {source}")]
    Subscribe {
        subject: String,
        #[source]
        source: async_nats::SubscribeError,
    },
    #[error("cluster: the shared database failed: {0}")]
    Database(#[from] sqlx::Error),
}

/// The node's membership of a cluster: the link the bus uses and the tasks that serve it.
#[derive(Debug)]
pub struct Cluster {
    link: Arc<Link>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Cluster {
    /// Connects to NATS and writes the first heartbeat (before the node loads its sessions,
    /// so that no other node takes them over meanwhile).
    pub async fn connect(
        config: &ClusterConfig,
        node_id: &str,
        store: &PgStore,
        session: &crate::config::SessionConfig,
        metrics: ClusterMetrics,
    ) -> Result<Arc<Link>, ClusterError> {
        let cache = Arc::new(book::LookupCache::default());
        let events = Arc::clone(&cache);
        let nats = async_nats::ConnectOptions::new()
            .name(format!("rethink-node {node_id}"))
            .event_callback(move |event| {
                // Forget requests may have been lost: see `book.rs`.
                match event {
                    async_nats::Event::Disconnected | async_nats::Event::Closed => {
                        events.set_disconnected(true);
                    }
                    async_nats::Event::Connected => events.set_disconnected(false),
                    async_nats::Event::SlowConsumer(_) => events.forget_all(),
                    _ => {}
                }
                std::future::ready(())
            })
            .connection_timeout(CONNECT_TIMEOUT)
            .connect(config.nats_url.as_str())
            .await
            .map_err(|source| ClusterError::Connect {
                url: config.nats_url.clone(),
                source,
            })?;
        let (forwards, forward_jobs) = tokio::sync::mpsc::channel(forwarder::QUEUE);
        let (notices, notice_queue) = tokio::sync::mpsc::channel(NOTICE_QUEUE);
        let link = Arc::new(Link {
            node: Arc::from(node_id),
            pool: store.bus_pool().clone(),
            nats,
            metrics,
            membership_timeout: config.membership_timeout,
            resume_window: session.resume_window,
            queue_max: i64::try_from(session.outbox_max_messages).unwrap_or(i64::MAX),
            draining: tokio::sync::Mutex::new(()),
            arriving: Arc::new(tokio::sync::Mutex::new(())),
            hold_arrivals: config.test_hold_arrivals.then(tokio::sync::Notify::new),
            release_delay: config.test_release_delay,
            gave_up: std::sync::Mutex::default(),
            bus: std::sync::OnceLock::new(),
            cache,
            forwards,
            forward_jobs: std::sync::Mutex::new(Some(forward_jobs)),
            notices,
            notice_queue: std::sync::Mutex::new(Some(notice_queue)),
            notices_dropped: std::sync::atomic::AtomicU64::new(0),
        });
        link.heartbeat().await?;
        Ok(link)
    }

    /// Connects the bus to the cluster and starts listening and heart-beating.
    pub async fn start(link: Arc<Link>, bus: &Bus) -> Result<Cluster, ClusterError> {
        let subject = subject(&link.node);
        let subscriber = link
            .nats
            .subscribe(subject.clone())
            .await
            .map_err(|source| ClusterError::Subscribe {
                subject: subject.clone(),
                source,
            })?;
        let stop = CancellationToken::new();
        let directory = Arc::clone(&link)
            .listen_directory(stop.clone())
            .await
            .map_err(|source| ClusterError::Subscribe {
                subject: directory::directory_subject(&link.node),
                source,
            })?;
        let handover = Arc::clone(&link)
            .listen_handover(bus.clone(), stop.clone())
            .await
            .map_err(|source| ClusterError::Subscribe {
                subject: handover::handover_subject(&link.node),
                source,
            })?;
        let status = Arc::clone(&link)
            .listen_status(bus.clone(), stop.clone())
            .await
            .map_err(|source| ClusterError::Subscribe {
                subject: status::status_subject(&link.node),
                source,
            })?;
        let jobs = crate::locks::lock(&link.forward_jobs).take();
        let forwarder =
            jobs.map(|jobs| tokio::spawn(Arc::clone(&link).run_forwarder(jobs, stop.clone())));
        let queue = crate::locks::lock(&link.notice_queue).take();
        let notifier =
            queue.map(|queue| tokio::spawn(Arc::clone(&link).run_notifier(queue, stop.clone())));
        // The bus and the link hold each other until `stop` disconnects them.
        let _ = link.bus.set(bus.clone());
        bus.set_remote(Arc::clone(&link) as Arc<dyn crate::bus::remote::Remote>);
        let receiver =
            tokio::spawn(Arc::clone(&link).run_receiver(subscriber, bus.clone(), stop.clone()));
        let membership = tokio::spawn(Arc::clone(&link).run_membership(bus.clone(), stop.clone()));
        tracing::info!(node = %link.node, %subject, "cluster: listening");
        Ok(Cluster {
            link,
            stop,
            tasks: [receiver, membership, directory, handover, status]
                .into_iter()
                .chain(forwarder)
                .chain(notifier)
                .collect(),
        })
    }

    /// Follows the reloads of `dirs` across the cluster (see [`reloads`]) until the node stops.
    pub async fn follow_reloads(&self, dirs: Vec<reloads::Followed>) -> Result<(), ClusterError> {
        reloads::follow(
            self.link.nats.clone(),
            self.link.pool.clone(),
            Arc::clone(&self.link.node),
            dirs,
            self.link.metrics.clone(),
            self.stop.clone(),
        )
        .await
        .map_err(subscribing(reloads::RELOAD_SUBJECT))?;
        Ok(())
    }

    /// Shares this node's Matrix stream (see [`stream`]), typing notifications (see [`typing`])
    /// and presence (see [`presence`]) with the other nodes until the node stops.
    pub async fn follow_matrix(
        &self,
        writer: &crate::stream::StreamWriter,
        typing: &crate::userdata::Typing,
        presence: &crate::userdata::Presence,
    ) -> Result<(), ClusterError> {
        let (nats, node) = (self.link.nats.clone(), Arc::clone(&self.link.node));
        stream::follow(
            nats.clone(),
            Arc::clone(&node),
            writer.clone(),
            self.stop.clone(),
        )
        .await
        .map_err(subscribing(stream::STREAM_SUBJECT))?;
        typing::follow(
            nats.clone(),
            Arc::clone(&node),
            typing.clone(),
            self.stop.clone(),
        )
        .await
        .map_err(subscribing(typing::TYPING_SUBJECT))?;
        presence::follow(nats, node, presence.clone(), self.stop.clone())
            .await
            .map_err(subscribing(presence::PRESENCE_SUBJECT))?;
        Ok(())
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.link.node
    }

    /// Whether the NATS connection is up (for `/healthz`).
    pub fn nats_up(&self) -> bool {
        self.link.nats.connection_state() == async_nats::connection::State::Connected
    }

    /// Stops listening and heart-beating, and leaves the cluster (after the node's store is
    /// flushed: its sessions may then be re-opened elsewhere at once).
    pub async fn stop(&self) {
        self.stop.cancel();
        if let Some(bus) = self.link.bus.get() {
            bus.clear_remote();
        }
        for task in &self.tasks {
            task.abort();
        }
        if let Err(e) = self.link.leave().await {
            tracing::warn!(error = %e, "cluster: leaving failed; the other nodes wait for the membership timeout");
        }
        if let Err(e) = self.link.nats.flush().await {
            tracing::debug!(error = %e, "cluster: NATS flush at stop");
        }
    }
}

/// The next message of `subscriber`; `None` once `stop` is cancelled or the subscription ended.
/// Every listening loop of the cluster reads its subject with it.
async fn next_until(
    subscriber: &mut async_nats::Subscriber,
    stop: &CancellationToken,
) -> Option<async_nats::Message> {
    tokio::select! {
        _ = stop.cancelled() => None,
        m = futures_util::StreamExt::next(subscriber) => m,
    }
}

/// The error of a failed subscription to `subject`.
fn subscribing(subject: &'static str) -> impl FnOnce(async_nats::SubscribeError) -> ClusterError {
    move |source| ClusterError::Subscribe {
        subject: subject.to_owned(),
        source,
    }
}
