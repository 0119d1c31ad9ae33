//! Handing a session over between two live nodes: a runtime re-opens on node B a session that
//! node A holds (a dropped connection landing elsewhere behind a load balancer).
//!
//! - B checks the re-open's identity first (`ws/session/handshake.rs`: a wrong identity is 401
//!   and A is not disturbed), then tries to take the row over (`adopt.rs`); A being alive, B
//!   asks it over NATS (`rethink.handover.<A>`, request/reply, [`HANDOVER_TIMEOUT`] at most)
//!   to release the session, then tries once more. A not answering in time (stopped, cut off)
//!   leaves the session on A: 503, as before hand-overs existed. A gone is adopted as before.
//! - A, holding its drain lock (no move from `cluster_inbox` half done), stops the session
//!   (`bus/handover.rs` step 1: nothing enters its outbox any more, its connection is closed as
//!   when superseded locally, the store writer commits what routes submitted), then in one
//!   transaction, under the row's lock: writes the frames still owed (those routes pushed and
//!   did not submit yet included), `acked_seq` and `cseq`, and gives the row to B. Then it
//!   forgets the session (step 3), publishes `disconnected` if a connection was attached
//!   (durable on every node before the reply), and replies. B adopts the row (its node is B
//!   now), restores it with the outbox A wrote, moves what is queued for it, and replays after
//!   `lastSeq`; the re-open answers `live` as any.
//!
//! Every message accepted for the session is delivered once, in order per sender:
//! - pushed into the outbox on A before step 1: in the outbox A wrote (an entry whose store
//!   write A's writer commits later writes the same row again, or finds it acknowledged);
//! - routed on A between steps 1 and 3 (it looked the session up just before): the session is
//!   *handed over*, so the frame is forwarded by the session's key through `cluster_inbox`
//!   (the forward's statement takes the row `FOR KEY SHARE`: before A's transaction it queues
//!   with A named, whose drain then finds the row is not A's and moves nothing; after it, B is
//!   told). B moves the queue after restoring the outbox: after the sender's earlier frames;
//! - routed on A after step 3: A's book does not have it and A's lookup cache was emptied
//!   under the route gate (no route is between its lookups and its forwards then), so the
//!   database names B. A lookup that read the database before A's transaction and ends after
//!   the emptying does not keep its answer (`book.rs`'s generation);
//! - forwarded by node C to A (C's cache names A): forwards address sessions, not nodes; the
//!   statement reads the row's node. A notice reaching A after the release names a session A
//!   does not hold: ignored, the message waits in the queue, which B moves when it adopts;
//! - routed on B: under B's route gate, a route either saw the session before it arrived (and
//!   queued for it: moved at adoption) or after (local push); a cached answer naming the
//!   session on A is dropped from the forward, the route served it locally.
//!
//! A request carries the asking node's deadline (its wall clock): one read later (the holder was
//! stopped meanwhile) is ignored, so the nodes' clocks must agree within a fraction of
//! [`HANDOVER_TIMEOUT`] (a larger skew makes hand-overs fail with 503, or lets one be read late).
//!
//! A request for a session the holder has not restored (yet) waits for the adoptions under way
//! there (`Link::arriving`, held from an adoption's row taken to its session restored): the row
//! may be its own because it is restoring that session, and
//! must not be given on to a third node then.
//!
//! If B gives up (timeout) just as A's release commits, the row names B, which does not hold
//! the session: B remembers the sessions it gave up on, and its next heartbeats take such a row
//! in as an adoption (`Link::take_late_releases`), so that the session expires after its resume
//! window unless its runtime re-opens it (on B, or on another node, which asks B).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use super::adopt::Taken;
use super::link::Link;
use crate::bus::remote::Adopted;
use crate::bus::{Bus, Released, RouteError};

/// How long a node waits for a live holder to release a session.
pub const HANDOVER_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a request for a session this node does not hold waits for the adoptions under way
/// here (one of which may be restoring that session) before it is answered "not here".
const ARRIVAL_WAIT: Duration = Duration::from_secs(1);

/// The subject on which `node` hears requests to release its sessions.
pub(super) fn handover_subject(node: &str) -> String {
    format!("rethink.handover.{node}")
}

/// A request to release a session, as sent over NATS.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Request {
    session: String,
    /// The node asking (the row is given to it).
    to: String,
    /// When the asking node stops waiting (Unix ms): a request read later is ignored.
    deadline_ms: u64,
}

/// The holder's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    /// The row is the asking node's now.
    Released,
    /// The session is not this node's (ended, or taken over meanwhile).
    NotHere,
    /// The database failed: the session stays here.
    Failed,
}

