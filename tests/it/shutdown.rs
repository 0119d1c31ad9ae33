//! SIGTERM under load, with the node's real program as a child process: it exits 0 within
//! `server.shutdown_timeout_secs` (plus a margin) even with WebSocket connections that do not
//! read or are half-closed, and with `/sync` long-polls in flight; and everything it
//! acknowledged before is there after a restart (bus messages replayed to resumed sessions,
//! committed Matrix events readable).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_tungstenite::connect_async;

use crate::support::client::Plain;
use crate::support::{NodeProcess, Rt};

/// What the node may take beyond its shutdown deadline: dropping what is left (1 s), the final
/// flush, and the process's own end.
const MARGIN: Duration = Duration::from_secs(4);
/// How long a frame or answer that must come may take.
const WAIT: Duration = Duration::from_secs(10);

async fn connect(node: &NodeProcess, name: &str) -> Rt<Plain> {
    let (ws, _) = connect_async(node.ws_url()).await.expect("connect");
    Rt::from_ws(ws, name)
}

async fn open(node: &NodeProcess, name: &str) -> Rt<Plain> {
    let mut rt = connect(node, name).await;
    let resp = rt.open_session(json!({})).await;
    assert_eq!(resp["body"]["code"], 200, "open: {resp}");
    rt
}

/// Re-opens `url`'s session (resume secret `token`) from its first frame; returns the ids of
/// the frames replayed, reading until every id in `expected` was seen.
async fn replay(node: &NodeProcess, url: &str, token: &str, expected: &BTreeSet<u64>) {
    let mut rt = connect(node, "resumer").await;
    rt.url = url.to_owned();
    let reopen = json!({"id": "reopen", "type": "re-open", "from": url, "to": "mn:/session",
        "body": {"runtimeToken": token, "lastSeq": 0}});
    rt.send(&reopen).await;
    let mut seen = BTreeSet::new();
    while !expected.is_subset(&seen) {
        let Some(v) = rt.try_recv(WAIT).await else {
            let missing: Vec<_> = expected.difference(&seen).take(10).collect();
            panic!(
                "{} of {} acknowledged messages to {url} missing after the restart, e.g. {missing:?}",
                expected.difference(&seen).count(),
                expected.len()
            );
        };
        if v["id"] == "reopen" {
            assert_eq!(v["body"]["code"], 200, "re-open: {v}");
            assert_eq!(v["body"]["value"]["resumed"], true, "{v}");
        } else if let Some(id) = v["id"].as_u64() {
            seen.insert(id);
        }
    }
}

/// Sends `msgs` from `from`, then a marker to `from` itself; `true` once the marker came back.
/// A session reads its frames in order and reads the next one only after the previous one was
/// accepted (committed, for a recipient without a connection): the marker's delivery is the
/// node's acknowledgement of everything sent before it.
async fn send_acknowledged(rt: &mut Rt<Plain>, from: &str, msgs: &[Value], marker: u64) -> bool {
    for msg in msgs {
        if !rt.try_send(msg).await {
            return false;
        }
    }
    let mark = json!({"id": marker, "type": "PING", "from": from, "to": from});
    if !rt.try_send(&mark).await {
        return false;
    }
    match rt.try_recv(WAIT).await {
        None => false,
        Some(v) if v["id"] == marker => true,
        Some(v) => panic!("unexpected frame: {v}"),
    }
}

/// A runtime that sends `PING`s from its hyperty `from` to `to`, 20 at a time, until its
/// connection ends; returns the ids acknowledged.
async fn send_until_closed(
    mut rt: Rt<Plain>,
    from: String,
    to: String,
    first_id: u64,
    acked: Arc<AtomicUsize>,
    progress: Arc<Notify>,
) -> BTreeSet<u64> {
    let mut ok = BTreeSet::new();
    let mut next = first_id;
    loop {
        let ids: Vec<u64> = (next..next + 20).collect();
        let msgs: Vec<Value> = ids
            .iter()
            .map(|id| json!({"id": id, "type": "PING", "from": from, "to": to, "body": {"n": id}}))
            .collect();
        let marker = next + 20;
        next += 21;
        if !send_acknowledged(&mut rt, &from, &msgs, marker).await {
            return ok;
        }
        ok.extend(ids);
        acked.fetch_add(20, Ordering::Relaxed);
        progress.notify_one();
    }
}

