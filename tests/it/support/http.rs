//! Plain HTTP against the node: a minimal GET, and reading its Prometheus metrics.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::TestNode;
use super::client::RECV_TIMEOUT;
use super::matrix::Served;

/// A minimal HTTP/1.1 GET: status code and body.
pub(crate) async fn get(node: &TestNode, path: &str) -> (u16, String) {
    get_at(node.addr(), path).await
}

/// A minimal HTTP/1.1 GET to any address (a node started as a child process, say).
pub(crate) async fn get_at(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    exchange(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// A minimal HTTP/1.1 POST without a body to any address, with `Authorization: Bearer
/// <token>`; status and body.
pub(crate) async fn post_at(addr: std::net::SocketAddr, path: &str, token: &str) -> (u16, String) {
    exchange(
        addr,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n"
        ),
    )
    .await
}

/// Writes `request` on a new connection to `addr` and reads the answer to its end: status and
/// body.
async fn exchange(addr: std::net::SocketAddr, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request.as_bytes()).await.expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The value of metric `name` (with its labels, if any) in a Prometheus text exposition.
pub(crate) fn metric(text: &str, name: &str) -> f64 {
    metric_if_any(text, name).unwrap_or_else(|| panic!("metric {name} missing in:\n{text}"))
}

/// The value of metric `name`, if the exposition has it (a labelled counter appears once
/// counted).
pub(crate) fn metric_if_any(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Waits until metric `name` reads `value`; panics after [`RECV_TIMEOUT`]. A bounded wait on a
/// state the node publishes (never a guess at how long something takes): it reads the metric
/// again and again, the pause between two reads only sets how soon it notices.
pub(crate) async fn wait_for_metric(node: &impl Served, name: &str, value: f64) {
    let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
    loop {
        let (_, text) = get_at(node.addr(), "/metrics").await;
        let now = metric_if_any(&text, name);
        if now == Some(value) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metric {name} is {now:?}, never reached {value}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
