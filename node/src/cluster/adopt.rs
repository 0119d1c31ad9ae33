//! Taking over a session: in one transaction, the session's row is locked (`FOR UPDATE`, so
//! that two nodes adopting it, or a sender queuing for it, are serialized), its node checked
//! gone (no heartbeat within `cluster.membership_timeout_ms`, by the database's clock) or this
//! node (a live holder gave the row to this node when it released the session:
//! `handover.rs`), the row given to this node, a new start counter taken and the session's
//! image read. A session of another live node is not touched: [`Taken::HeldBy`].

use std::collections::HashMap;

use super::link::Link;
use crate::bus::RouteError;
use crate::bus::remote::Adopted;
use crate::store::postgres::from_db;
use crate::store::{PersistedSession, SessionKey};

/// What one try of taking a session over found.
#[derive(Debug)]
pub(super) enum Taken {
    Adopted(Adopted),
    /// No session has this resume secret.
    Unknown,
    /// The live node `node` holds the session `session`.
    HeldBy {
        node: String,
        session: String,
    },
}

impl Link {
    /// Takes over the gateway sessions to other domains (`bus/gateways.rs`) of the nodes that
    /// are gone: no runtime re-opens them, and what they hold must reach those domains. Each
    /// is adopted by one node (the row lock of `adopt_tx`), restored with what was queued
    /// for it, and its domain's stub started here (`Bus::take_over`).
    pub(super) async fn take_gone_gateways(
        &self,
        bus: &crate::bus::Bus,
    ) -> Result<(), sqlx::Error> {
        // The gone nodes' sessions, by `sessions_node`; the gateways among them by their URL.
        let hashes: Vec<Vec<u8>> = sqlx::query_scalar(
            "SELECT s.token_hash FROM cluster_nodes AS n JOIN sessions AS s ON s.node = n.node_id \
             WHERE n.node_id <> $1 AND n.heartbeat_at <= now() - make_interval(secs => $2) \
             AND starts_with(s.runtime_url, $3)",
        )
        .bind(&*self.node)
        .bind(self.membership_timeout.as_secs_f64())
        .bind(bus.gateway_runtime_url(""))
        .fetch_all(&self.pool)
        .await?;
        for hash in hashes {
            let Ok(hash) = <[u8; 32]>::try_from(hash.as_slice()) else {
                continue;
            };
            // Another node took it first, or it is alive again: nothing to do.
            if let Taken::Adopted(adopted) = self.adopt_tx(hash).await? {
                self.metrics.adopted.inc();
                bus.take_over(adopted).await;
            }
        }
        Ok(())
    }

    /// One try of taking the session whose resume secret hashes to `token_hash` over.
    pub(super) async fn adopt_once(&self, token_hash: [u8; 32]) -> Result<Taken, RouteError> {
        self.adopt_tx(token_hash).await.map_err(|e| {
            tracing::warn!(error = %e, "cluster: taking a session over failed");
            RouteError::Cluster("the shared database is unreachable; retry".into())
        })
    }

    pub(super) async fn adopt_tx(&self, token_hash: [u8; 32]) -> Result<Taken, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let row: Option<(String, Option<String>, bool)> = sqlx::query_as(
            "SELECT s.id, s.node, \
             COALESCE(n.heartbeat_at <= now() - make_interval(secs => $2), true) \
             FROM sessions AS s LEFT JOIN cluster_nodes AS n ON n.node_id = s.node \
             WHERE s.token_hash = $1 FOR UPDATE OF s",
        )
        .bind(&token_hash[..])
        .bind(self.membership_timeout.as_secs_f64())
        .fetch_optional(&mut *tx)
        .await?;
        let Some((id, node, gone)) = row else {
            return Ok(Taken::Unknown);
        };
        if let Some(node) = node.filter(|n| !gone && **n != *self.node) {
            return Ok(Taken::HeldBy { node, session: id });
        }
        sqlx::query("UPDATE sessions SET node = $2 WHERE id = $1")
            .bind(&id)
            .bind(&*self.node)
            .execute(&mut *tx)
            .await?;
        let epoch: i64 = sqlx::query_scalar(
            "INSERT INTO node_meta (key, value) VALUES ('epoch', 1) \
             ON CONFLICT (key) DO UPDATE SET value = COALESCE(node_meta.value, 0) + 1 \
             RETURNING value",
        )
        .fetch_one(&mut *tx)
        .await?;
        let (runtime_url, hash, identity_json, acked_seq, cseq): (
            String,
            Vec<u8>,
            String,
            i64,
            i64,
        ) = sqlx::query_as(
            "SELECT runtime_url, token_hash, identity_json, acked_seq, cseq FROM sessions \
                 WHERE id = $1",
        )
        .bind(&id)
        .fetch_one(&mut *tx)
        .await?;
        let addresses: Vec<(String, Option<String>)> = sqlx::query_as(
            "SELECT address, alloc_key FROM session_addresses WHERE session = $1 ORDER BY ord",
        )
        .bind(&id)
        .fetch_all(&mut *tx)
        .await?;
        let subscriptions: Vec<String> = sqlx::query_scalar(
            "SELECT address FROM session_subscriptions WHERE session = $1 ORDER BY ord",
        )
        .bind(&id)
        .fetch_all(&mut *tx)
        .await?;
        let outbox: Vec<(i64, String)> = sqlx::query_as(
            "SELECT seq, json FROM outbox WHERE session = $1 AND seq > $2 ORDER BY seq",
        )
        .bind(&id)
        .bind(acked_seq)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut allocation_keys = HashMap::new();
        let addresses = addresses
            .into_iter()
            .map(|(address, key)| {
                if let Some(key) = key {
                    allocation_keys.insert(address.clone(), key);
                }
                address
            })
            .collect();
        let session = PersistedSession {
            id: SessionKey::from(id),
            runtime_url,
            token_hash: <[u8; 32]>::try_from(hash.as_slice()).unwrap_or(token_hash),
            identity_json,
            acked_seq: from_db(acked_seq),
            cseq: from_db(cseq),
            addresses,
            allocation_keys,
            subscriptions,
            outbox: outbox
                .into_iter()
                .map(|(seq, json)| (from_db(seq), json))
                .collect(),
        };
        Ok(Taken::Adopted(Adopted {
            session,
            epoch: from_db(epoch),
            arriving: None,
        }))
    }
}
