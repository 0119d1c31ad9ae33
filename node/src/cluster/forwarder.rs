//! Group forwarding: the `cluster_inbox` inserts of concurrent routes go to one task, which
//! writes what has gathered meanwhile in one statement (one commit) and tells each holder node
//! once per group, like the store writer's group commits (`store/writer.rs`). A route waits
//! for its group's commit (not for the NATS notice, sent by a task of its own), so a forward
//! still returns only once the message is durable; groups
//! are written one after another, in the order the routes handed them over, so a sender's
//! messages keep their order.
//!
//! The queue bound (`session.outbox_max_messages`) is checked against the queue as the group's
//! statement starts: a group may overshoot it by its own messages for that session.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::link::{Link, db_down};
use super::metrics::NodeLabel;
use crate::bus::RouteError;

/// The most targets written in one statement.
const MAX_GROUP: usize = 512;

/// How many forwards may wait for the task.
pub(super) const QUEUE: usize = 1024;

/// One route's message for its remote targets.
#[derive(Debug)]
pub(super) struct Job {
    pub json: Arc<str>,
    pub from: String,
    pub sender: Option<String>,
    pub transport: String,
    /// (session, recipient, gateway runtime URL for a recipient of another domain) per target.
    pub targets: Vec<(String, String, Option<String>)>,
    pub done: oneshot::Sender<Vec<Verdict>>,
}

/// Per target of a group: its index, its session's node (`None`: gone), whether the session
/// still holds the recipient, whether the message was queued.
type TargetRow = (i64, Option<String>, bool, bool);

/// What became of one target.
#[derive(Debug, Clone)]
pub(super) enum Verdict {
    Queued,
    /// The session's queue is full.
    Full,
    /// The session is gone, or holds the recipient no more.
    Stale,
    Failed(RouteError),
}

impl Link {
    /// Writes the forwards handed over on `jobs`, group by group, until `stop`.
    pub(super) async fn run_forwarder(
        self: Arc<Self>,
        mut jobs: mpsc::Receiver<Job>,
        stop: CancellationToken,
    ) {
        loop {
            let first = tokio::select! {
                _ = stop.cancelled() => return,
                j = jobs.recv() => j,
            };
            let Some(first) = first else { return };
            let mut count = first.targets.len();
            let mut group = vec![first];
            while count < MAX_GROUP {
                match jobs.try_recv() {
                    Ok(job) => {
                        count += job.targets.len();
                        group.push(job);
                    }
                    Err(_) => break,
                }
            }
            Arc::clone(&self).write_group(group).await;
        }
    }

