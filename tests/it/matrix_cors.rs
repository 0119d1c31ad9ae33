//! CORS on the Client-Server API (the spec requires it of every homeserver, for web clients):
//! the headers on answers of every kind, and preflight requests answered before routing and
//! authentication.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::TestNode;
use crate::support::matrix::{V3, register};

/// One raw request: status, lowercased header lines, body.
async fn raw(node: &TestNode, method: &str, path: &str, extra: &str) -> (u16, Vec<String>, String) {
    let mut s = TcpStream::connect(node.addr()).await.expect("connect");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nOrigin: https://app.example.org\r\n\
         Connection: close\r\n{extra}\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    let (head, body) = out.split_once("\r\n\r\n").expect("a head");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers = lines.map(str::to_ascii_lowercase).collect();
    (status, headers, body.to_owned())
}

fn assert_cors(headers: &[String], what: &str) {
    for expected in [
        "access-control-allow-origin: *",
        "access-control-allow-methods: get, post, put, delete, options",
        "access-control-allow-headers: x-requested-with, content-type, authorization",
    ] {
        assert!(
            headers.iter().any(|h| h == expected),
            "{what}: no `{expected}` in {headers:?}"
        );
    }
}

#[tokio::test]
async fn every_kind_of_answer_carries_the_cors_headers() {
    let node = TestNode::spawn().await;
    let token = register(&node, "alice").await;

    let (status, headers, _) = raw(&node, "GET", "/_matrix/client/versions", "").await;
    assert_eq!(status, 200);
    assert_cors(&headers, "versions");

    let auth = format!("Authorization: Bearer {token}\r\n");
    let (status, headers, body) = raw(&node, "GET", &format!("{V3}/account/whoami"), &auth).await;
    assert_eq!(status, 200, "{body}");
    assert_cors(&headers, "whoami");

    let (status, headers, body) = raw(&node, "GET", &format!("{V3}/account/whoami"), "").await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("M_MISSING_TOKEN"), "{body}");
    assert_cors(&headers, "a 401");

    let (status, headers, body) =
        raw(&node, "GET", "/_matrix/client/v3/no/such/endpoint", "").await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("M_UNRECOGNIZED"), "{body}");
    assert_cors(&headers, "a 404");
}

#[tokio::test]
async fn preflights_are_answered_without_a_token_on_any_matrix_path() {
    let node = TestNode::spawn().await;
    let preflight = "Access-Control-Request-Method: PUT\r\n\
                     Access-Control-Request-Headers: authorization, content-type\r\n";
    for path in [
        format!("{V3}/rooms/!r:localhost/send/m.room.message/t1"),
        format!("{V3}/sync"),
        "/_matrix/client/v3/no/such/endpoint".to_owned(),
    ] {
        let (status, headers, body) = raw(&node, "OPTIONS", &path, preflight).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(body, "{}", "{path}");
        assert_cors(&headers, &path);
    }
    // Not the other routes: the WebSocket endpoint and the node's own pages are not the
    // Matrix API.
    let (_, headers, _) = raw(&node, "GET", "/healthz", "").await;
    assert!(
        !headers.iter().any(|h| h.starts_with("access-control-")),
        "{headers:?}"
    );
}
