//! Applies a writer batch in a few statements: each run of consecutive ops of one kind becomes
//! one statement over arrays (`UNNEST`), whatever its length.
//!
//! A run of `Enqueue` and `Ack` ops (the bus's hot path) is applied as two statements: the acks
//! (each session's highest), then the entries above the sessions' acknowledged seq. That gives
//! what applying them one by one gives: an entry survives when its seq is above the session's
//! final acknowledged seq, whatever the order of the entry and the ack in the run. Duplicates
//! within a run are resolved as one-by-one application would (the last entry for a seq wins;
//! the first allocation of an address or subscription keeps its place).
//!
//! The acks delete the outbox entries between each session's previous and new acknowledged seq
//! only (no entry at or below the acknowledged seq is ever written): the range below holds the
//! dead rows of every earlier ack until a vacuum, and a `seq <= ack` scan visited them all
//! again at every ack (measured: 3.6 ms per ack statement at 2,000 msg/s, 33 ms at 10,000).

use std::collections::{HashMap, HashSet};

use sqlx::PgConnection;

use super::to_db;
use crate::store::StoreOp;

/// Ops that one statement applies as a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `Enqueue` and `Ack`.
    Flow,
    Create,
    Delete,
    AddAddresses,
    RemoveAddresses,
    AddSubscriptions,
    RemoveSubscriptions,
    Handled,
    /// A `Group` (the writer flattens them; applied op by op otherwise).
    Group,
    /// `Flush`: nothing to write.
    Nothing,
}

impl Kind {
    fn of(op: &StoreOp) -> Kind {
        match op {
            StoreOp::Enqueue { .. } | StoreOp::Ack { .. } => Kind::Flow,
            StoreOp::CreateSession { .. } => Kind::Create,
            StoreOp::DeleteSession { .. } => Kind::Delete,
            StoreOp::AddAddresses { .. } => Kind::AddAddresses,
            StoreOp::RemoveAddresses { .. } => Kind::RemoveAddresses,
            StoreOp::AddSubscriptions { .. } => Kind::AddSubscriptions,
            StoreOp::RemoveSubscriptions { .. } => Kind::RemoveSubscriptions,
            StoreOp::Handled { .. } => Kind::Handled,
            StoreOp::Group(_) => Kind::Group,
            StoreOp::Flush { .. } => Kind::Nothing,
        }
    }
}

/// Applies `batch` on `conn` (inside the caller's transaction), in order.
/// `node`: the cluster node id written as each created session's holder (`None`: no cluster).
pub(super) async fn apply(
    conn: &mut PgConnection,
    batch: &[StoreOp],
    node: Option<&str>,
) -> Result<(), sqlx::Error> {
    for run in batch.chunk_by(|a, b| Kind::of(a) == Kind::of(b)) {
        let Some(first) = run.first() else { continue };
        match Kind::of(first) {
            Kind::Flow => flow(conn, run).await?,
            Kind::Create => create(conn, run, node).await?,
            Kind::Delete => delete(conn, run).await?,
            Kind::AddAddresses => add_addresses(conn, run).await?,
            Kind::AddSubscriptions => add_subscriptions(conn, run).await?,
            Kind::RemoveAddresses | Kind::RemoveSubscriptions => remove(conn, run).await?,
            Kind::Handled => handled(conn, run).await?,
            Kind::Group => {
                for op in run {
                    if let StoreOp::Group(ops) = op {
                        Box::pin(apply(conn, ops, node)).await?;
                    }
                }
            }
            Kind::Nothing => {}
        }
    }
    Ok(())
}

