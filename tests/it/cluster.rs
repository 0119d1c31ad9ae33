//! Several nodes serving one domain (`[cluster]`, issue 14): real node programs sharing one
//! fresh PostgreSQL database (`PG_TEST_URL`) and one NATS server (`NATS_TEST_URL`), both started
//! by `scripts/test`. Without either, these tests fail (they never skip).

use std::time::Duration;

use serde_json::{Value, json};

use crate::store_postgres::fresh_database;
use crate::support::client::{RECV_TIMEOUT, RtMemory};
use crate::support::{DOMAIN, NodeProcess, Rt, get_at};

/// How long a silent node stays a member (short: the kill test waits for it).
const MEMBERSHIP_TIMEOUT_MS: &str = "1500";

/// The test NATS server (`NATS_TEST_URL`).
pub(crate) fn nats_url() -> String {
    match std::env::var("NATS_TEST_URL")
        .ok()
        .filter(|u| !u.is_empty())
    {
        Some(url) => url,
        None => panic!(
            "NATS_TEST_URL is not set: this test needs a NATS server (scripts/test starts one; \
             or scripts/nats-test-server start DIR and export NATS_TEST_URL=$(cat DIR/url))"
        ),
    }
}

/// `n` nodes of one cluster, named `n1`..: each with its own data directory.
pub(crate) struct Cluster {
    pub(crate) nodes: Vec<NodeProcess>,
    /// The shared database's URL.
    pub(crate) db: String,
    /// The nodes' data directories (removed when the cluster is dropped).
    dirs: Vec<tempfile::TempDir>,
}

/// The id of node `i` of the cluster whose database is `db`: `<database>-n<i>`.
pub(crate) fn node_id(db: &str, i: usize) -> String {
    let name = db.rsplit('/').next().unwrap_or_default();
    format!("{name}-n{i}")
}

pub(crate) async fn cluster(n: usize) -> Cluster {
    cluster_with(n, &[]).await
}

pub(crate) async fn cluster_with(n: usize, extra: &[(&str, &str)]) -> Cluster {
    cluster_on(fresh_database().await, n, extra).await
}

/// `n` nodes of one cluster on the database at `db` (and the test NATS server).
pub(crate) async fn cluster_on(db: String, n: usize, extra: &[(&str, &str)]) -> Cluster {
    cluster_each(db, n, |_| {
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    })
    .await
}

/// Like [`cluster_on`], with the extra settings of node `i` (1..) given by `extra(i)`.
pub(crate) async fn cluster_each(
    db: String,
    n: usize,
    extra: impl Fn(usize) -> Vec<(String, String)>,
) -> Cluster {
    let mut c = Cluster {
        nodes: Vec::new(),
        db,
        dirs: Vec::new(),
    };
    for i in 1..=n {
        let own = extra(i);
        let own: Vec<(&str, &str)> = own.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        c.add_node(&own).await;
    }
    c
}

impl Cluster {
    /// Starts one more node of the cluster (`n<len + 1>`), with its own data directory.
    pub(crate) async fn add_node(&mut self, extra: &[(&str, &str)]) -> &NodeProcess {
        let nats = nats_url();
        let dir = tempfile::TempDir::new().unwrap();
        // Unique across the clusters of tests running at once on one NATS server.
        let id = node_id(&self.db, self.nodes.len() + 1);
        let mut env = vec![
            ("RETHINK_STORE__URL", self.db.as_str()),
            ("RETHINK_CLUSTER__NATS_URL", nats.as_str()),
            ("RETHINK_CLUSTER__NODE_ID", id.as_str()),
            (
                "RETHINK_CLUSTER__MEMBERSHIP_TIMEOUT_MS",
                MEMBERSHIP_TIMEOUT_MS,
            ),
        ];
        env.extend_from_slice(extra);
        let node = NodeProcess::spawn(dir.path(), &env).await;
        self.nodes.push(node);
        self.dirs.push(dir);
        self.nodes.last().expect("the node just added")
    }
}

