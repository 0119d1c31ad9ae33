//! The test bodies, each taking the [`Place`] of a fresh store of one backend.

use std::sync::Arc;

use super::{PersistedSession, Place, SessionKey, StoreOp};
use rethink_stubs::KvOp;

fn key(id: &str) -> SessionKey {
    SessionKey::from(id)
}

fn create(id: &str) -> StoreOp {
    StoreOp::CreateSession {
        id: key(id),
        runtime_url: format!("hyperty-runtime://example.org/{id}"),
        token_hash: [7; 32],
        identity_json: r#"{"user":"alice"}"#.to_owned(),
    }
}

fn enqueue(id: &str, seq: u64) -> StoreOp {
    enqueue_json(id, seq, &format!(r#"{{"n":{seq}}}"#))
}

fn enqueue_json(id: &str, seq: u64, json: &str) -> StoreOp {
    StoreOp::Enqueue {
        session: key(id),
        seq,
        json: Arc::from(json),
        durable: None,
        urgent: false,
    }
}

fn ack(id: &str, seq: u64) -> StoreOp {
    StoreOp::Ack {
        session: key(id),
        seq,
    }
}

fn handled(id: &str, cseq: u64) -> StoreOp {
    StoreOp::Handled {
        session: key(id),
        cseq,
    }
}

fn add_addresses(id: &str, addresses: &[&str], allocation_key: Option<&str>) -> StoreOp {
    StoreOp::AddAddresses {
        session: key(id),
        addresses: strings(addresses),
        key: allocation_key.map(str::to_owned),
    }
}

fn add_subscriptions(id: &str, addresses: &[&str]) -> StoreOp {
    StoreOp::AddSubscriptions {
        session: key(id),
        addresses: strings(addresses),
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn seqs(session: &PersistedSession) -> Vec<u64> {
    session.outbox.iter().map(|(seq, _)| *seq).collect()
}

pub(super) async fn epoch_increments_across_reopen(place: Place) -> anyhow::Result<()> {
    let store = place.open().await?;
    assert_eq!(store.sessions().next_epoch().await?, 1);
    assert_eq!(store.sessions().next_epoch().await?, 2);
    store.close().await;

    let store = place.open().await?;
    assert_eq!(store.sessions().next_epoch().await?, 3);
    store.close().await;
    Ok(())
}

pub(super) async fn apply_and_load(place: Place) -> anyhow::Result<()> {
    let opened = place.open().await?;
    let store = opened.sessions();
    assert!(store.load_sessions().await?.is_empty());

    store
        .apply(&[
            create("s1"),
            add_addresses(
                "s1",
                &["hyperty://example.org/b", "hyperty://example.org/a"],
                Some("k1"),
            ),
            add_subscriptions("s1", &["comm://example.org/room/changes"]),
            enqueue("s1", 1),
            enqueue("s1", 2),
            enqueue("s1", 3),
            ack("s1", 1),
        ])
        .await?;

    let sessions = store.load_sessions().await?;
    assert_eq!(sessions.len(), 1);
    let s = &sessions[0];
    assert_eq!(&*s.id, "s1");
    assert_eq!(s.runtime_url, "hyperty-runtime://example.org/s1");
    assert_eq!(s.token_hash, [7; 32]);
    assert_eq!(s.identity_json, r#"{"user":"alice"}"#);
    assert_eq!(s.acked_seq, 1);
    assert_eq!(
        s.addresses,
        strings(&["hyperty://example.org/b", "hyperty://example.org/a"])
    );
    assert_eq!(
        s.allocation_keys
            .get("hyperty://example.org/a")
            .map(String::as_str),
        Some("k1")
    );
    assert_eq!(
        s.subscriptions,
        strings(&["comm://example.org/room/changes"])
    );
    assert_eq!(
        s.outbox,
        vec![(2, r#"{"n":2}"#.to_owned()), (3, r#"{"n":3}"#.to_owned())]
    );
    opened.close().await;
    Ok(())
}

pub(super) async fn remove_and_delete(place: Place) -> anyhow::Result<()> {
    let opened = place.open().await?;
    let store = opened.sessions();
    store
        .apply(&[
            create("s1"),
            create("s2"),
            add_addresses("s1", &["a1", "a2", "a3"], None),
            add_subscriptions("s1", &["t1", "t2"]),
            enqueue("s1", 1),
            enqueue("s2", 1),
        ])
        .await?;
    store
        .apply(&[
            StoreOp::RemoveAddresses {
                session: key("s1"),
                addresses: strings(&["a2", "unknown"]),
            },
            StoreOp::RemoveSubscriptions {
                session: key("s1"),
                addresses: strings(&["t1"]),
            },
            // Re-adding an address puts it last; adding a present one changes nothing.
            add_addresses("s1", &["a2", "a1"], None),
        ])
        .await?;
    let sessions = store.load_sessions().await?;
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions[0].addresses, strings(&["a1", "a3", "a2"]));
    assert_eq!(sessions[0].subscriptions, strings(&["t2"]));

    store
        .apply(&[
            StoreOp::DeleteSession { id: key("s1") },
            // Ops on a deleted session affect nothing and do not fail the batch.
            enqueue("s1", 2),
            ack("s1", 1),
            add_addresses("s1", &["a9"], None),
            add_subscriptions("s1", &["t9"]),
            enqueue("s2", 2),
        ])
        .await?;
    let sessions = store.load_sessions().await?;
    assert_eq!(sessions.len(), 1);
    assert_eq!(&*sessions[0].id, "s2");
    assert_eq!(seqs(&sessions[0]), vec![1, 2]);
    for table in ["outbox", "session_addresses", "session_subscriptions"] {
        let left = opened.rows_of(table, "s1").await?;
        assert_eq!(left, 0, "rows of the deleted session left in {table}");
    }

    // A session can be created again after its deletion, in the same batch.
    store
        .apply(&[
            StoreOp::DeleteSession { id: key("s2") },
            create("s2"),
            enqueue("s2", 5),
        ])
        .await?;
    let sessions = store.load_sessions().await?;
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].acked_seq, 0);
    assert_eq!(seqs(&sessions[0]), vec![5]);
    opened.close().await;
    Ok(())
}

pub(super) async fn data_survives_reopen(place: Place) -> anyhow::Result<()> {
    let opened = place.open().await?;
    let mut batch = vec![create("s1")];
    // More than one chunk of SQLite's multi-row inserts (a mixed batch).
    batch.extend((1..=100).map(|seq| enqueue("s1", seq)));
    opened.sessions().apply(&batch).await?;
    // A batch of the hot path's ops only, larger than SQLite commits in place.
    let mut batch: Vec<StoreOp> = (101..=200).map(|seq| enqueue("s1", seq)).collect();
    batch.push(ack("s1", 150));
    batch.push(enqueue("s1", 100)); // already acknowledged: not written
    batch.push(enqueue("s1", 201));
    opened.sessions().apply(&batch).await?;
    opened.close().await;

    let opened = place.open().await?;
    let sessions = opened.sessions().load_sessions().await?;
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].acked_seq, 150);
    assert_eq!(seqs(&sessions[0]), (151..=201).collect::<Vec<_>>());
    assert_eq!(opened.rows_of("outbox", "s1").await?, 51);
    opened.close().await;
    Ok(())
}

/// One batch with every kind of op, interleaved, repeated and on sessions created, deleted and
/// created again within it: the result is that of applying the ops one by one.
pub(super) async fn batch_with_everything_interleaved(place: Place) -> anyhow::Result<()> {
    let opened = place.open().await?;
    let store = opened.sessions();
    store.apply(&[create("old"), enqueue("old", 1)]).await?;
    store
        .apply(&[
            create("s1"),
            enqueue("s1", 1),
            enqueue_json("s1", 2, r#"{"first":2}"#),
            ack("s1", 1),
            enqueue_json("s1", 2, r#"{"last":2}"#),
            add_addresses("s1", &["a", "b"], Some("k")),
            // `b` is present: it keeps its place and its key.
            add_addresses("s1", &["b", "c"], None),
            add_subscriptions("s1", &["t2", "t1", "t2"]),
            StoreOp::DeleteSession { id: key("s2") }, // not there: nothing to do
            create("s2"),
            enqueue("s2", 5),
            ack("s2", 3),
            enqueue("s2", 4), // above the ack before it, below none after it: kept
            ack("s2", 2),     // lower than an earlier ack: the ack stays 3
            create("s3"),
            enqueue("s3", 1),
            add_addresses("s3", &["x"], None),
            StoreOp::DeleteSession { id: key("s3") },
            enqueue("s3", 2), // deleted: not written
            ack("old", 1),
            enqueue("old", 2),
            StoreOp::DeleteSession { id: key("old") },
            create("old"), // created again: a fresh session
            enqueue("old", 7),
            handled("s1", 9),
            StoreOp::Group(vec![enqueue("s2", 6), handled("s2", 4), handled("s2", 3)]),
            handled("s3", 5), // deleted: nothing to do
        ])
        .await?;
    let sessions = store.load_sessions().await?;
    let ids: Vec<&str> = sessions.iter().map(|s| &*s.id).collect();
    assert_eq!(ids, ["old", "s1", "s2"]);
    let (old, s1, s2) = (&sessions[0], &sessions[1], &sessions[2]);
    assert_eq!((old.acked_seq, seqs(old)), (0, vec![7]));
    assert_eq!(s1.acked_seq, 1);
    assert_eq!(s1.outbox, vec![(2, r#"{"last":2}"#.to_owned())]);
    assert_eq!(s1.addresses, strings(&["a", "b", "c"]));
    assert_eq!(s1.allocation_keys.get("b").map(String::as_str), Some("k"));
    assert_eq!(s1.allocation_keys.get("c"), None);
    assert_eq!(s1.subscriptions, strings(&["t2", "t1"]));
    assert_eq!((s2.acked_seq, seqs(s2)), (3, vec![4, 5, 6]));
    // The highest `cseq` handled stays the highest.
    assert_eq!((old.cseq, s1.cseq, s2.cseq), (0, 9, 4));
    for table in ["outbox", "session_addresses"] {
        assert_eq!(opened.rows_of(table, "s3").await?, 0, "{table}");
    }
    // One run of entries and acks of two sessions (the bus's hot path, a few statements).
    store
        .apply(&[
            enqueue("s1", 3),
            enqueue("s2", 7),
            ack("s1", 2),
            ack("s2", 5),
            ack("s1", 1),
            enqueue("s2", 8),
            enqueue("s2", 4), // at or below the ack: not written
        ])
        .await?;
    let sessions = store.load_sessions().await?;
    let (s1, s2) = (&sessions[1], &sessions[2]);
    assert_eq!((s1.acked_seq, seqs(s1)), (2, vec![3]));
    assert_eq!((s2.acked_seq, seqs(s2)), (5, vec![6, 7, 8]));
    // The acknowledged entries are gone from the table, not only from what is loaded.
    assert_eq!(opened.rows_of("outbox", "s1").await?, 1);
    assert_eq!(opened.rows_of("outbox", "s2").await?, 3);
    opened.close().await;
    Ok(())
}

pub(super) async fn kv_get_set_delete_and_namespaces(place: Place) -> anyhow::Result<()> {
    let opened = place.open().await?;
    let kv = opened.kv();
    assert_eq!(kv.get("a", "k").await.unwrap(), None);
    kv.set("a", "k", b"one".to_vec(), 1024).await?;
    kv.set("b", "k", b"other".to_vec(), 1024).await?;
    assert_eq!(
        kv.get("a", "k").await.unwrap().as_deref(),
        Some(&b"one"[..])
    );
    kv.set("a", "k", b"two".to_vec(), 1024).await?;
    assert_eq!(
        kv.get("a", "k").await.unwrap().as_deref(),
        Some(&b"two"[..])
    );
    kv.delete("a", "k").await.unwrap();
    kv.delete("a", "never-set").await.unwrap();
    assert_eq!(kv.get("a", "k").await.unwrap(), None);
    assert_eq!(
        kv.get("b", "k").await.unwrap().as_deref(),
        Some(&b"other"[..])
    );
    opened.close().await;
    Ok(())
}

pub(super) async fn kv_keys_in_byte_order_with_prefix_and_limit(
    place: Place,
) -> anyhow::Result<()> {
    let opened = place.open().await?;
    let kv = opened.kv();
    for key in ["b", "a/2", "ab", "A", "a", "a/1", "é"] {
        kv.set("s", key, vec![1], 1024).await?;
    }
    kv.set("other", "a/3", vec![1], 1024).await?;
    assert_eq!(
        kv.keys("s", "", 100).await.unwrap(),
        ["A", "a", "a/1", "a/2", "ab", "b", "é"]
    );
    assert_eq!(
        kv.keys("s", "a", 100).await.unwrap(),
        ["a", "a/1", "a/2", "ab"]
    );
    assert_eq!(kv.keys("s", "a/", 1).await.unwrap(), ["a/1"]);
    assert!(kv.keys("s", "z", 100).await.unwrap().is_empty());
    assert!(kv.keys("nobody", "", 100).await.unwrap().is_empty());
    opened.close().await;
    Ok(())
}

/// The quota counts the bytes of keys and values of the stub's other keys plus the new pair (a
/// replaced value is not counted twice); a key of non-ASCII text counts its bytes.
pub(super) async fn kv_quota_counts_bytes_of_the_other_keys(place: Place) -> anyhow::Result<()> {
    let opened = place.open().await?;
    let kv = opened.kv();
    kv.set("s", "k1", vec![0; 8], 20).await?; // 10 bytes
    kv.set("s", "k2", vec![0; 8], 20).await?; // 20
    let refused = kv.set("s", "k3", vec![0], 20).await;
    assert_eq!(refused.map_err(|f| f.code), Err(413));
    kv.set("s", "k2", vec![1; 8], 20).await?; // a replacement: still 20
    kv.set("t", "k3", vec![0; 8], 20).await?; // another stub's space
    kv.delete("s", "k2").await.unwrap();
    kv.set("s", "é", vec![0; 8], 20).await?; // 10 + 2 + 8 = 20
    let refused = kv.set("s", "é", vec![0; 9], 20).await;
    assert_eq!(refused.map_err(|f| f.code), Err(413));
    assert_eq!(kv.get("s", "é").await.unwrap(), Some(vec![0; 8]));
    assert_eq!(kv.get("s", "k3").await.unwrap(), None);
    // Now the non-ASCII key is one of the others: its 2 bytes count (not its 1 character).
    kv.delete("s", "k1").await.unwrap();
    kv.set("s", "k4", vec![0; 8], 20).await?; // 10 + 2 + 8 = 20
    let refused = kv.set("s", "k4", vec![0; 9], 20).await;
    assert_eq!(refused.map_err(|f| f.code), Err(413));
    opened.close().await;
    Ok(())
}

pub(super) async fn kv_survives_reopen(place: Place) -> anyhow::Result<()> {
    let opened = place.open().await?;
    opened.kv().set("s", "k", b"kept".to_vec(), 1024).await?;
    opened.close().await;
    let opened = place.open().await?;
    assert_eq!(opened.kv().get("s", "k").await?, Some(b"kept".to_vec()));
    opened.close().await;
    Ok(())
}

/// A store that cannot answer (its pools closed: every query fails, as with the database
/// gone) says so with 503: a failed read is not "absent", a failed delete not "done".
pub(super) async fn kv_says_when_the_store_cannot_answer(place: Place) -> anyhow::Result<()> {
    let opened = place.open().await?;
    let kv = opened.kv();
    kv.set("s", "k", b"v".to_vec(), 1024).await?;
    assert_eq!(kv.get("s", "k").await?, Some(b"v".to_vec()));
    opened.close().await;
    assert_eq!(kv.get("s", "k").await.map_err(|f| f.code), Err(503));
    assert_eq!(kv.keys("s", "", 10).await.map_err(|f| f.code), Err(503));
    assert_eq!(kv.delete("s", "k").await.map_err(|f| f.code), Err(503));
    Ok(())
}

/// Concurrent writes of one stub, each within the quota alone but not all together: what is
/// stored stays within the quota (a write may be refused, 413, or fail, never overflow it).
pub(super) async fn kv_quota_holds_under_concurrent_writes(place: Place) -> anyhow::Result<()> {
    let opened = place.open().await?;
    let kv = opened.kv();
    // 16 writes of 10 bytes (2-byte key, 8-byte value) against a quota of 40.
    let writes = (0..16).map(|i| {
        let kv = Arc::clone(&kv);
        async move { kv.set("s", &format!("{i:02}"), vec![0; 8], 40).await }
    });
    let results = futures_util::future::join_all(writes).await;
    let stored = kv.keys("s", "", 100).await.unwrap();
    assert!(
        stored.len() <= 4,
        "{} keys stored: {stored:?}",
        stored.len()
    );
    let accepted = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(accepted, stored.len(), "every accepted write is stored");
    for refused in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(matches!(refused.code, 413 | 503), "{refused:?}");
    }
    opened.close().await;
    Ok(())
}

/// A batch (`KvStore::apply`, the stubs' write-behind) applies its writes in order as one
/// transaction, counts replaced and deleted values off the total it returns, and over the quota
/// applies none of them.
pub(super) async fn kv_batch_is_all_or_nothing_within_the_quota(
    place: Place,
) -> anyhow::Result<()> {
    let opened = place.open().await?;
    let kv = opened.kv();
    let set = |k: &str, n: usize| KvOp::Set {
        key: k.into(),
        value: vec![0; n],
    };
    let del = |k: &str| KvOp::Delete { key: k.into() };
    assert_eq!(kv.apply("s", &[], 40).await?, 0, "nothing stored yet");
    kv.set("s", "k1", vec![0; 8], 40).await?; // 10 bytes
    // k1 replaced (10 -> 6), k2 added (10), k3 added then deleted: 16.
    let total = kv
        .apply(
            "s",
            &[set("k1", 4), set("k2", 8), set("k3", 8), del("k3")],
            40,
        )
        .await?;
    assert_eq!(total, 16);
    assert_eq!(kv.apply("s", &[], 40).await?, 16);
    assert_eq!(kv.get("s", "k1").await.unwrap(), Some(vec![0; 4]));
    assert_eq!(kv.keys("s", "", 10).await.unwrap(), ["k1", "k2"]);
    // 16 - 10 (k2) + 30 (k4) = 36, then + 10 (k5) = 46 > 40: none of it is applied.
    let refused = kv
        .apply("s", &[del("k2"), set("k4", 28), set("k5", 8)], 40)
        .await;
    assert_eq!(refused.map_err(|f| f.code), Err(413));
    assert_eq!(kv.keys("s", "", 10).await.unwrap(), ["k1", "k2"]);
    assert_eq!(kv.apply("s", &[], 40).await?, 16);
    // The single writes see the batch's total.
    kv.set("s", "k6", vec![0; 22], 40).await?; // 16 + 24 = 40
    let refused = kv.set("s", "k7", vec![0], 40).await;
    assert_eq!(refused.map_err(|f| f.code), Err(413));
    // More keys than one statement takes (`KV_CHUNK`), a key written twice and one written then
    // deleted within the batch: the last write of each key counts.
    let many: Vec<KvOp> = (0..150)
        .map(|i| set(&format!("m{i:03}"), 8))
        .chain([set("m000", 1), del("m001"), set("k1", 6)])
        .collect();
    // 40 - 6 (k1 was 4 + 2) + 8 (k1 now) + 148 x 12 (m002..m149) + 5 (m000) = 1823.
    assert_eq!(kv.apply("s", &many, 4096).await?, 1823);
    assert_eq!(kv.apply("s", &[], 4096).await?, 1823);
    assert_eq!(kv.get("s", "m000").await.unwrap(), Some(vec![0; 1]));
    assert_eq!(kv.get("s", "m001").await.unwrap(), None);
    assert_eq!(kv.keys("s", "m", 200).await.unwrap().len(), 149);
    opened.close().await;
    Ok(())
}
