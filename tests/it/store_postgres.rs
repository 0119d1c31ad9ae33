//! The node on PostgreSQL (`store.url`, issue 14's first part): the real node program with its
//! bus's store in a fresh database of the test server (`PG_TEST_URL`, started by
//! `scripts/test`). Messages go both ways between two runtimes, the sessions are rows of that
//! database, and a disconnected runtime's outbox survives a SIGKILL of the node.

use std::collections::BTreeMap;

use serde_json::json;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

use crate::support::client::RtMemory;
use crate::support::{NodeProcess, Rt, get_at};

/// Messages sent to the disconnected runtime before the kill.
const MESSAGES: u64 = 20;

/// A fresh database on the test server: its URL.
pub(crate) async fn fresh_database() -> String {
    let (admin, name) = fresh_database_named().await;
    let (base, _) = admin.rsplit_once('/').unwrap();
    format!("{base}/{name}")
}

/// The test server's admin URL (`PG_TEST_URL`).
fn test_server() -> String {
    let Some(url) = std::env::var("PG_TEST_URL").ok().filter(|u| !u.is_empty()) else {
        panic!(
            "PG_TEST_URL is not set: this test needs a PostgreSQL server (scripts/test starts \
             one; or scripts/pg-test-server start DIR and export PG_TEST_URL=$(cat DIR/url))"
        );
    };
    url
}

/// A fresh database on the test server: the server's admin URL and the database's name.
async fn fresh_database_named() -> (String, String) {
    let url = test_server();
    let admin: PgConnectOptions = url.parse().unwrap();
    let name = format!("rethink_it_{}", std::process::id());
    let name = format!("{name}_{}", rand::random::<u64>());
    let mut conn = PgConnection::connect_with(&admin).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    (url, name)
}

