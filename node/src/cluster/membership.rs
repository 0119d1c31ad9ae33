//! Membership: every third of `cluster.membership_timeout_ms` this node writes its heartbeat
//! (`cluster_nodes`, the database's clock), forgets the sessions another node has taken over
//! (it may have been silent too long: it must not deliver them any more), and moves the messages
//! queued for its sessions whose NATS notification was lost.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::link::Link;
use crate::bus::Bus;

impl Link {
    /// Writes this node's heartbeat.
    pub(super) async fn heartbeat(&self) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO cluster_nodes (node_id, heartbeat_at, started_at) \
             VALUES ($1, now(), now()) \
             ON CONFLICT (node_id) DO UPDATE SET heartbeat_at = now()",
        )
        .bind(&*self.node)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Leaves the cluster (graceful stop): the node's sessions may be re-opened elsewhere at
    /// once.
    pub(super) async fn leave(&self) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM cluster_nodes WHERE node_id = $1")
            .bind(&*self.node)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn beat(&self, bus: &Bus) -> Result<(), sqlx::Error> {
        self.heartbeat().await?;
        let local: Vec<String> = bus.session_keys().iter().map(|k| k.to_string()).collect();
        let taken: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM sessions WHERE id = ANY($1) AND node IS DISTINCT FROM $2",
        )
        .bind(&local)
        .bind(&*self.node)
        .fetch_all(&self.pool)
        .await?;
        for key in taken {
            if let Some(session) = bus.session(&key) {
                bus.forget_taken(&session);
            }
        }
        let queued: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT i.session FROM cluster_inbox AS i \
             JOIN sessions AS s ON s.id = i.session WHERE s.node = $1",
        )
        .bind(&*self.node)
        .fetch_all(&self.pool)
        .await?;
        for key in queued {
            if let Some(session) = bus.session(&key)
                && let Err(e) = self.drain_inner(&session).await
            {
                tracing::warn!(error = %e, session = %key, "cluster: moving queued messages failed");
            }
        }
        Ok(())
    }

    /// The heartbeat task, until `stop`.
    pub(super) async fn run_membership(self: Arc<Self>, bus: Bus, stop: CancellationToken) {
        let mut every = tokio::time::interval(self.membership_timeout / 3);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = every.tick() => {}
            }
            if let Err(e) = self.beat(&bus).await {
                tracing::warn!(error = %e, "cluster: heartbeat failed");
            }
        }
    }
}