    /// One statement for the whole group, then one NATS notice per holder node.
    async fn write_group(self: Arc<Self>, group: Vec<Job>) {
        let mut sessions = Vec::new();
        let mut recipients = Vec::new();
        let mut messages = Vec::new();
        let mut gateways = Vec::new();
        for (k, job) in group.iter().enumerate() {
            let k = i32::try_from(k + 1).unwrap_or(i32::MAX);
            for (session, to, gateway) in &job.targets {
                sessions.push(session.as_str());
                recipients.push(to.as_str());
                messages.push(k);
                gateways.push(gateway.as_deref());
            }
        }
        let jsons: Vec<&str> = group.iter().map(|j| &*j.json).collect();
        let senders: Vec<Option<&str>> = group.iter().map(|j| j.sender.as_deref()).collect();
        let froms: Vec<&str> = group.iter().map(|j| j.from.as_str()).collect();
        let transports: Vec<&str> = group.iter().map(|j| j.transport.as_str()).collect();
        // Per target (by its index): the session's node now, whether it still holds the
        // recipient (its runtime URL, an address at or above it, a subscription to it, or, for
        // an address of another domain, the session is still that domain's gateway), and
        // whether the message was queued (false: the queue is full). The sessions' rows are
        // found by `id = ANY($1)` (the primary key, also in the generic plan); the queue's
        // length is counted up to the bound only (`LIMIT $8`), on `cluster_inbox_session`.
        let rows: Result<Vec<TargetRow>, sqlx::Error> = sqlx::query_as(
            "WITH held AS (SELECT s.id, s.node, s.runtime_url FROM sessions AS s \
                 WHERE s.id = ANY($1::text[]) FOR KEY SHARE), \
             v AS (SELECT t.i, t.k, t.session, t.recipient, held.node, \
                 (t.recipient = held.runtime_url OR t.gateway = held.runtime_url \
                 OR starts_with(t.recipient, held.runtime_url || '/') \
                 OR EXISTS (SELECT 1 FROM session_subscriptions AS ss \
                     WHERE ss.session = t.session AND ss.address = t.recipient) \
                 OR EXISTS (SELECT 1 FROM session_addresses AS a WHERE a.session = t.session \
                     AND (t.recipient = a.address OR starts_with(t.recipient, a.address || '/')))) \
                 AS holds \
                 FROM UNNEST($1::text[], $2::text[], $3::int[], $9::text[]) WITH ORDINALITY \
                     AS t (session, recipient, k, gateway, i) \
                 LEFT JOIN held ON held.id = t.session), \
             ok AS (SELECT v.i, v.k, v.session, v.recipient FROM v WHERE v.holds \
                 AND (SELECT count(*) FROM (SELECT FROM cluster_inbox AS c \
                     WHERE c.session = v.session LIMIT $8) AS q) < $8), \
             ins AS (INSERT INTO cluster_inbox \
                 (session, json, sender, sender_from, recipient, transport) \
                 SELECT ok.session, ($4::text[])[ok.k], ($5::text[])[ok.k], ($6::text[])[ok.k], \
                 ok.recipient, ($7::text[])[ok.k] FROM ok ORDER BY ok.i) \
             SELECT v.i, v.node, COALESCE(v.holds, false), ok.i IS NOT NULL FROM v \
             LEFT JOIN ok ON ok.i = v.i ORDER BY v.i",
        )
        .bind(&sessions)
        .bind(&recipients)
        .bind(&messages)
        .bind(&jsons)
        .bind(&senders)
        .bind(&froms)
        .bind(&transports)
        .bind(self.queue_max)
        .bind(&gateways)
        .fetch_all(&self.pool)
        .await;
        let mut verdicts = vec![Verdict::Stale; sessions.len()];
        let mut by_node: BTreeMap<String, Vec<String>> = BTreeMap::new();
        match rows {
            Err(e) => verdicts.fill(Verdict::Failed(db_down(&e))),
            Ok(rows) => {
                for (i, node, holds, queued) in rows {
                    let Some(i) = usize::try_from(i - 1).ok().filter(|&i| i < sessions.len())
                    else {
                        continue;
                    };
                    verdicts[i] = match node {
                        Some(node) if holds && queued => {
                            self.metrics
                                .forwarded
                                .get_or_create(&NodeLabel { node: node.clone() })
                                .inc();
                            let list = by_node.entry(node).or_default();
                            if !list.iter().any(|s| s == sessions[i]) {
                                list.push(sessions[i].to_owned());
                            }
                            Verdict::Queued
                        }
                        Some(_) if holds => Verdict::Full,
                        _ => Verdict::Stale,
                    };
                }
            }
        }
        // The messages are durable: the routes go on while the holders are told (by the task
        // publishing the notices, `Link::run_notifier`, so that the next group's statement does
        // not wait for NATS either).
        let mut verdicts = verdicts.into_iter();
        for job in group {
            let mine: Vec<Verdict> = verdicts.by_ref().take(job.targets.len()).collect();
            // A route that stopped waiting has nothing to be told.
            let _ = job.done.send(mine);
        }
        for (node, sessions) in by_node {
            self.notify(&node, &sessions);
        }
    }
}