impl Reply {
    fn as_str(self) -> &'static str {
        match self {
            Reply::Released => "released",
            Reply::NotHere => "not-here",
            Reply::Failed => "failed",
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Link {
    /// Takes the session whose resume secret hashes to `token_hash` over: at once if its node
    /// is gone (or it is this node's row), else after asking its live holder to release it.
    pub(super) async fn adopt_inner(
        &self,
        token_hash: [u8; 32],
    ) -> Result<Option<Adopted>, RouteError> {
        let arriving = Arc::clone(&self.arriving).lock_owned().await;
        let (node, session) = match self.adopt_once(token_hash).await? {
            Taken::Adopted(a) => {
                self.hold_arrival().await;
                return Ok(Some(Adopted {
                    arriving: Some(arriving),
                    ..a
                }));
            }
            Taken::Unknown => return Ok(None),
            Taken::HeldBy { node, session } => (node, session),
        };
        drop(arriving);
        let asked = self.ask_release(&node, &session).await;
        let arriving = Arc::clone(&self.arriving).lock_owned().await;
        match self.adopt_once(token_hash).await? {
            Taken::Adopted(a) => {
                self.metrics.handed_over.inc();
                self.hold_arrival().await;
                Ok(Some(Adopted {
                    arriving: Some(arriving),
                    ..a
                }))
            }
            Taken::Unknown => Ok(None),
            Taken::HeldBy { node, .. } => {
                crate::locks::lock(&self.gave_up).push((token_hash, std::time::Instant::now()));
                Err(RouteError::Cluster(format!(
                    "the session is held by node {node}, which is alive and did not release it \
                 ({asked}): retry, or re-open it there"
                )))
            }
        }
    }

    /// The sessions this node gave up asking for that their holder released to it all the
    /// same (it did so just after this node stopped waiting): their rows are this node's while
    /// no node holds them. Each is taken in as an adoption (`Bus::take_over`): restored
    /// disconnected here, it expires after its resume window unless its runtime re-opens it.
    /// Checked by each heartbeat, for twice the membership timeout after giving up.
    pub(super) async fn take_late_releases(&self, bus: &Bus) -> Result<(), sqlx::Error> {
        let pending = std::mem::take(&mut *crate::locks::lock(&self.gave_up));
        let mut keep = Vec::new();
        for (hash, since) in pending {
            // No adoption of this node runs meanwhile (a re-open of that very session, say).
            let _arriving = self.arriving.lock().await;
            let row: Option<(String, Option<String>)> =
                sqlx::query_as("SELECT id, node FROM sessions WHERE token_hash = $1")
                    .bind(&hash[..])
                    .fetch_optional(&self.pool)
                    .await?;
            match row {
                Some((id, Some(node))) if *node == *self.node => {
                    if bus.session(&id).is_none()
                        && let Taken::Adopted(adopted) = self.adopt_tx(hash).await?
                    {
                        tracing::info!(session = %id, "cluster: a session released to this node after it stopped asking is taken in");
                        bus.take_over(adopted).await;
                    }
                }
                Some(_) if since.elapsed() < 2 * self.membership_timeout => {
                    keep.push((hash, since));
                }
                _ => {}
            }
        }
        crate::locks::lock(&self.gave_up).extend(keep);
        Ok(())
    }

    /// With `cluster.test_hold_arrivals` (tests only): waits for a hand-over request to reach
    /// this node, at most [`HANDOVER_TIMEOUT`], the arrival's lock held.
    async fn hold_arrival(&self) {
        if let Some(hold) = &self.hold_arrivals {
            let _ = tokio::time::timeout(HANDOVER_TIMEOUT, hold.notified()).await;
        }
    }

    /// Asks `node` to release `session` to this node; what became of it, for the refusal.
    async fn ask_release(&self, node: &str, session: &str) -> String {
        let request = Request {
            session: session.to_owned(),
            to: self.node.to_string(),
            deadline_ms: unix_ms()
                + u64::try_from(HANDOVER_TIMEOUT.as_millis()).unwrap_or(u64::MAX),
        };
        let Ok(payload) = serde_json::to_vec(&request) else {
            return "the request could not be written".into();
        };
        let asked = self.nats.request(handover_subject(node), payload.into());
        match tokio::time::timeout(HANDOVER_TIMEOUT, asked).await {
            Ok(Ok(reply)) => String::from_utf8_lossy(&reply.payload).into_owned(),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, %node, %session, "cluster: a hand-over request failed");
                format!("no answer: {}", e.kind())
            }
            Err(_) => {
                tracing::warn!(%node, %session, "cluster: a hand-over request was not answered in time");
                format!("no answer within {} ms", HANDOVER_TIMEOUT.as_millis())
            }
        }
    }

