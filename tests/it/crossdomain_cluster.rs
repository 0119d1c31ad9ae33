//! Routing across domains from a domain that several nodes serve (issues 13 and 14): `a.test`
//! is a cluster of two real node programs on one fresh PostgreSQL database (`PG_TEST_URL`) and
//! the test NATS server (`NATS_TEST_URL`); `b.test` is one node program. A has one gateway to B
//! for the whole cluster: the node that opened it runs B's stub, and the other node forwards
//! its messages for B to that gateway through the cluster; B's answers come back through the
//! stub's node and reach the hyperty on either node. When the gateway's node is killed with
//! SIGKILL, the other node takes the gateway over once the killed one is gone from the cluster,
//! and what was accepted for B meanwhile arrives in order, once. With B as the cluster, a proof
//! answering a challenge of one node of B is accepted by the other.

use std::net::SocketAddr;

use serde_json::json;

use crate::cluster::{Cluster, cluster_each};
use crate::crossdomain::{A, B, free_addr};
use crate::crossdomain_delivery::{hyperty, pings_until, send_accepted, spawn};
use crate::store_postgres::fresh_database;
use crate::support::{NodeProcess, Rt};

/// A's cluster of two nodes (each knowing B on `ab`), then B on `ab` (knowing A by its first
/// node). The temporary directory is B's.
async fn a_cluster_and_b() -> (Cluster, NodeProcess, tempfile::TempDir) {
    let ab: SocketAddr = free_addr();
    let peers = format!("{{\"{B}\"=\"http://{ab}\"}}");
    let a = cluster_each(fresh_database().await, 2, |_| {
        [
            ("RETHINK_DOMAIN", A),
            ("RETHINK_MATRIX__SERVER_NAME", A),
            ("RETHINK_CROSS_DOMAIN__ENABLED", "true"),
            ("RETHINK_CROSS_DOMAIN__PEERS", peers.as_str()),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
    })
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let b = spawn(dir.path(), B, ab, &[(A, a.nodes[0].addr())], &[]).await;
    (a, b, dir)
}

/// The gateway sessions to other domains in A's shared database.
async fn gateways(db: &str) -> Vec<String> {
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(db)
        .await
        .expect("the test database");
    sqlx::query_scalar("SELECT runtime_url FROM sessions WHERE runtime_url LIKE $1")
        .bind(format!("hyperty-runtime://{A}/gateway/%"))
        .fetch_all(&mut conn)
        .await
        .expect("the sessions")
}

/// A's cluster and B with a hyperty on each of A's nodes and one on B, A's gateway to B opened
/// on node 1 (by a first message from there, which B's hyperty got).
struct Setup {
    a: Cluster,
    _b: NodeProcess,
    a1: Rt,
    h1: String,
    a2: Rt,
    h2: String,
    bob: Rt,
    hb: String,
    _dir: tempfile::TempDir,
}

async fn gateway_on_node_1() -> Setup {
    let (mut a, b, dir) = a_cluster_and_b().await;
    let (mut a1, h1) = hyperty(&a.nodes[0], A, "rt-a1").await;
    let (a2, h2) = hyperty(&a.nodes[1], A, "rt-a2").await;
    let (mut bob, hb) = hyperty(&b, B, "rt-bob").await;
    send_accepted(&mut a1, &h1, &hb, 0..=0).await;
    assert_eq!(
        pings_until(&mut bob, 0, &mut a.nodes[0]).await,
        Vec::<u64>::new()
    );
    Setup {
        a,
        _b: b,
        a1,
        h1,
        a2,
        h2,
        bob,
        hb,
        _dir: dir,
    }
}

/// The next frame `rt` gets is the response `id`, from `from`.
async fn expect_response(rt: &mut Rt, id: u64, from: &str) {
    let r = rt.recv().await;
    assert_eq!(
        (r["type"].as_str(), r["id"].as_u64(), r["from"].as_str()),
        (Some("response"), Some(id), Some(from)),
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyperties_on_both_nodes_of_a_reach_b_through_one_gateway_and_get_answers() {
    const N: u64 = 20;
    let mut s = gateway_on_node_1().await;
    // Node 2 has no gateway of its own: its messages go to node 1's, in order, once.
    send_accepted(&mut s.a2, &s.h2, &s.hb, 1..=N + 1).await;
    let got = pings_until(&mut s.bob, N + 1, &mut s.a.nodes[1]).await;
    assert_eq!(got, (1..=N).collect::<Vec<_>>(), "in order, once");
    assert_eq!(
        gateways(&s.a.db).await,
        vec![format!("hyperty-runtime://{A}/gateway/{B}")],
        "one gateway to B for the cluster"
    );

    // B's answers reach the hyperty on either node (through the stub's node session at B,
    // then node 1, then for a2 the cluster).
    for (id, to) in [(1, &s.h2), (2, &s.h1)] {
        s.bob
            .send(
                &json!({"id": id, "type": "response", "from": s.hb, "to": to,
            "body": {"code": 200, "value": id}}),
            )
            .await;
    }
    expect_response(&mut s.a2, 1, &s.hb).await;
    expect_response(&mut s.a1, 2, &s.hb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_of_a_killed_node_is_taken_over_and_what_waited_arrives_once() {
    const N: u64 = 30;
    let mut s = gateway_on_node_1().await;
    send_accepted(&mut s.a2, &s.h2, &s.hb, 1..=N).await;
    assert_eq!(
        pings_until(&mut s.bob, N, &mut s.a.nodes[1]).await,
        (1..N).collect::<Vec<_>>()
    );

    // The gateway's node dies; node 2 accepts messages for B meanwhile.
    s.a.nodes[0].kill().await;
    send_accepted(&mut s.a2, &s.h2, &s.hb, N + 1..=2 * N + 1).await;
    // Node 2 takes the gateway over once node 1 is gone (`cluster.membership_timeout_ms`),
    // starts B's stub, which resumes its session at B: what waited arrives, and nothing that
    // B had before comes again.
    let got = pings_until(&mut s.bob, 2 * N + 1, &mut s.a.nodes[1]).await;
    assert_eq!(got, (N + 1..=2 * N).collect::<Vec<_>>(), "in order, once");

    // B's answers come back through the stub now on node 2.
    s.bob
        .send(
            &json!({"id": 9, "type": "response", "from": s.hb, "to": s.h2,
        "body": {"code": 200}}),
        )
        .await;
    expect_response(&mut s.a2, 9, &s.hb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_node_that_was_only_paused_stops_its_stub_once_another_took_the_gateway() {
    const N: u64 = 10;
    let mut s = gateway_on_node_1().await;

    // Node 1 is frozen long enough to be taken for gone: node 2 takes the gateway over.
    s.a.nodes[0].signal("-STOP");
    send_accepted(&mut s.a2, &s.h2, &s.hb, 1..=N + 1).await;
    let got = pings_until(&mut s.bob, N + 1, &mut s.a.nodes[1]).await;
    s.a.nodes[0].signal("-CONT");
    assert_eq!(got, (1..=N).collect::<Vec<_>>(), "in order, once");

    // Back, node 1 learns the gateway is node 2's and stops its instance of B's stub: two
    // stubs must not speak for one gateway.
    s.a.nodes[0].wait_for_log("its stub stopped here").await;
    send_accepted(&mut s.a2, &s.h2, &s.hb, N + 2..=2 * N + 2).await;
    let got = pings_until(&mut s.bob, 2 * N + 2, &mut s.a.nodes[1]).await;
    assert_eq!(
        got,
        (N + 2..=2 * N + 1).collect::<Vec<_>>(),
        "in order, once"
    );
}

/// B's cluster of two nodes (on `b1`, `b2`), and A (one node, a process on `aa`, knowing B by
/// node 1). B's node 1 publishes node 2 as its public URL, so A fetches B's stub and its
/// challenges from node 1 while the stub's connection goes to node 2. The directory is A's.
async fn a_and_b_cluster() -> (NodeProcess, Cluster, tempfile::TempDir) {
    let (aa, b1, b2) = (free_addr(), free_addr(), free_addr());
    let peers = format!("{{\"{A}\"=\"http://{aa}\"}}");
    let b = cluster_each(fresh_database().await, 2, |i| {
        let (listen, public) = if i == 1 { (b1, b2) } else { (b2, b2) };
        [
            ("RETHINK_DOMAIN", B.to_owned()),
            ("RETHINK_MATRIX__SERVER_NAME", B.to_owned()),
            ("RETHINK_LISTEN", listen.to_string()),
            ("RETHINK_PUBLIC_URL", format!("http://{public}")),
            ("RETHINK_CROSS_DOMAIN__ENABLED", "true".to_owned()),
            ("RETHINK_CROSS_DOMAIN__PEERS", peers.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    })
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let a = spawn(dir.path(), A, aa, &[(B, b1)], &[]).await;
    (a, b, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reaches_both_nodes_of_b_with_a_proof_of_one_node_accepted_by_the_other() {
    const N: u64 = 10;
    let (mut a, b, _dir) = a_and_b_cluster().await;
    let (mut alice, ha) = hyperty(&a, A, "rt-alice").await;
    let (mut bob1, hb1) = hyperty(&b.nodes[0], B, "rt-bob1").await;
    let (mut bob2, hb2) = hyperty(&b.nodes[1], B, "rt-bob2").await;

    // The challenge comes from B's node 1, the proof goes to node 2 (B's public URL) with the
    // stub's session: node 2 checks a challenge node 1 issued.
    send_accepted(&mut alice, &ha, &hb1, 0..=N).await;
    assert_eq!(
        pings_until(&mut bob1, N, &mut a).await,
        (0..N).collect::<Vec<_>>()
    );
    send_accepted(&mut alice, &ha, &hb2, 0..=N).await;
    assert_eq!(
        pings_until(&mut bob2, N, &mut a).await,
        (0..N).collect::<Vec<_>>()
    );

    // Answers from both nodes of B: node 2 holds A's node session, node 1 forwards to it.
    for (rt, from, id) in [(&mut bob1, &hb1, 1), (&mut bob2, &hb2, 2)] {
        rt.send(
            &json!({"id": id, "type": "response", "from": from, "to": ha,
            "body": {"code": 200}}),
        )
        .await;
        expect_response(&mut alice, id, from).await;
    }
}
