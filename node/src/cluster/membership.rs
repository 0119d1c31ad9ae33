//! Membership: every third of `cluster.membership_timeout_ms` this node writes its heartbeat
//! (`cluster_nodes`, the database's clock), forgets the sessions another node has taken over
//! (it may have been silent too long: it must not deliver them any more), moves the messages
//! queued for its sessions whose NATS notification was lost, and (with cross-domain routing
//! on) takes over the gateways to other domains of gone nodes (`adopt.rs`). Sessions of a node gone for longer
//! than the membership timeout and the resume window together are ended by whichever node
//! notices first (nobody re-opened them), which publishes `expired` on their
//! `<runtime URL>/status` to the subscribers on every node.

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

    /// Leaves the cluster (graceful stop): the heartbeat is dated back by the membership
    /// timeout, so the node's sessions may be re-opened elsewhere at once, and expire a resume
    /// window from now.
    pub(super) async fn leave(&self) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE cluster_nodes SET heartbeat_at = now() - make_interval(secs => $2) \
             WHERE node_id = $1",
        )
        .bind(&*self.node)
        .bind(self.membership_timeout.as_secs_f64())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Ends the sessions of nodes gone for longer than the resume window (nobody re-opened
    /// them), with their outboxes and queues. Returns their runtime URLs (each ended by one
    /// node only: the one whose DELETE took the row).
    async fn expire_gone(&self) -> Result<Vec<String>, sqlx::Error> {
        let after = self.membership_timeout + self.resume_window;
        sqlx::query_scalar(
            "WITH gone AS (DELETE FROM sessions AS s USING cluster_nodes AS n \
                 WHERE s.node = n.node_id AND n.node_id <> $1 \
                 AND n.heartbeat_at < now() - make_interval(secs => $2) \
                 RETURNING s.id, s.runtime_url), \
             o AS (DELETE FROM outbox WHERE session IN (SELECT id FROM gone)), \
             q AS (DELETE FROM cluster_inbox WHERE session IN (SELECT id FROM gone)) \
             SELECT runtime_url FROM gone",
        )
        .bind(&*self.node)
        .bind(after.as_secs_f64())
        .fetch_all(&self.pool)
        .await
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
        self.take_late_releases(bus).await?;
        if bus.routes_to_other_domains() {
            self.take_gone_gateways(bus).await?;
        }
        let expired = self.expire_gone().await?;
        if !expired.is_empty() {
            tracing::info!(
                expired = expired.len(),
                "cluster: sessions of nodes gone past the resume window ended"
            );
        }
        for runtime in &expired {
            bus.publish_expired_of_gone(runtime).await;
        }
        let sessions: Vec<_> = queued.iter().filter_map(|k| bus.session(k)).collect();
        if !sessions.is_empty()
            && let Err(e) = self.drain_sessions(&sessions).await
        {
            tracing::warn!(error = %e, "cluster: moving queued messages failed");
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