    /// Serves the requests to release this node's sessions until `stop`.
    pub(super) async fn listen_handover(
        self: Arc<Self>,
        bus: Bus,
        stop: CancellationToken,
    ) -> Result<tokio::task::JoinHandle<()>, async_nats::SubscribeError> {
        let mut subscriber = self.nats.subscribe(handover_subject(&self.node)).await?;
        Ok(tokio::spawn(async move {
            while let Some(message) = super::next_until(&mut subscriber, &stop).await {
                let Ok(request) = serde_json::from_slice::<Request>(&message.payload) else {
                    tracing::warn!("cluster: a hand-over request does not parse");
                    continue;
                };
                if unix_ms() > request.deadline_ms {
                    tracing::warn!(session = %request.session, "cluster: a hand-over request read too late: ignored");
                    continue;
                }
                let (link, bus) = (Arc::clone(&self), bus.clone());
                tokio::spawn(async move {
                    let reply = link.release(&bus, &request).await;
                    tracing::info!(session = %request.session, to = %request.to, reply = reply.as_str(), "cluster: hand-over request");
                    if let Some(to) = message.reply
                        && let Err(e) = link.nats.publish(to, reply.as_str().into()).await
                    {
                        tracing::warn!(error = %e, "cluster: a hand-over request was not answered");
                    }
                });
            }
        }))
    }

    /// Releases `request.session` to `request.to` (see the module docs).
    async fn release(&self, bus: &Bus, request: &Request) -> Reply {
        if let Some(hold) = &self.hold_arrivals {
            hold.notify_one();
        }
        let session = match bus.session(&request.session) {
            Some(session) => session,
            None => {
                // Not restored here: it may be arriving (an adoption under way here took the
                // row and restores it next), else it is a row given to this node whose re-open
                // never came (see the module docs: B giving up as A's release commits), which is
                // given on at once.
                let Ok(_quiet) = tokio::time::timeout(ARRIVAL_WAIT, self.arriving.lock()).await
                else {
                    return Reply::NotHere;
                };
                match bus.session(&request.session) {
                    // Arrived meanwhile: released as any.
                    Some(session) => session,
                    None => {
                        return match self.give_row(&request.session, &request.to, None).await {
                            Ok(true) => Reply::Released,
                            Ok(false) => Reply::NotHere,
                            Err(e) => {
                                tracing::warn!(error = %e, "cluster: a hand-over failed");
                                Reply::Failed
                            }
                        };
                    }
                }
            }
        };
        let draining = self.draining.lock().await;
        let Some(released) = bus.suspend_for_handover(&session).await else {
            return Reply::NotHere;
        };
        if !self.release_delay.is_zero() {
            tokio::time::sleep(self.release_delay).await;
        }
        let given = self
            .give_row(&request.session, &request.to, Some(&released))
            .await;
        drop(draining);
        match given {
            Ok(true) => {}
            // Not ours any more (taken over as if this node were gone): forget it, as the
            // heartbeat would.
            Ok(false) => {
                bus.forget_handed(&session).await;
                return Reply::NotHere;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cluster: a hand-over failed; the session stays here");
                bus.resume_after_handover(&session);
                return Reply::Failed;
            }
        }
        bus.forget_handed(&session).await;
        if released.was_attached {
            bus.publish_handed_over(&session).await;
        }
        Reply::Released
    }

    /// In one transaction, if the row of `session` is this node's: writes what `released`
    /// owes the runtime, and gives the row to `to`. False when the row is not this node's.
    async fn give_row(
        &self,
        session: &str,
        to: &str,
        released: Option<&Released>,
    ) -> Result<bool, sqlx::Error> {
        use crate::store::postgres::to_db;
        let mut tx = self.pool.begin().await?;
        let node: Option<Option<String>> =
            sqlx::query_scalar("SELECT node FROM sessions WHERE id = $1 FOR UPDATE")
                .bind(session)
                .fetch_optional(&mut *tx)
                .await?;
        if node.flatten().as_deref() != Some(&*self.node) {
            return Ok(false);
        }
        let (acked, cseq) = released.map_or((0, 0), |r| (r.acked, r.cseq));
        if let Some(r) = released {
            let seqs: Vec<i64> = r.outbox.iter().map(|(seq, _)| to_db(*seq)).collect();
            let jsons: Vec<&str> = r.outbox.iter().map(|(_, json)| &**json).collect();
            sqlx::query(
                "INSERT INTO outbox (session, seq, json) \
                 SELECT $1, v.seq, v.json FROM UNNEST($2::bigint[], $3::text[]) AS v (seq, json) \
                 WHERE v.seq > $4 \
                 ON CONFLICT (session, seq) DO UPDATE SET json = EXCLUDED.json",
            )
            .bind(session)
            .bind(&seqs)
            .bind(&jsons)
            .bind(to_db(acked))
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "WITH s AS (UPDATE sessions SET acked_seq = GREATEST(acked_seq, $2), \
                 cseq = GREATEST(cseq, $3), node = $4 WHERE id = $1 RETURNING acked_seq) \
             DELETE FROM outbox WHERE session = $1 AND seq <= (SELECT acked_seq FROM s)",
        )
        .bind(session)
        .bind(to_db(acked))
        .bind(to_db(cseq))
        .bind(to)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }
}
