//! A reload on one node of a cluster reaches the others (`cluster::reloads`): the nodes poll
//! their policy directory only once an hour here, so only the notice of the node told to reload
//! can make the others reload before the test ends. Clusters of tests running at once share the
//! NATS server: a node acts only on notices of its own cluster's members.

use serde_json::json;

use crate::catalogue::{get, variant};
use crate::catalogue_reload::{echo, put, until};
use crate::cluster::{
    cluster_with, metric, nats_url, node_id, not_to_bob_policies, open, wait_for_metric,
};
use crate::store_postgres::fresh_database;
use crate::support::http::post_at;
use crate::support::{NodeProcess, policy_dir};

const ADMIN: &str = "admin-token-0123456789";
const ALLOW_ALL: &str = "@id(\"allow-all\")\npermit(principal, action, resource);\n";
const HOURLY: &str = "3600000";
const RELOADED: &str = "rethink_policy_reloads_total{result=\"ok\"} ";

/// Both nodes read one directory: after it changes and node 1 alone is told to reload, node 2
/// reloads too and enforces the new set on a message between two of its own runtimes.
#[tokio::test]
async fn a_policy_reload_on_one_node_reaches_the_others() {
    let policies = policy_dir(ALLOW_ALL);
    let dir = policies.path().to_str().unwrap();
    let c = cluster_with(
        2,
        &[
            ("RETHINK_POLICY__DIR", dir),
            ("RETHINK_POLICY__WATCH_INTERVAL_MS", HOURLY),
            ("RETHINK_ADMIN__TOKEN", ADMIN),
        ],
    )
    .await;
    let (n1, n2) = (&c.nodes[0], &c.nodes[1]);
    let mut bob = open(n2, "rt-bob").await;
    let mut carol = open(n2, "rt-carol").await;
    let b = bob.allocate(1).await.remove(0);
    let from = carol.allocate(1).await.remove(0);
    carol
        .send(&json!({"id": 1, "type": "PING", "from": from, "to": b}))
        .await;
    assert_eq!(bob.recv().await["id"], 1, "allowed before the reload");

    // The new set: nothing to rt-bob's hyperties.
    let changed = not_to_bob_policies();
    std::fs::copy(
        changed.path().join("policies.cedar"),
        policies.path().join("policies.cedar"),
    )
    .unwrap();
    assert_eq!(
        post_at(n1.addr(), "/admin/policy/reload", ADMIN).await.0,
        200
    );
    wait_for_metric(n2, RELOADED, 1.0).await;

    let refused = carol
        .request(json!({"id": 2, "type": "PING", "from": from, "to": b}))
        .await;
    assert_eq!(refused["body"]["code"], 403, "{refused}");
    let why = refused["body"]["description"].as_str().unwrap_or_default();
    assert!(why.contains("not-to-bob"), "{refused}");
    assert_eq!(
        metric(
            n1,
            "rethink_cluster_reload_notices_sent_total{kind=\"policy\"} "
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            n2,
            "rethink_cluster_reload_mismatches_total{kind=\"policy\"} "
        )
        .await,
        0.0
    );
}

/// Two members of one cluster (a fresh database), node `i` with `env[i]` beside the cluster's
/// settings; their data directories are kept by the returned guards.
async fn members(env: [&[(&str, &str)]; 2]) -> (Vec<NodeProcess>, Vec<tempfile::TempDir>) {
    let db = fresh_database().await;
    let nats = nats_url();
    let mut nodes = Vec::new();
    let mut data = Vec::new();
    for (i, extra) in env.into_iter().enumerate() {
        let dir = tempfile::TempDir::new().unwrap();
        let id = node_id(&db, i + 1);
        let mut all = vec![
            ("RETHINK_STORE__URL", db.as_str()),
            ("RETHINK_CLUSTER__NATS_URL", nats.as_str()),
            ("RETHINK_CLUSTER__NODE_ID", id.as_str()),
        ];
        all.extend_from_slice(extra);
        nodes.push(NodeProcess::spawn(dir.path(), &all).await);
        data.push(dir);
    }
    (nodes, data)
}

/// Each node with its own copy: node 2 reloads on node 1's notice, finds its copy different
/// and says so (a warning and `rethink_cluster_reload_mismatches_total`), keeping its own set.
#[tokio::test]
async fn a_node_whose_copy_differs_after_a_reload_says_so() {
    let (first, second) = (policy_dir(ALLOW_ALL), policy_dir(ALLOW_ALL));
    let env = |dir| {
        [
            ("RETHINK_POLICY__DIR", dir),
            ("RETHINK_POLICY__WATCH_INTERVAL_MS", HOURLY),
            ("RETHINK_ADMIN__TOKEN", ADMIN),
        ]
    };
    let (e1, e2) = (
        env(first.path().to_str().unwrap()),
        env(second.path().to_str().unwrap()),
    );
    let (nodes, _data) = members([&e1, &e2]).await;
    std::fs::copy(
        not_to_bob_policies().path().join("policies.cedar"),
        first.path().join("policies.cedar"),
    )
    .unwrap();
    assert_eq!(
        post_at(nodes[0].addr(), "/admin/policy/reload", ADMIN)
            .await
            .0,
        200
    );
    wait_for_metric(
        &nodes[1],
        "rethink_cluster_reload_mismatches_total{kind=\"policy\"} ",
        1.0,
    )
    .await;
    // It did reload its own copy (unchanged), once.
    assert_eq!(metric(&nodes[1], RELOADED).await, 1.0);
}

/// The stub directory, shared: node 1 polls it every 20 ms, node 2 once an hour; a stub
/// dropped in is served by node 2 too, on node 1's notice.
#[tokio::test]
async fn a_stub_dropped_in_is_served_by_a_node_that_does_not_poll() {
    let stubs = tempfile::TempDir::new().unwrap();
    let dir = stubs.path().to_str().unwrap();
    let (nodes, _data) = members([
        &[
            ("RETHINK_STUBS__DIR", dir),
            ("RETHINK_STUBS__WATCH_INTERVAL_MS", "20"),
        ],
        &[
            ("RETHINK_STUBS__DIR", dir),
            ("RETHINK_STUBS__WATCH_INTERVAL_MS", HOURLY),
        ],
    ])
    .await;
    assert_eq!(
        get(nodes[1].addr(), "/.well-known/protocolstub/chat")
            .await
            .status,
        404
    );
    put(stubs.path(), "chat.wasm", &variant(&echo(), "chat-one"));
    until(nodes[0].addr(), "chat", |status, _| status == 200).await;
    until(nodes[1].addr(), "chat", |status, _| status == 200).await;
    assert_eq!(
        metric(
            &nodes[1],
            "rethink_cluster_reload_notices_received_total{kind=\"stubs\"} "
        )
        .await,
        1.0
    );
}
