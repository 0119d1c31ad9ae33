//! A duty's leader that loses its lock connection (`node/src/appservice/leader.rs`): two nodes
//! on one PostgreSQL database, one of them doing a duty of the whole cluster (pushing an
//! application service's transactions; feeding a connector its Matrix events) while it holds
//! the duty's advisory lock. The test terminates the PostgreSQL backend holding the lock (as a
//! database restart or an administrator would) while both nodes run: the waiting node takes
//! the lock; the old holder notices, stops, and queues for the lock again (shown in `pg_locks`:
//! one holder and one waiter); when the new holder is killed, the old one takes the duty back.
//! Throughout, each item is done once: the service sees each event in one transaction id, the
//! echo connector answers each message once; including the events committed right after the
//! lock was lost, while the old holder has not noticed yet.

use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::PgConnection;

use super::appservice_cluster::{BridgeCluster, pushed_by, the_pusher, until_pushed_more};
use super::cluster::cluster_with;
use super::connector_cluster::calls_by;
use super::connector_feed::{bot_texts_until, register, room_with_the_bot, say, write_config};
use super::support::client::RECV_TIMEOUT;

/// The advisory-lock rows of `key` in the database at `db`: `(pid, granted)`.
const LOCKS: &str = "SELECT pid, granted FROM pg_locks \
     WHERE locktype = 'advisory' AND objsubid = 1 \
     AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
     AND ((classid::bigint << 32) | objid::bigint) = hashtextextended($1, 0)";

async fn locks(db: &str, key: &str) -> Vec<(i32, bool)> {
    let mut conn = PgConnection::connect(db)
        .await
        .expect("connect to the database");
    let rows = sqlx::query_as(LOCKS)
        .bind(key)
        .fetch_all(&mut conn)
        .await
        .expect("read pg_locks");
    conn.close().await.expect("close");
    rows
}

/// Terminates the backend holding the advisory lock `key`, which the other node waits for:
/// the holder's and the waiter's backends.
async fn terminate_holder(db: &str, key: &str) -> (i32, i32) {
    let rows = locks(db, key).await;
    let (held, waiting): (Vec<(i32, bool)>, Vec<_>) = rows.iter().partition(|r| r.1);
    assert_eq!(
        (held.len(), waiting.len()),
        (1, 1),
        "one holder of {key} and one node waiting: {rows:?}"
    );
    terminate(db, held[0].0).await;
    (held[0].0, waiting[0].0)
}

