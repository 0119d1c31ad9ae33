//! The listener's limits over raw TCP: clients trickling a request head are closed by the node
//! at the header deadline while others are served, an idle kept-alive connection is closed at
//! the keep-alive deadline (not the header one), and beyond `server.max_connections` a new
//! connection waits until another closes.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::support::{TestNode, get};

/// Upper bound for anything a test waits for: reaching it fails the test.
const GUARD: Duration = Duration::from_secs(20);

/// Whether the node closed the connection: a read gives EOF or a reset.
async fn closed_by_node(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return true,
            Ok(_) => {}
        }
    }
}

/// Sends `GET /healthz ...` one byte every `every` and never finishes the head; returns how long
/// after connecting the node closed the connection.
async fn trickle(node_addr: std::net::SocketAddr, every: Duration) -> Duration {
    let mut s = TcpStream::connect(node_addr).await.expect("connect");
    let started = Instant::now();
    let head = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut next = head.iter().cycle();
    let mut buf = [0u8; 64];
    loop {
        let byte = [*next.next().expect("cycle")];
        if s.write_all(&byte).await.is_err() {
            return started.elapsed();
        }
        // The client's own pace: the signal awaited is the node's EOF or reset.
        tokio::select! {
            read = s.read(&mut buf) => match read {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(n) => panic!("the node answered an incomplete head: {:?}", &buf[..n]),
            },
            () = tokio::time::sleep(every) => {}
        }
    }
}

#[tokio::test]
async fn slow_header_clients_are_closed_at_the_header_deadline_while_others_are_served() {
    let header = Duration::from_millis(800);
    let node = TestNode::spawn_with(|c| {
        c.server.header_timeout = header;
        c.server.keepalive_timeout = Duration::from_secs(60);
    })
    .await;
    let addr = node.addr();
    let slow: Vec<_> = (0..100)
        .map(|_| tokio::spawn(trickle(addr, Duration::from_millis(100))))
        .collect();
    // Served meanwhile (each answer is the signal).
    for _ in 0..5 {
        assert_eq!(get(&node, "/healthz").await.0, 200);
    }
    for task in slow {
        let lived = tokio::time::timeout(GUARD, task)
            .await
            .expect("the node closes a slow-header connection")
            .expect("trickle task");
        assert!(
            lived >= header - Duration::from_millis(50) && lived < header + Duration::from_secs(3),
            "closed after {lived:?}, the header deadline is {header:?}"
        );
    }
    assert_eq!(get(&node, "/healthz").await.0, 200);
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_at_the_header_deadline() {
    let header = Duration::from_millis(500);
    let node = TestNode::spawn_with(|c| c.server.header_timeout = header).await;
    let mut s = TcpStream::connect(node.addr()).await.unwrap();
    let started = Instant::now();
    assert!(
        tokio::time::timeout(GUARD, closed_by_node(&mut s))
            .await
            .expect("closed in time")
    );
    assert!(started.elapsed() >= header - Duration::from_millis(50));
}

/// Reads one HTTP response with a `content-length` body; returns its status.
async fn read_response(s: &mut TcpStream) -> u16 {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).await.expect("read");
        assert!(n > 0, "connection closed before a full response");
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .expect("content-length");
            if body.len() >= length {
                return head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .expect("status");
            }
        }
    }
}

const KEEP_ALIVE_GET: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_at_the_keepalive_deadline() {
    let header = Duration::from_millis(300);
    let keepalive = Duration::from_secs(2);
    let node = TestNode::spawn_with(|c| {
        c.server.header_timeout = header;
        c.server.keepalive_timeout = keepalive;
    })
    .await;
    let mut s = TcpStream::connect(node.addr()).await.unwrap();
    // Two requests on one connection: it is kept alive.
    for _ in 0..2 {
        s.write_all(KEEP_ALIVE_GET).await.unwrap();
        assert_eq!(read_response(&mut s).await, 200);
    }
    let idle_since = Instant::now();
    assert!(
        tokio::time::timeout(GUARD, closed_by_node(&mut s))
            .await
            .expect("closed in time")
    );
    let idle = idle_since.elapsed();
    assert!(
        idle >= keepalive - Duration::from_millis(100) && idle < keepalive + Duration::from_secs(3),
        "closed after {idle:?} idle; keep-alive deadline {keepalive:?}, header {header:?}"
    );
}

#[tokio::test]
async fn beyond_max_connections_a_new_connection_waits_until_one_closes() {
    let node = TestNode::spawn_with(|c| c.server.max_connections = 2).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(node.addr()).await.unwrap();
        s.write_all(KEEP_ALIVE_GET).await.unwrap();
        assert_eq!(read_response(&mut s).await, 200, "accepted and served");
        held.push(s);
    }
    // The third connects (the kernel's backlog) and asks.
    let mut third = TcpStream::connect(node.addr()).await.unwrap();
    third.write_all(KEEP_ALIVE_GET).await.unwrap();
    // A round trip on a held connection after the third asked: the node is serving, yet the
    // third has no answer (it was not accepted).
    held[0].write_all(KEEP_ALIVE_GET).await.unwrap();
    assert_eq!(read_response(&mut held[0]).await, 200);
    let mut probe = [0u8; 1];
    assert!(
        matches!(third.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the third connection was answered while two were held"
    );
    // A slot frees: the third is accepted and answered.
    drop(held.remove(0));
    let status = tokio::time::timeout(GUARD, read_response(&mut third))
        .await
        .expect("answered once a slot is free");
    assert_eq!(status, 200);
}
