//! The archive connector (`[connectors.archive]`, the component of `stubs/guests/archive` run
//! by the node): it logs what runtimes send into its namespace and what is published on the
//! addresses it follows, answers history queries, bounds each log, and keeps it across a node
//! restart.

use std::collections::BTreeMap;

use rethink_node::Config;
use rethink_node::config::{RawConfig, RawConnector};
use serde_json::{Value, json};

use crate::support::{DOMAIN, Rt, TestNode};

fn archive() -> String {
    format!("domain://archive.{DOMAIN}")
}

/// `[connectors.archive]` keeping 3 entries per address.
fn with_archive(c: &mut Config) {
    let connector = RawConnector {
        config: BTreeMap::from([("max_per_resource".to_owned(), "3".to_owned())]),
        ..RawConnector::default()
    };
    let raw = RawConfig {
        domain: DOMAIN.into(),
        listen: "127.0.0.1:0".into(),
        data_dir: c.data_dir.clone(),
        connectors: BTreeMap::from([("archive".to_owned(), connector)]),
        ..RawConfig::default()
    };
    c.stubs = raw.validate().expect("valid connectors").stubs;
}

/// `rt` asks the archive `kind` with `body`; returns the answer's body.
async fn ask(rt: &mut Rt, from: &str, kind: &str, body: Value) -> Value {
    let r = rt
        .request(json!({"type": kind, "from": from, "to": archive(), "body": body}))
        .await;
    assert_eq!(r["from"], archive(), "{r}");
    r["body"].clone()
}

fn texts(history: &Value) -> Vec<Value> {
    history["value"]
        .as_array()
        .unwrap_or_else(|| panic!("a history: {history}"))
        .iter()
        .map(|e| e["body"]["text"].clone())
        .collect()
}

#[tokio::test]
async fn the_archive_logs_its_namespace_and_followed_addresses() {
    let node = TestNode::spawn_with(with_archive).await;
    let mut alice = Rt::open(&node, "alice").await;
    let mut bob = Rt::open(&node, "bob").await;
    let h = alice.allocate(1).await.remove(0);
    let reader = bob.allocate(1).await.remove(0);
    let chat = format!("{}/log/chat", archive());

    // Posted into its namespace: logged and answered; four posts, three kept.
    for text in ["one", "two", "three", "four"] {
        let posted = alice
            .request(json!({"type": "create", "from": h, "to": chat, "body": {"text": text}}))
            .await;
        assert_eq!(posted["body"]["code"], 200, "{posted}");
    }
    let history = ask(&mut bob, &reader, "read", json!({"resource": chat})).await;
    assert_eq!(history["code"], 200, "{history}");
    assert_eq!(texts(&history), ["two", "three", "four"]);
    let entry = &history["value"][2];
    assert_eq!(
        (&entry["type"], &entry["from"]),
        (&json!("create"), &json!(h))
    );
    let last = ask(
        &mut bob,
        &reader,
        "read",
        json!({"resource": chat, "limit": 1}),
    )
    .await;
    assert_eq!(texts(&last), ["four"]);

    // Followed: what is published on <h>/feed is logged, though not sent to the archive.
    let feed = format!("{h}/feed");
    let followed = ask(&mut alice, &h, "subscribe", json!({"resources": [feed]})).await;
    assert_eq!(followed["code"], 200, "{followed}");
    alice
        .send(&json!({"id": 90, "type": "update", "from": h, "to": feed, "body": {"text": "news"}}))
        .await;
    // Once alice's frames before the marker are routed, the update is in the archive's queue.
    alice.expect_nothing_queued().await;
    let news = ask(&mut bob, &reader, "read", json!({"resource": feed})).await;
    assert_eq!(texts(&news), ["news"], "{news}");

    // Bad queries.
    for bad in [
        json!({}),
        json!({"resource": chat, "limit": 0}),
        json!({"resource": chat, "limit": 4}),
    ] {
        let refused = ask(&mut bob, &reader, "read", bad.clone()).await;
        assert_eq!(refused["code"], 400, "{bad}: {refused}");
    }
    assert_eq!(
        ask(&mut bob, &reader, "delete", json!({})).await["code"],
        400
    );

    // After a restart: the logs are there, and <h>/feed is still followed.
    let alice = alice.drop_connection();
    drop(bob);
    let node = node.restart().await;
    let mut carol = Rt::open(&node, "carol").await;
    let me = carol.allocate(1).await.remove(0);
    let history = ask(&mut carol, &me, "read", json!({"resource": chat})).await;
    assert_eq!(texts(&history), ["two", "three", "four"]);
    let (mut alice, reopen) = alice.resume(&node).await;
    assert_eq!(
        alice.recv_response(&reopen["id"]).await["body"]["code"],
        200
    );
    alice
        .send(
            &json!({"id": 91, "type": "update", "from": h, "to": feed, "body": {"text": "later"}}),
        )
        .await;
    alice.expect_nothing_queued().await;
    let news = ask(&mut carol, &me, "read", json!({"resource": feed})).await;
    assert_eq!(texts(&news), ["news", "later"], "{news}");
}