/// Waits until the node that waited (backend `waiter`) holds `key` and the node that lost it
/// waits for it again (on a new backend, not `former`).
async fn until_the_old_holder_queues_again(db: &str, key: &str, (former, waiter): (i32, i32)) {
    let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
    loop {
        let rows = locks(db, key).await;
        let queued = rows.iter().any(|r| !r.1 && r.0 != former && r.0 != waiter);
        if rows.len() == 2 && rows.contains(&(waiter, true)) && queued {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the node that lost {key} does not wait for it again: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_pusher_that_loses_its_lock_stops_and_each_event_is_pushed_once() {
    let key = "rethink.appservice.bridge";
    let mut b = BridgeCluster::start().await;
    for i in 0..4 {
        b.say(i % 2, i).await;
    }
    let mut want: Vec<String> = (0..4).map(|i| format!("m{i}")).collect();
    assert_eq!(bodies(&mut b, 4).await, want, "every event once");
    let pusher = the_pusher(&b.c.nodes).await;

    // Its lock connection is terminated; events committed meanwhile, through both nodes.
    let backends = terminate_holder(&b.c.db, key).await;
    for i in 4..8 {
        b.say(i % 2, i).await;
    }
    until_the_old_holder_queues_again(&b.c.db, key, backends).await;
    // The other node holds the lock now; it pushes what comes next.
    for i in 8..10 {
        b.say(i % 2, i).await;
    }
    want = (4..10).map(|i| format!("m{i}")).collect();
    assert_eq!(bodies(&mut b, 6).await, want, "every event once");
    until_pushed_more(&b.c.nodes[1 - pusher], 0.0).await;

    // The new holder dies: the first one takes the duty back, from the shared queue (not from
    // where it stood when it lost the lock).
    let before = pushed_by(&b.c.nodes[pusher]).await;
    b.c.nodes[1 - pusher].kill().await;
    for i in 10..13 {
        b.say(pusher, i).await;
    }
    want = (10..13).map(|i| format!("m{i}")).collect();
    assert_eq!(bodies(&mut b, 3).await, want, "once each, after the kill");
    until_pushed_more(&b.c.nodes[pusher], before).await;
}

/// The bodies of the next `n` messages the service receives, sorted (sent through both nodes);
/// a transaction given again under its id is skipped (as the specification asks of a service:
/// a pusher killed or stopped after its push did not record the answer), a message given again
/// in another transaction is not.
async fn bodies(b: &mut BridgeCluster, n: usize) -> Vec<String> {
    let mut got: Vec<String> = b
        .service
        .messages_deduplicated(n)
        .await
        .into_iter()
        .map(|(_, body)| body)
        .collect();
    got.sort_by_key(|m| m[1..].parse::<u32>().unwrap_or(0));
    got
}

/// Says `m<i>` (transaction `t<i>`) for each `i` of `range` into `room`, through node `i % 2`.
async fn say_through_both(
    addrs: [std::net::SocketAddr; 2],
    alice: &str,
    room: &str,
    range: std::ops::RangeInclusive<usize>,
) {
    for i in range {
        say(
            addrs[i % 2],
            alice,
            room,
            &format!("t{i}"),
            &format!("m{i}"),
        )
        .await;
    }
}

#[tokio::test]
async fn a_feeder_that_loses_its_lock_stops_and_each_message_is_answered_once() {
    let key = "rethink.connector-feed.echo";
    let etc = tempfile::tempdir().expect("tempdir");
    let config = write_config(etc.path());
    let mut c = cluster_with(2, &[("RETHINK_CONFIG", &config)]).await;
    let addrs = [c.nodes[0].addr(), c.nodes[1].addr()];
    let alice = register(addrs[0], "alice").await;
    let room = room_with_the_bot(addrs[0], &alice).await;
    let echoes = |n: usize| (1..=n).map(|i| format!("echo: m{i}")).collect::<Vec<_>>();
    let until =
        |n: usize| move |t: &[String]| t.last().is_some_and(|l| *l == format!("echo: m{n}"));

    say_through_both(addrs, &alice, &room, 1..=2).await;
    bot_texts_until(addrs[0], &alice, &room, until(2)).await;
    let calls = [calls_by(&c.nodes[0]).await, calls_by(&c.nodes[1]).await];
    let feeder = usize::from(calls[1] > calls[0]);

    // Its lock connection is terminated; messages said meanwhile, through both nodes.
    let backends = terminate_holder(&c.db, key).await;
    say_through_both(addrs, &alice, &room, 3..=5).await;
    until_the_old_holder_queues_again(&c.db, key, backends).await;
    let other_before = calls_by(&c.nodes[1 - feeder]).await;
    say_through_both(addrs, &alice, &room, 6..=7).await;
    let texts = bot_texts_until(addrs[0], &alice, &room, until(7)).await;
    assert_eq!(texts, echoes(7), "every message answered once, in order");
    assert!(
        calls_by(&c.nodes[1 - feeder]).await > other_before,
        "the other node feeds its instance now"
    );

    // The new feeder dies: the first node takes the feed back from the stored position. The
    // last event given to the dead node's instance may come again (at least once).
    c.nodes[1 - feeder].kill().await;
    let survivor = addrs[feeder];
    say(survivor, &alice, &room, "t8", "m8").await;
    let texts = bot_texts_until(survivor, &alice, &room, until(8)).await;
    let (before, after) = texts.split_at(7);
    assert_eq!(before, echoes(7), "nothing lost or doubled before the kill");
    assert!(
        after.iter().all(|t| t == "echo: m7" || t == "echo: m8"),
        "after the kill, at most the last event again, then m8: {after:?}"
    );
    assert_eq!(after.iter().filter(|t| *t == "echo: m8").count(), 1);
}

/// The duty's holder (node 1, feeding the echo connector) is stopped (SIGSTOP) and its lock
/// connection terminated; node 2 *starts* now and finds the lock free. Node 1 resumes: until its
/// next check it still believes it holds the duty. What the code promises: node 2 learns that
/// another node held the lock last (`duty_holders`) and starts the duty only after
/// `TAKE_OVER_AFTER`, by which time node 1 has noticed its loss and stopped, so the two never
/// feed at once: node 2's "holds the duty" comes after node 1's "lock was lost".
#[tokio::test]
async fn a_node_starting_just_after_the_holder_lost_its_lock_waits_for_the_former_holder() {
    let key = "rethink.connector-feed.echo";
    let etc = tempfile::tempdir().expect("tempdir");
    let config = write_config(etc.path());
    let settings = [
        ("RETHINK_CONFIG", config.as_str()),
        // Nobody is found gone while node 1 is stopped.
        ("RETHINK_CLUSTER__MEMBERSHIP_TIMEOUT_MS", "60000"),
    ];
    let mut c = cluster_with(1, &settings).await;
    // Node 1 takes the duty as it starts, its "holds the duty" line maybe before the
    // "listening" line that the start waits for (and reads past): the database shows it
    // instead, the lock held and node 1 recorded as the duty's holder (what node 2 reads).
    let holder = until_held(&c.db, key, None).await;
    until_recorded(&c.db, key).await;

    c.nodes[0].signal("-STOP");
    terminate(&c.db, holder).await;
    c.add_node(&settings).await;
    until_held(&c.db, key, Some(holder)).await;
    c.nodes[0].signal("-CONT");
    let lost = c.nodes[0]
        .wait_for_log(&format!(
            "a duty's lock was lost; waiting for it again duty={key}"
        ))
        .await;
    let took = c.nodes[1]
        .wait_for_log(&format!("this node holds the duty duty={key}"))
        .await;
    // Both processes stamp their lines from the one clock of this machine, when the event
    // happens (not when the test reads the line): the order of the stamps is the order of
    // the events.
    assert!(
        logged_at(&lost) < logged_at(&took),
        "node 2 started the duty before node 1 knew its lock was lost:\n{lost}\n{took}"
    );
}

/// When a node's log line was written: its leading timestamp (`tracing_subscriber`'s default
/// format, RFC 3339 in UTC, e.g. `2026-12-02T07:00:00.123456Z`) as (year, month, day, hour,
/// minute, second, nanosecond), which compare in time order.
fn logged_at(line: &str) -> (u32, u32, u32, u32, u32, u32, u32) {
    let stamp = line.split_whitespace().next().unwrap_or_default();
    let parsed = (|| {
        let (date, time) = stamp.strip_suffix('Z')?.split_once('T')?;
        let mut d = date.splitn(3, '-').map(|n| n.parse::<u32>().ok());
        let (hms, fraction) = time.split_once('.').unwrap_or((time, "0"));
        let mut t = hms.splitn(3, ':').map(|n| n.parse::<u32>().ok());
        if fraction.is_empty()
            || fraction.len() > 9
            || !fraction.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let nanos = format!("{fraction:0<9}").parse().ok()?;
        Some((
            d.next()??,
            d.next()??,
            d.next()??,
            t.next()??,
            t.next()??,
            t.next()??,
            nanos,
        ))
    })();
    parsed.unwrap_or_else(|| panic!("no timestamp at the start of the log line {line:?}"))
}

#[test]
fn reads_the_timestamps_of_log_lines_in_time_order() {
    let line = |stamp: &str| format!("{stamp}  INFO rethink_node::cluster: a duty's lock was lost");
    assert_eq!(
        logged_at(&line("2026-12-02T07:00:00.123456Z")),
        (2026, 12, 2, 7, 0, 0, 123_456_000)
    );
    let order = [
        "2026-12-02T07:00:00.000009Z",
        "2026-12-02T07:00:00.00001Z",
        "2026-12-02T07:00:00.123456Z",
        "2026-12-02T07:00:01.000001Z",
        "2026-12-02T23:59:59.999999Z",
        "2026-12-03T00:00:00.000000Z",
    ];
    for pair in order.windows(2) {
        assert!(
            logged_at(&line(pair[0])) < logged_at(&line(pair[1])),
            "{pair:?}"
        );
    }
    let garbled = std::panic::catch_unwind(|| logged_at("INFO no stamp"));
    assert!(garbled.is_err(), "a line without a timestamp is refused");
}

/// Waits until one backend other than `not` holds the advisory lock `key`; returns it.
async fn until_held(db: &str, key: &str, not: Option<i32>) -> i32 {
    let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
    loop {
        let rows = locks(db, key).await;
        if let Some((pid, _)) = rows.iter().find(|r| r.1 && Some(r.0) != not) {
            return *pid;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nobody new holds {key}: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until a node is recorded as the holder of `key` (`duty_holders`, written under the
/// lock once taken).
async fn until_recorded(db: &str, key: &str) {
    let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
    loop {
        let mut conn = PgConnection::connect(db)
            .await
            .expect("connect to the database");
        let holder: Option<String> =
            sqlx::query_scalar("SELECT node FROM duty_holders WHERE duty = $1")
                .bind(key)
                .fetch_optional(&mut conn)
                .await
                .expect("read duty_holders");
        conn.close().await.expect("close");
        if holder.is_some() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nobody recorded as holding {key}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Terminates the PostgreSQL backend `pid`.
async fn terminate(db: &str, pid: i32) {
    let mut conn = PgConnection::connect(db)
        .await
        .expect("connect to the database");
    let done: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(&mut conn)
        .await
        .expect("pg_terminate_backend");
    assert!(done, "backend {pid} terminated");
    conn.close().await.expect("close");
}