#[tokio::test]
async fn sigterm_under_websocket_load_exits_in_time_and_loses_nothing_acknowledged() {
    let deadline = Duration::from_secs(2);
    let dir = tempfile::TempDir::new().unwrap();
    let mut node = NodeProcess::spawn(
        dir.path(),
        &[
            ("RETHINK_SERVER__SHUTDOWN_TIMEOUT_SECS", "2"),
            ("RETHINK_SESSION__OUTBOX_MAX_BYTES", "67108864"),
            ("RETHINK_SESSION__OUTBOX_MAX_MESSAGES", "100000"),
        ],
    )
    .await;

    // A recipient that went away (resumable) and one that stays connected but never reads.
    let mut away = open(&node, "rt-away").await;
    let away_addr = away.allocate(1).await.remove(0);
    let (away_url, away_token) = (away.url.clone(), away.token.clone().unwrap());
    drop(away);
    let mut stuck = open(&node, "rt-stuck").await;
    let stuck_addr = stuck.allocate(1).await.remove(0);
    let (stuck_url, stuck_token) = (stuck.url.clone(), stuck.token.clone().unwrap());

    // Fill the stuck runtime's socket: 25 MB it never reads, so the node's writes to it block.
    let mut flooder = open(&node, "rt-flooder").await;
    let flood_from = flooder.allocate(1).await.remove(0);
    let filler = "x".repeat(100 * 1024);
    let to_stuck_flood: Vec<Value> = (1..=250u64)
        .map(|id| {
            json!({"id": id, "type": "PING", "from": flood_from, "to": stuck_addr,
            "body": {"filler": filler}})
        })
        .collect();
    assert!(send_acknowledged(&mut flooder, &flood_from, &to_stuck_flood, 999).await);
    let mut to_stuck: BTreeSet<u64> = (1..=250).collect();

    // Half-closed connections: open sessions whose runtimes then shut their sending side.
    let mut half_closed = Vec::new();
    for i in 0..20 {
        let mut rt = open(&node, &format!("rt-half-{i}")).await;
        rt.shutdown_write().await;
        half_closed.push(rt);
    }

    // Twenty runtimes sending to both recipients until the node goes away.
    let acked = Arc::new(AtomicUsize::new(0));
    let progress = Arc::new(Notify::new());
    let mut senders = Vec::new();
    for i in 0..20u64 {
        let mut rt = open(&node, &format!("rt-sender-{i}")).await;
        let from = rt.allocate(1).await.remove(0);
        let to = if i % 4 == 0 {
            stuck_addr.clone()
        } else {
            away_addr.clone()
        };
        senders.push((
            i % 4 == 0,
            tokio::spawn(send_until_closed(
                rt,
                from,
                to,
                1_000_000 * (i + 1),
                Arc::clone(&acked),
                Arc::clone(&progress),
            )),
        ));
    }
    while acked.load(Ordering::Relaxed) < 1_000 {
        tokio::time::timeout(WAIT, progress.notified())
            .await
            .expect("the senders make progress");
    }

    terminate_in_time(&mut node, deadline + MARGIN).await;
    let log = node.drain_log().await.join("\n");
    assert!(log.contains("rethink-node stopped"), "{log}");
    drop((flooder, stuck, half_closed));

    let mut to_away = BTreeSet::new();
    for (stuck_target, task) in senders {
        let ids = task.await.expect("sender");
        if stuck_target {
            to_stuck.extend(ids);
        } else {
            to_away.extend(ids);
        }
    }
    assert!(to_away.len() >= 100, "{} acknowledged", to_away.len());

    let node = node.restart().await;
    replay(&node, &away_url, &away_token, &to_away).await;
    replay(&node, &stuck_url, &stuck_token, &to_stuck).await;
}

/// One HTTP/1.1 request (`Connection: close`) with an optional JSON body and access token; the
/// status and JSON body, or `None` if the node is not there (any more).
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Option<(u16, Value)> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    head.push_str("\r\n");
    head.push_str(&body);
    s.write_all(head.as_bytes()).await.ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.ok()?;
    parse_response(&out)
}

fn parse_response(raw: &[u8]) -> Option<(u16, Value)> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            if n == 0 {
                break;
            }
            out.push_str(after.get(..n)?);
            rest = after[n..].trim_start_matches("\r\n");
        }
        out
    } else {
        body.to_owned()
    };
    Some((status, serde_json::from_str(&body).unwrap_or(Value::Null)))
}