/// How many statements [`apply`] runs for `batch` (one or none: the store applies it without
/// `BEGIN` and `COMMIT`).
pub(super) fn statements(batch: &[StoreOp]) -> usize {
    batch
        .chunk_by(|a, b| Kind::of(a) == Kind::of(b))
        .map(|run| match run.first().map(Kind::of) {
            None | Some(Kind::Nothing) => 0,
            Some(Kind::Flow) => {
                let acks = run.iter().any(|op| matches!(op, StoreOp::Ack { .. }));
                let entries = run.iter().any(|op| matches!(op, StoreOp::Enqueue { .. }));
                usize::from(acks) + usize::from(entries)
            }
            Some(Kind::Group) => run
                .iter()
                .map(|op| match op {
                    StoreOp::Group(ops) => statements(ops),
                    _ => 0,
                })
                .sum(),
            Some(_) => 1,
        })
        .sum()
}

/// Acks, then outbox entries (see the module documentation).
async fn flow(conn: &mut PgConnection, run: &[StoreOp]) -> Result<(), sqlx::Error> {
    let mut acked: HashMap<&str, u64> = HashMap::new();
    let mut entries: HashMap<(&str, u64), &str> = HashMap::new();
    for op in run {
        match op {
            StoreOp::Ack { session, seq } => {
                let high = acked.entry(&**session).or_insert(*seq);
                *high = (*high).max(*seq);
            }
            StoreOp::Enqueue {
                session, seq, json, ..
            } => {
                entries.insert((&**session, *seq), &**json);
            }
            _ => {}
        }
    }
    if !acked.is_empty() {
        let (sessions, seqs): (Vec<&str>, Vec<i64>) =
            acked.into_iter().map(|(s, seq)| (s, to_db(seq))).unzip();
        sqlx::query(
            "WITH v AS (SELECT * FROM UNNEST($1::text[], $2::bigint[]) AS v (session, seq)), \
             old AS (SELECT s.id, s.acked_seq FROM sessions AS s WHERE s.id = ANY($1::text[])), \
             acked AS (UPDATE sessions AS s SET acked_seq = GREATEST(s.acked_seq, v.seq) \
                 FROM v WHERE s.id = v.session) \
             DELETE FROM outbox AS o USING v JOIN old ON old.id = v.session \
             WHERE o.session = v.session AND o.seq > old.acked_seq AND o.seq <= v.seq",
        )
        .bind(sessions)
        .bind(seqs)
        .execute(&mut *conn)
        .await?;
    }
    if !entries.is_empty() {
        let mut sessions = Vec::with_capacity(entries.len());
        let mut seqs = Vec::with_capacity(entries.len());
        let mut jsons = Vec::with_capacity(entries.len());
        for ((session, seq), json) in entries {
            sessions.push(session);
            seqs.push(to_db(seq));
            jsons.push(json);
        }
        // Entries of sessions that do not exist (deleted) or already acknowledged are skipped.
        sqlx::query(
            "INSERT INTO outbox (session, seq, json) \
             SELECT v.session, v.seq, v.json \
             FROM UNNEST($1::text[], $2::bigint[], $3::text[]) AS v (session, seq, json) \
             JOIN sessions AS s ON s.id = v.session WHERE v.seq > s.acked_seq \
             ON CONFLICT (session, seq) DO UPDATE SET json = EXCLUDED.json",
        )
        .bind(sessions)
        .bind(seqs)
        .bind(jsons)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Creates sessions, or replaces the fields of existing ones (their acked seq stays).
async fn create(
    conn: &mut PgConnection,
    run: &[StoreOp],
    node: Option<&str>,
) -> Result<(), sqlx::Error> {
    // The last creation of an id wins, as one by one.
    let mut latest: HashMap<&str, (&str, &[u8], &str)> = HashMap::new();
    for op in run {
        if let StoreOp::CreateSession {
            id,
            runtime_url,
            token_hash,
            identity_json,
        } = op
        {
            latest.insert(&**id, (runtime_url, &token_hash[..], identity_json));
        }
    }
    let mut ids = Vec::with_capacity(latest.len());
    let mut urls = Vec::with_capacity(latest.len());
    let mut hashes = Vec::with_capacity(latest.len());
    let mut identities = Vec::with_capacity(latest.len());
    for (id, (url, hash, identity)) in latest {
        ids.push(id);
        urls.push(url);
        hashes.push(hash);
        identities.push(identity);
    }
    sqlx::query(
        "INSERT INTO sessions (id, runtime_url, token_hash, identity_json, node) \
         SELECT v.*, $5 FROM UNNEST($1::text[], $2::text[], $3::bytea[], $4::text[]) AS v \
         ON CONFLICT (id) DO UPDATE SET runtime_url = EXCLUDED.runtime_url, \
         token_hash = EXCLUDED.token_hash, identity_json = EXCLUDED.identity_json",
    )
    .bind(ids)
    .bind(urls)
    .bind(hashes)
    .bind(identities)
    .bind(node)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Deletes sessions with their outboxes (the address and subscription rows cascade).
async fn delete(conn: &mut PgConnection, run: &[StoreOp]) -> Result<(), sqlx::Error> {
    let ids: Vec<&str> = run
        .iter()
        .filter_map(|op| match op {
            StoreOp::DeleteSession { id } => Some(&**id),
            _ => None,
        })
        .collect();
    sqlx::query(
        "WITH gone AS (DELETE FROM sessions WHERE id = ANY($1::text[])) \
         DELETE FROM outbox WHERE session = ANY($1::text[])",
    )
    .bind(ids)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// `(session, address)` pairs of a run, each pair once (its first occurrence), in run order,
/// with the `allocationKey` of that occurrence.
fn pairs(run: &[StoreOp]) -> Vec<(&str, &str, Option<&str>)> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for op in run {
        let (session, addresses, key) = match op {
            StoreOp::AddAddresses {
                session,
                addresses,
                key,
            } => (session, addresses, key.as_deref()),
            StoreOp::RemoveAddresses { session, addresses }
            | StoreOp::AddSubscriptions { session, addresses }
            | StoreOp::RemoveSubscriptions { session, addresses } => (session, addresses, None),
            _ => continue,
        };
        for address in addresses {
            if seen.insert((&**session, address.as_str())) {
                out.push((&**session, address.as_str(), key));
            }
        }
    }
    out
}

/// Allocates addresses, after the session's existing ones; a present address keeps its place.
async fn add_addresses(conn: &mut PgConnection, run: &[StoreOp]) -> Result<(), sqlx::Error> {
    let pairs = pairs(run);
    let (mut sessions, mut addresses, mut keys, mut ords) = (vec![], vec![], vec![], vec![]);
    for (n, (session, address, key)) in (1i64..).zip(pairs) {
        sessions.push(session);
        addresses.push(address);
        keys.push(key);
        ords.push(n);
    }
    // Each new row goes after the session's highest `ord` before the statement, in run order.
    sqlx::query(
        "INSERT INTO session_addresses (session, address, ord, alloc_key) \
         SELECT v.session, v.address, \
         COALESCE((SELECT MAX(a.ord) FROM session_addresses AS a WHERE a.session = v.session), 0) \
         + v.n, v.alloc_key \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[]) \
         AS v (session, address, alloc_key, n) \
         WHERE EXISTS (SELECT 1 FROM sessions AS s WHERE s.id = v.session) \
         ON CONFLICT (session, address) DO NOTHING",
    )
    .bind(sessions)
    .bind(addresses)
    .bind(keys)
    .bind(ords)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Adds subscriptions, after the session's existing ones; a present one keeps its place.
async fn add_subscriptions(conn: &mut PgConnection, run: &[StoreOp]) -> Result<(), sqlx::Error> {
    let (mut sessions, mut addresses, mut ords) = (vec![], vec![], vec![]);
    for (n, (session, address, _)) in (1i64..).zip(pairs(run)) {
        sessions.push(session);
        addresses.push(address);
        ords.push(n);
    }
    sqlx::query(
        "INSERT INTO session_subscriptions (session, address, ord) \
         SELECT v.session, v.address, \
         COALESCE((SELECT MAX(b.ord) FROM session_subscriptions AS b \
         WHERE b.session = v.session), 0) + v.n \
         FROM UNNEST($1::text[], $2::text[], $3::bigint[]) AS v (session, address, n) \
         WHERE EXISTS (SELECT 1 FROM sessions AS s WHERE s.id = v.session) \
         ON CONFLICT (session, address) DO NOTHING",
    )
    .bind(sessions)
    .bind(addresses)
    .bind(ords)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Releases addresses or removes subscriptions (the run is of one of the two kinds).
async fn remove(conn: &mut PgConnection, run: &[StoreOp]) -> Result<(), sqlx::Error> {
    let sql = match run.first() {
        Some(StoreOp::RemoveAddresses { .. }) => {
            "DELETE FROM session_addresses AS t \
             USING UNNEST($1::text[], $2::text[]) AS v (session, address) \
             WHERE t.session = v.session AND t.address = v.address"
        }
        Some(StoreOp::RemoveSubscriptions { .. }) => {
            "DELETE FROM session_subscriptions AS t \
             USING UNNEST($1::text[], $2::text[]) AS v (session, address) \
             WHERE t.session = v.session AND t.address = v.address"
        }
        _ => return Ok(()),
    };
    let (sessions, addresses): (Vec<&str>, Vec<&str>) =
        pairs(run).into_iter().map(|(s, a, _)| (s, a)).unzip();
    sqlx::query(sql)
        .bind(sessions)
        .bind(addresses)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Raises sessions' highest handled `cseq` (each session's highest of the run).
async fn handled(conn: &mut PgConnection, run: &[StoreOp]) -> Result<(), sqlx::Error> {
    let mut highest: HashMap<&str, u64> = HashMap::new();
    for op in run {
        if let StoreOp::Handled { session, cseq } = op {
            let h = highest.entry(&**session).or_default();
            *h = (*h).max(*cseq);
        }
    }
    let (sessions, cseqs): (Vec<&str>, Vec<i64>) =
        highest.into_iter().map(|(s, c)| (s, to_db(c))).unzip();
    sqlx::query(
        "UPDATE sessions AS s SET cseq = GREATEST(s.cseq, v.cseq) \
         FROM UNNEST($1::text[], $2::bigint[]) AS v (session, cseq) WHERE s.id = v.session",
    )
    .bind(sessions)
    .bind(cseqs)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::statements;
    use crate::store::StoreOp;

    fn ack(seq: u64) -> StoreOp {
        StoreOp::Ack {
            session: Arc::from("s"),
            seq,
        }
    }

    fn enqueue(seq: u64) -> StoreOp {
        StoreOp::Enqueue {
            session: Arc::from("s"),
            seq,
            json: Arc::from("{}"),
            durable: None,
            urgent: false,
        }
    }

    /// A batch runs without `BEGIN`/`COMMIT` only when it is one statement: every batch of
    /// more is counted as more, so it keeps its transaction (all or nothing).
    #[test]
    fn statements_counts_what_apply_runs() {
        assert_eq!(statements(&[ack(1), ack(2)]), 1, "acks: one statement");
        assert_eq!(statements(&[enqueue(1), enqueue(2)]), 1, "entries: one");
        assert_eq!(statements(&[enqueue(1), ack(1)]), 2, "acks, then entries");
        assert_eq!(
            statements(&[
                ack(1),
                StoreOp::Handled {
                    session: Arc::from("s"),
                    cseq: 1
                }
            ]),
            2
        );
        assert_eq!(
            statements(&[StoreOp::Group(vec![enqueue(3), ack(2)])]),
            2,
            "a group counts its own statements"
        );
        let (done, _rx) = tokio::sync::oneshot::channel();
        assert_eq!(statements(&[StoreOp::Flush { done }]), 0);
        assert_eq!(
            statements(&[StoreOp::DeleteSession { id: Arc::from("s") }, ack(1)]),
            2
        );
    }
}
