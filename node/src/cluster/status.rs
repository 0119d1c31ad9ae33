//! The status of runtimes held by other nodes, for the subscription manager's answer to a
//! `subscribe` naming `<runtime URL>/status` (`crate::bus`'s `status.rs`).
//!
//! The shared database says which node holds each runtime's session. A gone node's sessions
//! (no heartbeat within `cluster.membership_timeout_ms`) are `disconnected`: they wait to be
//! re-opened elsewhere. A live node is asked over NATS, on `rethink.status.<node>` (a JSON
//! array of runtime URLs), and answers from its own view (a JSON object: runtime URL → status).
//! A node that has no listener, or does not answer within [`ASK_TIMEOUT`], cannot be reached
//! by its runtimes either: its runtimes are `disconnected`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::link::{Link, db_down};
use crate::bus::{Bus, RouteError, RuntimeStatus};

/// How long a node waits for another node's status answer.
const ASK_TIMEOUT: Duration = Duration::from_millis(500);

/// The subject on which `node` answers status questions.
pub(super) fn status_subject(node: &str) -> String {
    format!("rethink.status.{node}")
}

impl Link {
    /// See [`crate::bus::remote::Remote::runtime_status`].
    pub(super) async fn runtime_status_inner(
        &self,
        runtimes: &[String],
    ) -> Result<Vec<(String, RuntimeStatus)>, RouteError> {
        let rows: Vec<(String, String, bool)> = sqlx::query_as(
            "SELECT s.runtime_url, s.node, \
             COALESCE(n.heartbeat_at > now() - make_interval(secs => $2), false) \
             FROM sessions AS s LEFT JOIN cluster_nodes AS n ON n.node_id = s.node \
             WHERE s.runtime_url = ANY($1)",
        )
        .bind(runtimes)
        .bind(self.membership_timeout.as_secs_f64())
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_down(&e))?;
        let mut out = Vec::with_capacity(rows.len());
        let mut ask: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (runtime, node, alive) in rows {
            if alive && *node != *self.node {
                ask.entry(node).or_default().push(runtime);
            } else {
                // A gone node's, or this node's row without the session restored here (an
                // arrival under way): waiting to be re-opened.
                out.push((runtime, RuntimeStatus::Disconnected));
            }
        }
        let asks = ask
            .into_iter()
            .map(|(node, runtimes)| async move { self.ask_status(&node, runtimes).await });
        for told in futures_util::future::join_all(asks).await {
            out.extend(told);
        }
        Ok(out)
    }

    /// Asks `node` the status of `runtimes`; those it does not tell are `disconnected`.
    async fn ask_status(&self, node: &str, runtimes: Vec<String>) -> Vec<(String, RuntimeStatus)> {
        let mut told: HashMap<String, String> = HashMap::new();
        match serde_json::to_vec(&runtimes) {
            Ok(payload) => {
                let asked = self.nats.request(status_subject(node), payload.into());
                match tokio::time::timeout(ASK_TIMEOUT, asked).await {
                    Ok(Ok(reply)) => match serde_json::from_slice(&reply.payload) {
                        Ok(answer) => told = answer,
                        Err(e) => {
                            tracing::warn!(error = %e, %node, "cluster: a status answer does not parse");
                        }
                    },
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, %node, "cluster: a status question failed");
                    }
                    Err(_) => {
                        tracing::warn!(%node, "cluster: a status question was not answered in time");
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cluster: a status question could not be written")
            }
        }
        runtimes
            .into_iter()
            .map(|r| {
                let status = told
                    .get(&r)
                    .and_then(|s| RuntimeStatus::parse(s))
                    .unwrap_or(RuntimeStatus::Disconnected);
                (r, status)
            })
            .collect()
    }

    /// Answers the status questions of the other nodes from `bus` until `stop`.
    pub(super) async fn listen_status(
        self: Arc<Self>,
        bus: Bus,
        stop: CancellationToken,
    ) -> Result<tokio::task::JoinHandle<()>, async_nats::SubscribeError> {
        let mut subscriber = self.nats.subscribe(status_subject(&self.node)).await?;
        Ok(tokio::spawn(async move {
            while let Some(message) = super::next_until(&mut subscriber, &stop).await {
                let Ok(runtimes) = serde_json::from_slice::<Vec<String>>(&message.payload) else {
                    tracing::warn!("cluster: a status question does not parse");
                    continue;
                };
                let answer: HashMap<String, &str> = bus
                    .local_status(&runtimes)
                    .into_iter()
                    .map(|(r, s)| (r, s.as_str()))
                    .collect();
                let Ok(payload) = serde_json::to_vec(&answer) else {
                    continue;
                };
                if let Some(to) = message.reply
                    && let Err(e) = self.nats.publish(to, payload.into()).await
                {
                    tracing::warn!(error = %e, "cluster: a status question was not answered");
                }
            }
        }))
    }
}
