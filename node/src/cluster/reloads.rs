//! Reloads that reach every node: the policy directory (`policy.dir`), the stub directory
//! (`stubs.dir`) and the application-service directory (`appservices.dir`).
//!
//! Each node loads its own copy of these directories, as a single node does, and reloads it when
//! it changes (polling, SIGHUP, `POST /admin/policy/reload`). When a reload changes what a node
//! loaded (the SHA-256 of the directory's files, [`dir_digest`]), it publishes a notice
//! `{kind, node, digest}` on [`RELOAD_SUBJECT`]; every other node that loaded something else
//! reloads its own copy at once instead of waiting for its next poll. The nodes are meant to read the
//! same files (one shared volume, or the same deployment): a node whose copy still differs
//! after the reload logs a warning naming both digests and counts
//! `rethink_cluster_reload_mismatches_total{kind}`, so that the operator sees nodes enforcing
//! different sets. Loops end by themselves: a node announces only a digest it did not hold
//! before. Notices of nodes that are not members of this cluster (`cluster_nodes` in the shared
//! database; one NATS server may serve several clusters) are ignored.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError};

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, stream};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::ClusterMetrics;

/// The NATS subject every node publishes its reload notices on and listens to.
pub const RELOAD_SUBJECT: &str = "rethink.reload";

/// One directory the nodes of a cluster keep alike.
pub struct Followed {
    /// `policy`, `stubs` or `appservices` (the notice's `kind` and the metric's label).
    pub kind: &'static str,
    /// This node's copy.
    pub dir: PathBuf,
    /// Yields after every reload of this node's copy, whatever started it.
    pub reloaded: BoxStream<'static, ()>,
    /// Reloads this node's copy now.
    pub reload: Box<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>,
}

impl std::fmt::Debug for Followed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Followed")
            .field("kind", &self.kind)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// A stream yielding once per change seen by `rx` (the value is not looked at).
pub fn changes<T: Send + Sync + 'static>(rx: watch::Receiver<T>) -> BoxStream<'static, ()> {
    stream::unfold(rx, |mut rx| async move {
        rx.changed().await.ok()?;
        Some(((), rx))
    })
    .boxed()
}

/// A reload notice, as published.
#[derive(Debug, Serialize, Deserialize)]
struct Notice {
    kind: String,
    node: String,
    digest: String,
}

/// The SHA-256 (hex) of the regular files directly in `dir`: names in order, each with its
/// length and bytes. A directory that cannot be read has the digest `unreadable`.
pub fn dir_digest(dir: &Path) -> String {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return "unreadable".to_owned();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let mut hash = Sha256::new();
    for file in files {
        let Ok(bytes) = std::fs::read(&file) else {
            continue;
        };
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        hash.update((name.len() as u64).to_be_bytes());
        hash.update(name.as_bytes());
        hash.update((bytes.len() as u64).to_be_bytes());
        hash.update(&bytes);
    }
    format!("{:x}", hash.finalize())
}

/// Whether `node` is a member of this node's cluster (one NATS server may serve several
/// clusters: their notices are not ours).
async fn member(pool: &sqlx::PgPool, node: &str) -> bool {
    let found: Result<Option<i32>, sqlx::Error> =
        sqlx::query_scalar("SELECT 1 FROM cluster_nodes WHERE node_id = $1")
            .bind(node)
            .fetch_optional(pool)
            .await;
    match found {
        Ok(found) => found.is_some(),
        Err(e) => {
            tracing::warn!(error = %e, %node, "cluster: a reload notice could not be checked against the members; ignored");
            false
        }
    }
}

async fn digest_of(dir: &Path) -> String {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || dir_digest(&dir))
        .await
        .unwrap_or_else(|_| "unreadable".to_owned())
}

/// Starts following `dirs`: one task announcing this node's reloads, one per directory, and
/// one applying the other nodes' notices.
pub(super) async fn follow(
    nats: async_nats::Client,
    pool: sqlx::PgPool,
    node: Arc<str>,
    dirs: Vec<Followed>,
    metrics: ClusterMetrics,
    stop: CancellationToken,
) -> Result<Vec<JoinHandle<()>>, async_nats::SubscribeError> {
    let mut notices = nats.subscribe(RELOAD_SUBJECT).await?;
    let mut tasks = Vec::new();
    let mut targets = Vec::new();
    for followed in dirs {
        let Followed {
            kind,
            dir,
            mut reloaded,
            reload,
        } = followed;
        // The digest of what this node loaded last.
        let loaded = Arc::new(std::sync::Mutex::new(digest_of(&dir).await));
        targets.push((kind, dir.clone(), reload, Arc::clone(&loaded)));
        let (nats, node, metrics, stop) = (
            nats.clone(),
            Arc::clone(&node),
            metrics.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    next = reloaded.next() => if next.is_none() { return },
                }
                let now = digest_of(&dir).await;
                {
                    let mut last = loaded.lock().unwrap_or_else(PoisonError::into_inner);
                    if *last == now {
                        continue;
                    }
                    last.clone_from(&now);
                }
                let notice = Notice {
                    kind: kind.to_owned(),
                    node: node.to_string(),
                    digest: now,
                };
                let payload = serde_json::to_vec(&notice).unwrap_or_default();
                match nats.publish(RELOAD_SUBJECT, payload.into()).await {
                    Ok(()) => {
                        metrics.reload_notices_sent.get_or_create(&kind.into()).inc();
                        tracing::info!(kind, digest = %notice.digest, "cluster: reload announced to the other nodes");
                    }
                    Err(e) => {
                        tracing::warn!(kind, error = %e, "cluster: the reload could not be announced; the other nodes reload at their next poll");
                    }
                }
            }
        }));
    }
    tasks.push(tokio::spawn(async move {
        while let Some(message) = super::next_until(&mut notices, &stop).await {
            let Ok(notice) = serde_json::from_slice::<Notice>(&message.payload) else {
                tracing::debug!("cluster: unreadable reload notice ignored");
                continue;
            };
            if *notice.node == *node || !member(&pool, &notice.node).await {
                continue;
            }
            let Some((kind, dir, reload, loaded)) = targets.iter().find(|(k, ..)| *k == notice.kind)
            else {
                continue;
            };
            metrics.reload_notices_received.get_or_create(&(*kind).into()).inc();
            if *loaded.lock().unwrap_or_else(PoisonError::into_inner) == notice.digest {
                continue;
            }
            tracing::info!(kind, from = %notice.node, "cluster: another node reloaded; reloading this node's copy");
            reload().await;
            let ours = digest_of(dir).await;
            if ours != notice.digest {
                metrics.reload_mismatches.get_or_create(&(*kind).into()).inc();
                tracing::warn!(kind, node = %notice.node, theirs = %notice.digest, ours = %ours,
                    dir = %dir.display(),
                    "cluster: this node's copy differs from another node's after a reload: the nodes enforce different sets");
            }
        }
    }));
    Ok(tasks)
}