const V3: &str = "/_matrix/client/v3";

/// Registers `name` through the dummy flow; its access token.
async fn register(addr: SocketAddr, name: &str) -> String {
    let req = json!({"username": name, "password": format!("pw-{name}")});
    let path = format!("{V3}/register");
    let (status, uia) = http(addr, "POST", &path, None, Some(&req)).await.unwrap();
    assert_eq!(status, 401, "{uia}");
    let mut req = req;
    req["auth"] = json!({"type": "m.login.dummy", "session": uia["session"]});
    let (status, done) = http(addr, "POST", &path, None, Some(&req)).await.unwrap();
    assert_eq!(status, 200, "{done}");
    done["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn sigterm_under_sync_long_polls_exits_in_time_and_keeps_committed_events() {
    let deadline = Duration::from_secs(3);
    let dir = tempfile::TempDir::new().unwrap();
    let mut node = NodeProcess::spawn(
        dir.path(),
        &[("RETHINK_SERVER__SHUTDOWN_TIMEOUT_SECS", "3")],
    )
    .await;
    let addr = node.addr();
    let alice = register(addr, "alice").await;
    let bob = register(addr, "bob").await;
    let (status, created) = http(
        addr,
        "POST",
        &format!("{V3}/createRoom"),
        Some(&alice),
        Some(&json!({})),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{created}");
    let room = created["room_id"].as_str().unwrap().to_owned();
    let (status, first) = http(
        addr,
        "GET",
        &format!("{V3}/sync?timeout=0"),
        Some(&bob),
        None,
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{first}");
    let since = first["next_batch"].as_str().unwrap().to_owned();

    // Bob's long-polls: nothing happens for him, so they wait (up to 60 s) until the shutdown.
    let mut polls = Vec::new();
    for _ in 0..16 {
        let path = format!("{V3}/sync?since={since}&timeout=60000");
        let bob = bob.clone();
        polls.push(tokio::spawn(async move {
            http(addr, "GET", &path, Some(&bob), None).await
        }));
    }
    // Alice sends until the node goes away.
    let acked = Arc::new(AtomicUsize::new(0));
    let progress = Arc::new(Notify::new());
    let sender = {
        let (alice, room, acked, progress) = (
            alice.clone(),
            room.clone(),
            Arc::clone(&acked),
            Arc::clone(&progress),
        );
        tokio::spawn(async move {
            let mut events = Vec::new();
            for txn in 0.. {
                let path = format!("{V3}/rooms/{room}/send/m.room.message/t{txn}");
                let content = json!({"msgtype": "m.text", "body": format!("message {txn}")});
                match http(addr, "PUT", &path, Some(&alice), Some(&content)).await {
                    Some((200, sent)) => {
                        events.push(sent["event_id"].as_str().unwrap().to_owned());
                        acked.fetch_add(1, Ordering::Relaxed);
                        progress.notify_one();
                    }
                    Some(_) => {}
                    None => break,
                }
            }
            events
        })
    };
    while acked.load(Ordering::Relaxed) < 30 {
        tokio::time::timeout(WAIT, progress.notified())
            .await
            .expect("alice's sends are answered");
    }

    terminate_in_time(&mut node, deadline + MARGIN).await;
    let mut answered = 0;
    for poll in polls {
        // A long-poll the node had read is answered (empty); one it never read finds no node.
        if let Some((status, body)) = poll.await.unwrap() {
            assert_eq!(status, 200, "{body}");
            answered += 1;
        }
    }
    assert!(answered > 0, "no long-poll was in flight at the SIGTERM");
    let events = sender.await.unwrap();

    let node = node.restart().await;
    for event in &events {
        let (status, body) = http(
            node.addr(),
            "GET",
            &format!("{V3}/rooms/{room}/event/{event}"),
            Some(&alice),
            None,
        )
        .await
        .unwrap();
        assert_eq!(
            status, 200,
            "event {event} acknowledged before SIGTERM: {body}"
        );
    }
}

/// Sends SIGTERM and asserts the node exits successfully within `within`.
async fn terminate_in_time(node: &mut NodeProcess, within: Duration) {
    let term = Instant::now();
    node.terminate();
    let status = node
        .wait_exit(within)
        .await
        .unwrap_or_else(|| panic!("still running {:?} after SIGTERM", term.elapsed()));
    assert!(status.success(), "exit status {status}");
}