/// Runs one statement on the admin connection.
async fn admin(url: &str, sql: String) {
    let mut conn = PgConnection::connect(url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
}

async fn count(url: &str, sql: &'static str) -> i64 {
    let mut conn = PgConnection::connect(url).await.unwrap();
    let n = sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    n
}

async fn open(node: &NodeProcess, name: &str) -> Rt {
    let (ws, _) = tokio_tungstenite::connect_async(node.ws_url())
        .await
        .unwrap();
    let mut rt = Rt::from_ws(ws, name);
    let resp = rt.open_session(json!({})).await;
    assert_eq!(resp["body"]["code"], 200, "{resp}");
    rt
}

/// Re-opens `memory`'s session on `node`; returns the replayed PINGs' ids in seq order.
async fn resume(node: &NodeProcess, memory: &RtMemory) -> Vec<u64> {
    let (ws, _) = tokio_tungstenite::connect_async(node.ws_url())
        .await
        .unwrap();
    let mut rt = Rt::from_ws(ws, "resumed");
    rt.url = memory.url.clone();
    rt.last_seq = memory.last_seq;
    let url = rt.url.clone();
    rt.send(
        &json!({"id": "resume", "type": "re-open", "from": url, "to": "mn:/session",
        "body": {"runtimeToken": memory.token, "lastSeq": memory.last_seq}}),
    )
    .await;
    let mut got = BTreeMap::new();
    loop {
        let v = rt.recv().await;
        if v["id"] == "resume" {
            assert_eq!(v["body"]["code"], 200, "{v}");
            return got.into_values().collect();
        }
        assert_eq!(v["type"], "PING", "{v}");
        let seq = v["seq"].as_u64().unwrap();
        assert!(
            got.insert(seq, v["id"].as_u64().unwrap()).is_none(),
            "seq {seq} twice"
        );
    }
}

#[tokio::test]
async fn the_bus_on_postgres_routes_both_ways_and_keeps_outboxes_across_sigkill() {
    let db = fresh_database().await;
    let dir = tempfile::TempDir::new().unwrap();
    let node = NodeProcess::spawn(
        dir.path(),
        &[
            ("RETHINK_STORE__URL", db.as_str()),
            // A wide window in which an accepted frame would be in memory only.
            ("RETHINK_STORE__COMMIT_DELAY_MS", "200"),
        ],
    )
    .await;
    let mut alice = open(&node, "rt-alice").await;
    let mut bob = open(&node, "rt-bob").await;
    let a = alice.allocate(1).await.remove(0);
    let b = bob.allocate(1).await.remove(0);

    alice
        .send(&json!({"id": 1, "type": "PING", "from": a, "to": b, "body": {"n": 1}}))
        .await;
    let got = bob.recv().await;
    assert_eq!(
        (got["from"].as_str(), got["body"]["n"].as_u64()),
        (Some(&*a), Some(1))
    );
    bob.send(&json!({"id": 1, "type": "response", "from": b, "to": a,
        "body": {"code": 200, "value": "pong"}}))
        .await;
    let resp = alice.recv().await;
    assert_eq!(
        (resp["type"].as_str(), resp["body"]["value"].as_str()),
        (Some("response"), Some("pong"))
    );

    // Bob goes away; what Alice sends him waits in his outbox.
    bob.ack().await;
    let bob = bob.drop_connection();
    for id in 100..100 + MESSAGES {
        alice
            .send(&json!({"id": id, "type": "PING", "from": a, "to": b, "body": {"id": id}}))
            .await;
    }
    // Answered: the node handled (accepted) every message before this request.
    let resp = alice
        .request(json!({"type": "PING", "from": a, "to": "hyperty://example.com/nobody"}))
        .await;
    assert_eq!(resp["body"]["code"], 404, "{resp}");
    let mut node = node;
    node.kill().await;

    // The sessions and Bob's outbox are rows of the PostgreSQL database.
    assert_eq!(count(&db, "SELECT COUNT(*) FROM sessions").await, 2);
    let queued = count(
        &db,
        "SELECT COUNT(*) FROM outbox WHERE json LIKE '%\"PING\"%'",
    )
    .await;
    assert!(
        queued >= MESSAGES as i64,
        "{queued} PINGs in the outbox table"
    );

    let node = node.restart().await;
    let ids = resume(&node, &bob).await;
    assert_eq!(
        ids,
        (100..100 + MESSAGES).collect::<Vec<_>>(),
        "every accepted message once, in order"
    );
}

/// `/healthz` reports the database: up; down (503) once the database is gone (dropped under the
/// node, its connections ended); up again, by itself, once it is back.
#[tokio::test]
async fn healthz_reports_the_database_down_and_up_again() {
    let (admin_url, name) = fresh_database_named().await;
    let (base, _) = admin_url.rsplit_once('/').unwrap();
    let db = format!("{base}/{name}");
    let dir = tempfile::TempDir::new().unwrap();
    let node = NodeProcess::spawn(dir.path(), &[("RETHINK_STORE__URL", db.as_str())]).await;
    let up = (200, "ok\ndatabase: up".to_owned());
    assert_eq!(get_at(node.addr(), "/healthz").await, up);

    admin(&admin_url, format!("DROP DATABASE {name} WITH (FORCE)")).await;
    assert_eq!(
        get_at(node.addr(), "/healthz").await,
        (503, "database: down".to_owned())
    );

    admin(&admin_url, format!("CREATE DATABASE {name}")).await;
    assert_eq!(get_at(node.addr(), "/healthz").await, up);
}

/// Runs the node's program with `store.url = url`, expecting it to stop at start: its output.
async fn start_fails(url: &str) -> String {
    let dir = tempfile::TempDir::new().unwrap();
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_rethink-node-under-test"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("NO_COLOR", "1")
        .env("RETHINK_LISTEN", "127.0.0.1:0")
        .env("RETHINK_DATA_DIR", dir.path())
        .env("RETHINK_STORE__URL", url)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(30), run)
        .await
        .expect("the node stops in time")
        .unwrap();
    assert!(!out.status.success(), "the node started with {url}");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn a_bad_or_unreachable_store_url_stops_the_start() {
    let out = start_fails("mysql://rethink:pw@127.0.0.1/bus").await;
    assert!(out.contains("setting `store.url`"), "{out}");
    assert!(!out.contains("pw@"), "the password is not shown: {out}");

    // A database that does not exist on the test server.
    let admin_url = test_server();
    let (base, _) = admin_url.rsplit_once('/').unwrap();
    let out = start_fails(&format!("{base}/rethink_no_such_database")).await;
    assert!(
        out.contains("rethink_no_such_database\" does not exist"),
        "{out}"
    );
    assert!(out.contains("`store.url`"), "{out}");

    // Nothing listens on that port (a port just bound and released).
    let port = super::support::free_port();
    let out = start_fails(&format!("postgres://rethink@127.0.0.1:{port}/bus")).await;
    assert!(
        out.contains("cannot connect to the database of `store.url`"),
        "{out}"
    );
}
