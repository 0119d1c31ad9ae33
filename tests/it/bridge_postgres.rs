//! The bridge while its database is unreachable: the node program on PostgreSQL (a fresh
//! database of `PG_TEST_URL`) through a [`Relay`] the test takes down and up again. An update
//! the room cannot store then is answered 503 (not 500). A subscription, answered 200 before the
//! bridge saw it, whose bridging the database fails is bridged once the database serves again
//! (its object's room made, the hyperty's virtual user in it), without another message.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use tempfile::TempDir;

use crate::bridge::{room_within, wait_for_messages};
use crate::store_postgres::fresh_database;
use crate::support::client::RECV_TIMEOUT;
use crate::support::matrix::{V3, bodies, get, join, ok, post, register};
use crate::support::relay::Relay;
use crate::support::{DOMAIN, NodeProcess, Rt, sm_endpoint};

/// How long the test waits for what the outage delays: an operation on the unreachable
/// database fails within the pool's 5 s acquire timeout; a retry comes a second later.
const OUTAGE_WAIT: Duration = Duration::from_secs(30);

/// `hyperty` of `rt` subscribes to `object`'s changes; the answer's code.
async fn subscribe(rt: &mut Rt, hyperty: &str, object: &str) -> Value {
    let answer = rt
        .request(
            json!({"type": "subscribe", "from": hyperty, "to": sm_endpoint(),
            "body": {"resources": [format!("{object}/changes")]}}),
        )
        .await;
    answer["body"]["code"].clone()
}

/// The process id of the backend of `database` waiting for a lock to read `bridged_objects`
/// (the bridge's), once there is one.
async fn backend_waiting_on_bridged_objects(url: &str, database: &str) -> i32 {
    let mut conn = PgConnection::connect(url).await.unwrap();
    let deadline = Instant::now() + RECV_TIMEOUT;
    loop {
        let pid: Option<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock' \
             AND query LIKE '%FROM bridged_objects%'",
        )
        .bind(database)
        .fetch_optional(&mut conn)
        .await
        .unwrap();
        if let Some(pid) = pid {
            conn.close().await.unwrap();
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "the bridge never read bridged_objects"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn text(hyperty: &str, object: &str, id: u64, body: &str) -> Value {
    json!({"id": id, "type": "update", "from": hyperty, "to": format!("{object}/changes"),
        "body": {"value": {"msgtype": "m.text", "body": body}}})
}

#[tokio::test]
async fn an_update_the_database_fails_is_answered_503_and_a_subscription_is_bridged_once_it_serves_again()
 {
    let url = fresh_database().await;
    let options: PgConnectOptions = url.parse().unwrap();
    let target = tokio::net::lookup_host(format!("{}:{}", options.get_host(), options.get_port()))
        .await
        .unwrap()
        .next()
        .unwrap();
    let relay = Relay::start(target).await;
    let (_, database) = url.rsplit_once('/').unwrap();
    let through_relay = format!(
        "postgres://{}@127.0.0.1:{}/{database}",
        options.get_username(),
        relay.addr().port()
    );
    let dir = TempDir::new().unwrap();
    let mut node = NodeProcess::spawn(dir.path(), &[("RETHINK_STORE__URL", &through_relay)]).await;
    let alice = register(&node, "alice").await;
    let mut rt = node.open_rt("rt-outage").await;
    let hyperty = rt.allocate(1).await.remove(0);
    // One object's room is made before the outage, with alice in it.
    let before = format!("comm://{DOMAIN}/before-outage");
    assert_eq!(subscribe(&mut rt, &hyperty, &before).await, 200);
    let room = room_within(&node, &alice, "before-outage", RECV_TIMEOUT).await;
    join(&node, &alice, &room).await;
    rt.send(&text(&hyperty, &before, 70, "first")).await;
    assert_eq!(
        bodies(&wait_for_messages(&node, &alice, &room, 1).await),
        ["first"]
    );

    relay.set_down(true);
    // The room cannot store the update: 503, and nothing of the database's error.
    rt.send(&text(&hyperty, &before, 71, "lost")).await;
    let answer = rt.try_recv(OUTAGE_WAIT).await.expect("the update's answer");
    assert_eq!(answer["type"], "response", "{answer}");
    assert_eq!(answer["id"], 71, "{answer}");
    assert_eq!(answer["body"]["code"], 503, "{answer}");
    let why = answer["body"]["description"].as_str().unwrap();
    assert!(why.contains("retry"), "{why}");
    assert!(!why.contains("pool"), "{why}");
    relay.set_down(false);

    // A subscription to an object without a room, answered (committed) before the database
    // fails the bridge: the bridge's read of the object's room waits behind a lock the test
    // holds, then its connection ends (terminated by the server's administrator, SQLSTATE
    // 57P01: the database not serving).
    let mut locker = PgConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut locker).await.unwrap();
    sqlx::query("LOCK TABLE bridged_objects IN ACCESS EXCLUSIVE MODE")
        .execute(&mut locker)
        .await
        .unwrap();
    let during = format!("comm://{DOMAIN}/during-outage");
    assert_eq!(subscribe(&mut rt, &hyperty, &during).await, 200);
    let waiting = backend_waiting_on_bridged_objects(&url, database).await;
    let mut admin = PgConnection::connect(&url).await.unwrap();
    let ended: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(waiting)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert!(ended);
    node.wait_for_log("bridging a bus message to Matrix failed")
        .await;
    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();

    let made = room_within(&node, &alice, "during-outage", OUTAGE_WAIT).await;
    ok(post(
        &node,
        &format!("{V3}/rooms/{made}/join"),
        &alice,
        &json!({}),
    )
    .await);
    let members = ok(get(&node, &format!("{V3}/rooms/{made}/joined_members"), &alice).await);
    let virtual_user = format!("@_hyperty_{}:{DOMAIN}", hyperty.rsplit('/').next().unwrap());
    assert!(
        members["joined"]
            .as_object()
            .unwrap()
            .contains_key(&virtual_user),
        "{members}"
    );
    // The first object's room takes updates again.
    rt.send(&text(&hyperty, &before, 72, "after")).await;
    assert_eq!(
        bodies(&wait_for_messages(&node, &alice, &room, 2).await),
        ["first", "after"]
    );
}
