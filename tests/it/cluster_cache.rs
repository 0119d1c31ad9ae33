//! The lookup cache of a cluster's nodes (`node/src/cluster/book.rs`): an answer kept on one
//! node never hides what another node's runtime was just told it holds, and an answer naming
//! a holder that released the address is corrected before anything is delivered to it.

use std::time::Duration;

use serde_json::json;

use crate::cluster::{cluster, metric, open};
use crate::support::client::RECV_TIMEOUT;
use crate::support::{DOMAIN, Rt, allocation_endpoint};

#[tokio::test]
async fn what_a_node_just_gave_its_runtime_is_reachable_from_another_node_at_once() {
    let c = cluster(2).await;
    let (n1, n2) = (&c.nodes[0], &c.nodes[1]);
    let mut alice = open(n1, "rt-alice").await;
    let object = alice.allocate(1).await.remove(0);
    let changes = format!("{object}/changes");

    // Node 1 asks about `changes` (nobody on node 2 holds it) and may keep that answer; the
    // update goes to the object's owner, Alice herself.
    alice
        .send(&json!({"id": 0, "type": "update", "from": object, "to": changes, "body": {"n": 0}}))
        .await;
    assert_eq!(alice.recv().await["id"], 0);
    // Bob subscribes on node 2; once he is told so, node 1 publishes to him.
    let mut bob = open(n2, "rt-bob").await;
    bob.subscribe(&[&changes]).await;
    alice
        .send(&json!({"id": 1, "type": "update", "from": object, "to": changes, "body": {"n": 1}}))
        .await;
    let got = bob.recv().await;
    assert_eq!(
        (got["id"].as_i64(), got["from"].as_str()),
        (Some(1), Some(&*object))
    );

    // A runtime URL nobody holds, asked about from node 1, then opened on node 2.
    let carol_inbox = format!("hyperty-runtime://{DOMAIN}/rt-carol/inbox");
    let resp = alice
        .request(json!({"type": "PING", "from": object, "to": carol_inbox}))
        .await;
    assert_eq!(resp["body"]["code"], 404, "{resp}");
    let mut carol = open(n2, "rt-carol").await;
    alice
        .send(&json!({"id": 2, "type": "PING", "from": object, "to": carol_inbox}))
        .await;
    assert_eq!(carol.recv().await["id"], 2);

    assert!(
        metric(n1, "rethink_cluster_lookups_total{kind=\"database\"} ").await >= 2.0,
        "the negative answers were asked of the database"
    );
}

#[tokio::test]
async fn an_answer_naming_a_holder_that_released_the_address_is_corrected() {
    let c = cluster(2).await;
    let (n1, n2) = (&c.nodes[0], &c.nodes[1]);
    let mut alice = open(n1, "rt-alice").await;
    let mut bob: Rt = open(n2, "rt-bob").await;
    let a = alice.allocate(1).await.remove(0);
    let b = bob.allocate(1).await.remove(0);

    // Node 1 finds Bob's address in the database and keeps the answer.
    for id in 0..2 {
        alice
            .send(&json!({"id": id, "type": "PING", "from": a, "to": b}))
            .await;
        assert_eq!(bob.recv().await["id"], id);
    }
    assert!(metric(n1, "rethink_cluster_lookups_total{kind=\"cache\"} ").await >= 1.0);
    // Bob releases it (which node 1 is not told): the kept answer is stale.
    let from = format!("{}/registry/allocation", bob.url);
    let del = bob
        .request(
            json!({"type": "delete", "from": from, "to": allocation_endpoint(),
            "body": {"childrenResources": [b]}}),
        )
        .await;
    assert_eq!(del["body"]["code"], 200, "{del}");
    // Node 2's store writer commits the release in its own time (a release is not waited
    // for, with or without the cache).
    released(&c.db, &b).await;
    let resp = alice
        .request(json!({"type": "PING", "from": a, "to": b}))
        .await;
    assert_eq!(resp["body"]["code"], 404, "{resp}");
    bob.expect_nothing_queued().await;
    assert_eq!(
        metric(n1, "rethink_cluster_stale_targets_total ").await,
        1.0
    );
}

/// Waits until the shared database has `address` released.
async fn released(db: &str, address: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(db).await.unwrap();
    let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
    loop {
        let held: i64 =
            sqlx::query_scalar("SELECT count(*) FROM session_addresses WHERE address = $1")
                .bind(address)
                .fetch_one(&mut conn)
                .await
                .unwrap();
        if held == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{address} never released"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