pub(crate) async fn open(node: &NodeProcess, name: &str) -> Rt {
    let (ws, _) = tokio_tungstenite::connect_async(node.ws_url())
        .await
        .unwrap();
    let mut rt = Rt::from_ws(ws, name);
    let resp = rt.open_session(json!({})).await;
    assert_eq!(resp["body"]["code"], 200, "{resp}");
    rt
}

/// The value of the metric line starting with `prefix` on `node` (0 when absent).
pub(crate) async fn metric(node: &NodeProcess, prefix: &str) -> f64 {
    let (_, text) = get_at(node.addr(), "/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn runtimes_on_two_nodes_exchange_messages_and_responses_both_ways() {
    let c = cluster(2).await;
    let (n1, n2) = (&c.nodes[0], &c.nodes[1]);
    for node in [n1, n2] {
        let (status, body) = get_at(node.addr(), "/healthz").await;
        assert_eq!((status, body.as_str()), (200, "ok\ndatabase: up\nnats: up"));
    }
    let mut alice = open(n1, "rt-alice").await;
    let mut bob = open(n2, "rt-bob").await;
    let a = alice.allocate(1).await.remove(0);
    let b = bob.allocate(1).await.remove(0);

    for round in 0..3 {
        alice
            .send(&json!({"id": round, "type": "PING", "from": a, "to": b, "body": {"n": round}}))
            .await;
        let got = bob.recv().await;
        assert_eq!(
            (got["from"].as_str(), &got["body"]["n"]),
            (Some(&*a), &json!(round))
        );
        bob.send(&json!({"id": round, "type": "response", "from": b, "to": a,
            "body": {"code": 200, "value": format!("pong {round}")}}))
            .await;
        let resp = alice.recv().await;
        assert_eq!(
            (
                resp["type"].as_str(),
                resp["id"].as_i64(),
                resp["body"]["value"].as_str()
            ),
            (
                Some("response"),
                Some(round),
                Some(&*format!("pong {round}"))
            )
        );

        // And the other way round, to Alice's runtime URL (an owner by its session).
        let to = alice.url.clone();
        bob.send(
            &json!({"id": 10 + round, "type": "PING", "from": b, "to": format!("{to}/inbox")}),
        )
        .await;
        let got = alice.recv().await;
        assert_eq!(
            (got["id"].as_i64(), got["from"].as_str()),
            (Some(10 + round), Some(&*b))
        );
        alice
            .send(
                &json!({"id": 10 + round, "type": "response", "from": a, "to": b,
                "body": {"code": 200}}),
            )
            .await;
        assert_eq!(bob.recv().await["id"], 10 + round);
    }
    // Nobody anywhere holds this address.
    let resp = alice
        .request(json!({"type": "PING", "from": a, "to": format!("hyperty://{DOMAIN}/nobody")}))
        .await;
    assert_eq!(resp["body"]["code"], 404, "{resp}");
    // A runtime URL is one session in the whole cluster.
    let (ws, _) = tokio_tungstenite::connect_async(n2.ws_url()).await.unwrap();
    let mut twin = Rt::from_ws(ws, "rt-alice");
    assert_eq!(twin.open_session(json!({})).await["body"]["code"], 409);

    let forwarded = format!(
        "rethink_cluster_forwarded_total{{node=\"{}\"}} ",
        node_id(&c.db, 2)
    );
    assert_eq!(metric(n1, &forwarded).await, 6.0, "3 PINGs and 3 responses");
    assert_eq!(metric(n2, "rethink_cluster_received_total ").await, 6.0);
    assert!(metric(n1, "rethink_cluster_nats_round_trip_seconds_count ").await >= 6.0);
}

#[tokio::test]
async fn a_publication_reaches_subscribers_on_three_nodes() {
    let c = cluster(3).await;
    let mut publisher = open(&c.nodes[0], "rt-publisher").await;
    let object = publisher.allocate(1).await.remove(0);
    let changes = format!("{object}/changes");
    let mut subscribers = Vec::new();
    for (i, node) in c.nodes.iter().enumerate() {
        let mut s = open(node, &format!("rt-sub{i}")).await;
        s.subscribe(&[&changes]).await;
        subscribers.push(s);
    }
    for n in 0..5 {
        publisher
            .send(
                &json!({"id": n, "type": "update", "from": object, "to": changes,
                "body": {"value": {"n": n}}}),
            )
            .await;
    }
    for s in &mut subscribers {
        for n in 0..5 {
            let got = s.recv().await;
            assert_eq!(
                (got["id"].as_i64(), got["from"].as_str()),
                (Some(n), Some(&*object)),
                "{}: {got}",
                s.url
            );
        }
        s.expect_nothing_queued().await;
    }
    // Not to the publisher itself, and nothing refused.
    publisher.expect_nothing_queued().await;
}

/// Re-opens `memory`'s session on `node`, again while the node refuses (503: the session's node
/// is still a member); returns the runtime and the frames replayed before the answer.
async fn reopen_when_taken_over(node: &NodeProcess, memory: &RtMemory) -> (Rt, Vec<Value>) {
    let deadline = tokio::time::Instant::now() + RECV_TIMEOUT * 3;
    let mut refused = 0;
    loop {
        let (ws, _) = tokio_tungstenite::connect_async(node.ws_url())
            .await
            .unwrap();
        let mut rt = Rt::from_ws(ws, "resumed");
        rt.url = memory.url.clone();
        rt.token = memory.token.clone();
        rt.last_seq = memory.last_seq;
        rt.send(
            &json!({"id": "resume", "type": "re-open", "from": memory.url,
            "to": "mn:/session",
            "body": {"runtimeToken": memory.token, "lastSeq": memory.last_seq}}),
        )
        .await;
        let mut replayed = Vec::new();
        let code = loop {
            let v = rt.recv().await;
            if v["id"] == "resume" && v["type"] == "response" {
                break v["body"]["code"].as_u64();
            }
            replayed.push(v);
        };
        match code {
            Some(200) => return (rt, replayed),
            Some(503) => {
                assert!(replayed.is_empty(), "a refused re-open replays nothing");
                refused += 1;
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "still refused after {refused} tries"
                );
                // The old node's membership has to run out: poll.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("re-open answered {other:?}"),
        }
    }
}

fn ping_ids(frames: &[Value]) -> Vec<u64> {
    frames
        .iter()
        .filter(|f| f["type"] == "PING")
        .map(|f| f["body"]["id"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn a_runtime_whose_node_is_killed_resumes_on_another_node_without_loss() {
    const BEFORE: u64 = 60;
    const AWAY: u64 = 40;
    let mut c = cluster(3).await;
    let mut alice = open(&c.nodes[0], "rt-alice").await;
    let mut bob = open(&c.nodes[1], "rt-bob").await;
    let a = alice.allocate(1).await.remove(0);
    let b = bob.allocate(1).await.remove(0);

    for id in 0..BEFORE {
        alice
            .send(&json!({"id": id, "type": "PING", "from": a, "to": b, "body": {"id": id}}))
            .await;
    }
    // Bob is receiving when his node dies.
    let mut got: Vec<Value> = Vec::new();
    for _ in 0..BEFORE / 3 {
        got.push(bob.recv().await);
    }
    c.nodes[1].kill().await;
    // What reached his socket before the kill still arrives; then the connection ends.
    let (rest, _) = bob.frames_until_close().await;
    got.extend(rest);
    let last_seq = got.iter().filter_map(|f| f["seq"].as_u64()).max().unwrap();
    let memory = RtMemory {
        last_seq,
        ..bob.drop_connection()
    };

    // Sent while Bob is away: accepted (no refusal reaches Alice).
    for id in BEFORE..BEFORE + AWAY {
        alice
            .send(&json!({"id": id, "type": "PING", "from": a, "to": b, "body": {"id": id}}))
            .await;
    }
    assert_eq!(alice.drain().await, Vec::<Value>::new());

    let (mut bob, replayed) = reopen_when_taken_over(&c.nodes[2], &memory).await;
    got.extend(replayed);
    got.extend(bob.drain().await);
    let ids = ping_ids(&got);
    assert_eq!(
        ids,
        (0..BEFORE + AWAY).collect::<Vec<_>>(),
        "every message once, in order"
    );
    let seqs: Vec<u64> = got.iter().filter_map(|f| f["seq"].as_u64()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seqs rise: {seqs:?}");
    assert_eq!(
        metric(&c.nodes[2], "rethink_cluster_adopted_sessions_total ").await,
        1.0
    );

    // Bob, now on node 3, answers Alice on node 1.
    bob.send(&json!({"id": 1, "type": "response", "from": b, "to": a, "body": {"code": 200}}))
        .await;
    assert_eq!(alice.recv().await["type"], "response");
}

/// Waits until `node`'s metric line `prefix` shows `value` (state the node publishes, polled).
pub(crate) async fn wait_for_metric(node: &NodeProcess, prefix: &str, value: f64) {
    let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
    loop {
        let now = metric(node, prefix).await;
        if now == value {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{prefix}is {now}, never {value}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Queues a message for `session` in the shared database as a node would (without telling the
/// holder: its heartbeat finds it), claiming it comes from session `sender`.
async fn queue_directly(db: &str, session: &str, sender: &str, json: &Value, to: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(db).await.unwrap();
    sqlx::query(
        "INSERT INTO cluster_inbox (session, json, sender, sender_from, recipient, transport) \
         VALUES ($1, $2, $3, $4, $5, 'ws')",
    )
    .bind(session)
    .bind(json.to_string())
    .bind(sender)
    .bind(json["from"].as_str().unwrap())
    .bind(to)
    .execute(&mut conn)
    .await
    .unwrap();
}

pub(crate) async fn session_id(db: &str, runtime_url: &str) -> String {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(db).await.unwrap();
    sqlx::query_scalar("SELECT id FROM sessions WHERE runtime_url = $1")
        .bind(runtime_url)
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

/// A policy directory permitting everything but messages to the hyperties of `rt-bob` (a
/// decision only the node holding `rt-bob` can take: it knows the recipient's runtime).
pub(crate) fn not_to_bob_policies() -> tempfile::TempDir {
    crate::support::policy_dir(&format!(
        "@id(\"allow-all\")\npermit(principal, action, resource);\n\
         @id(\"not-to-bob\")\nforbid(principal, action, resource is Rethink::Hyperty) \
         when {{ resource has runtime && \
         resource.runtime == Rethink::Runtime::\"hyperty-runtime://{DOMAIN}/rt-bob\" }};\n"
    ))
}

/// The node holding the recipient decides again: the policies, now knowing the recipient's
/// owner (which the sender's node does not), and whether the sending session owns `from`.
#[tokio::test]
async fn the_receiving_node_applies_policy_and_anti_spoofing() {
    let policies = not_to_bob_policies();
    let dir = policies.path().to_str().unwrap();
    let c = cluster_with(2, &[("RETHINK_POLICY__DIR", dir)]).await;
    let (n1, n2) = (&c.nodes[0], &c.nodes[1]);
    let mut alice = open(n1, "rt-alice").await;
    let mut bob = open(n2, "rt-bob").await;
    let mut carol = open(n2, "rt-carol").await;
    let a = alice.allocate(1).await.remove(0);
    let b = bob.allocate(1).await.remove(0);
    let c_addr = carol.allocate(1).await.remove(0);

    // Node 1 does not know who holds b and lets the message go; node 2 refuses it.
    alice
        .send(&json!({"id": 1, "type": "PING", "from": a, "to": b}))
        .await;
    alice
        .send(&json!({"id": 2, "type": "PING", "from": a, "to": c_addr}))
        .await;
    assert_eq!(carol.recv().await["id"], 2);
    wait_for_metric(n2, "rethink_cluster_refused_on_arrival_total ", 1.0).await;
    bob.expect_nothing_queued().await;
    assert_eq!(
        metric(n2, r#"rethink_policy_denials_total{policy="not-to-bob"} "#).await,
        1.0
    );

    // A node that claims Alice's session sent something from Bob's address: refused. The
    // same from Alice's own address: delivered (found by node 2's heartbeat).
    let alice_id = session_id(&c.db, &alice.url).await;
    let carol_id = session_id(&c.db, &carol.url).await;
    let spoofed = json!({"id": 3, "type": "PING", "from": b, "to": c_addr});
    queue_directly(&c.db, &carol_id, &alice_id, &spoofed, &c_addr).await;
    let honest = json!({"id": 4, "type": "PING", "from": a, "to": c_addr});
    queue_directly(&c.db, &carol_id, &alice_id, &honest, &c_addr).await;
    let got = carol.recv().await;
    assert_eq!(
        (got["id"].as_i64(), got["from"].as_str()),
        (Some(4), Some(&*a))
    );
    assert_eq!(
        metric(n2, "rethink_cluster_refused_on_arrival_total ").await,
        2.0
    );
    carol.expect_nothing_queued().await;
    // Both refusals are answered to the sending session, as on one node.
    let mut answers = Vec::new();
    for _ in 0..2 {
        let r = alice.recv().await;
        answers.push((r["id"].as_i64(), r["body"]["code"].as_u64()));
    }
    assert_eq!(answers, [(Some(1), Some(403)), (Some(3), Some(403))]);
    alice.expect_nothing_queued().await;
}

/// Nobody re-opens the sessions of a killed node: once it has been gone for the membership
/// timeout and the resume window, a live node ends them, and their runtime URLs are free again.
#[tokio::test]
async fn sessions_of_a_node_gone_past_the_resume_window_end() {
    let mut c = cluster_with(2, &[("RETHINK_SESSION__RESUME_WINDOW_SECS", "1")]).await;
    let _bob = open(&c.nodes[1], "rt-bob").await;
    c.nodes[1].kill().await;
    let deadline = tokio::time::Instant::now() + RECV_TIMEOUT * 2;
    let mut taken = 0;
    loop {
        let (ws, _) = tokio_tungstenite::connect_async(c.nodes[0].ws_url())
            .await
            .unwrap();
        let mut again = Rt::from_ws(ws, "rt-bob");
        match again.open_session(json!({})).await["body"]["code"].as_u64() {
            Some(200) => break,
            Some(409) => taken += 1,
            other => panic!("open answered {other:?}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "rt-bob still taken after {taken} tries"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(taken > 0, "taken while node 2 could still come back");
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&c.db)
        .await
        .unwrap();
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions WHERE node = 'n2'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(left, 0);
}

/// A NATS server of the test's own (Debian's `nats-server`, as `scripts/nats-test-server` runs
/// it), on `port`.
/// A NATS server of the test's own (logging into `dir`), listening on a free port before this
/// returns (a node does not start without NATS).
async fn listening_nats_server(dir: &std::path::Path) -> (tokio::process::Child, u16) {
    let port = super::support::free_port();
    let nats = nats_server(port, dir);
    let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nats-server listens"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (nats, port)
}

/// A forward never waits for NATS: with NATS gone, the messages for another node's session are
/// still stored (so the sender's route goes on), more of them than the NATS client and the
/// node's own notice queue can hold (notices dropped when full), and the holder's heartbeat
/// delivers every one, in order.
#[tokio::test]
async fn forwards_go_on_while_nats_is_down_and_the_heartbeat_delivers_them_in_order() {
    // More than the NATS client's queue (2048) and the node's notice queue (1024) hold.
    const N: u64 = 4_000;
    let files = tempfile::TempDir::new().unwrap();
    let (mut nats, port) = listening_nats_server(files.path()).await;
    let url = format!("nats://127.0.0.1:{port}");
    let c = cluster_each(fresh_database().await, 2, |_| {
        vec![
            ("RETHINK_CLUSTER__NATS_URL".into(), url.clone()),
            (
                "RETHINK_SESSION__OUTBOX_MAX_MESSAGES".into(),
                "20000".into(),
            ),
        ]
    })
    .await;
    let (n1, n2) = (&c.nodes[0], &c.nodes[1]);
    let mut alice = open(n1, "rt-alice").await;
    let mut carol = open(n2, "rt-carol").await;
    let a = alice.allocate(1).await.remove(0);
    let c_addr = carol.allocate(1).await.remove(0);
    alice
        .send(&json!({"id": 0, "type": "PING", "from": a, "to": c_addr}))
        .await;
    assert_eq!(carol.recv().await["id"], 0);

    nats.kill().await.unwrap();
    wait_for_health(n1, (503, "database: up\nnats: down")).await;
    for id in 1..=N {
        alice
            .send(&json!({"id": id, "type": "PING", "from": a, "to": c_addr}))
            .await;
    }
    // Every one stored while NATS is down: the count goes on growing until it has them all
    // (it would stop where a forward waits for NATS).
    let forwarded = format!(
        "rethink_cluster_forwarded_total{{node=\"{}\"}} ",
        node_id(&c.db, 2)
    );
    let (mut last, mut moved_at) = (0.0, tokio::time::Instant::now());
    loop {
        let now = metric(n1, &forwarded).await;
        if now == (N + 1) as f64 {
            break;
        }
        if now > last {
            (last, moved_at) = (now, tokio::time::Instant::now());
        }
        assert!(
            moved_at.elapsed() < RECV_TIMEOUT,
            "{forwarded}stopped at {now} of {}",
            N + 1
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // (NATS still down meanwhile.)
    let (status, _) = get_at(n1.addr(), "/healthz").await;
    assert_eq!(status, 503);
    let mut ids = Vec::new();
    while ids.len() < N as usize {
        let frame = carol.recv().await;
        ids.push(frame["id"].as_u64().unwrap());
    }
    assert!(ids.iter().copied().eq(1..=N), "in order, once");
    carol.expect_nothing_queued().await;
}

fn nats_server(port: u16, dir: &std::path::Path) -> tokio::process::Child {
    tokio::process::Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-l"])
        .arg(dir.join("server.log"))
        .kill_on_drop(true)
        .spawn()
        .expect("nats-server runs (scripts/test installs Debian's nats-server)")
}

/// Polls `/healthz` until it answers `want`.
async fn wait_for_health(node: &NodeProcess, want: (u16, &str)) {
    let deadline = tokio::time::Instant::now() + RECV_TIMEOUT * 2;
    loop {
        let (status, body) = get_at(node.addr(), "/healthz").await;
        if (status, body.as_str()) == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/healthz is {status} {body:?}, never {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `/healthz` reports NATS: up; 503 `nats: down` while the server is gone; up again by itself
/// once it is back on its address.
#[tokio::test]
async fn healthz_reports_nats_down_and_up_again() {
    let files = tempfile::TempDir::new().unwrap();
    let (mut nats, port) = listening_nats_server(files.path()).await;
    let url = format!("nats://127.0.0.1:{port}");
    let db = fresh_database().await;
    let dir = tempfile::TempDir::new().unwrap();
    let node = NodeProcess::spawn(
        dir.path(),
        &[
            ("RETHINK_STORE__URL", db.as_str()),
            ("RETHINK_CLUSTER__NATS_URL", url.as_str()),
        ],
    )
    .await;
    wait_for_health(&node, (200, "ok\ndatabase: up\nnats: up")).await;
    nats.kill().await.unwrap();
    wait_for_health(&node, (503, "database: up\nnats: down")).await;
    let _nats = nats_server(port, files.path());
    wait_for_health(&node, (200, "ok\ndatabase: up\nnats: up")).await;
}
