//! TLS: the node serves `wss://` with a certificate from its configuration; a rustls client
//! that trusts that (self-signed, generated here) certificate opens a session and routes.

use std::sync::Arc;
use std::time::Duration;

use rethink_node::config::TlsConfig;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::client_async;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::error::{Error as WsError, ProtocolError};

use crate::support::{Rt, TestNode};

async fn tls_client(
    node: &TestNode,
    cert: &CertificateDer<'static>,
    name: &str,
) -> Rt<TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).expect("trust the test certificate");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(node.addr()).await.expect("tcp");
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS handshake with the node");
    let request = format!("wss://localhost:{}/ws", node.addr().port())
        .into_client_request()
        .expect("request");
    let (ws, _) = client_async(request, tls)
        .await
        .expect("WebSocket over TLS");
    Rt::from_ws(ws, name)
}

/// A plain (not TLS) client reaches the TLS port, but gets no HTTP answer: the node takes its
/// request for a broken TLS handshake, answers with a TLS alert at most, and closes. A TLS
/// client on the same port then works, so the failure is not the port's.
#[tokio::test]
async fn plain_connections_to_a_tls_port_fail() {
    let (node, cert, _dir) = tls_node().await;

    // Something listens (the connection is accepted, not refused) ...
    let mut tcp = TcpStream::connect(node.addr())
        .await
        .expect("the TLS port accepts TCP connections");
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        node.addr()
    );
    tcp.write_all(request.as_bytes()).await.expect("write");
    // ... and ends the connection (end of stream or reset) after at most a TLS record.
    let mut answer = Vec::new();
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 1024];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    // An HTTP answer (a plain server's) fails below without waiting for more.
                    if answer.starts_with(b"HTTP/") {
                        return Ok(());
                    }
                }
                Err(e) => return Err(e.kind()),
            }
        }
    })
    .await
    .expect("the node closes a plain connection to its TLS port within 10 s");
    // A reset is an end too: the node closing with the unread rest of the request in its
    // buffer sends RST rather than FIN.
    assert!(
        matches!(end, Ok(()) | Err(std::io::ErrorKind::ConnectionReset)),
        "the node ends the connection: {end:?}; answer {answer:02x?}"
    );
    // A TLS record: alert (21), then a version, length 2, level fatal (2), and a description.
    assert!(
        answer.len() == 7 && answer[0] == 21 && answer[3..6] == [0, 2, 2],
        "no HTTP answer, one fatal TLS alert: {answer:02x?} ({:?})",
        String::from_utf8_lossy(&answer)
    );

    // A plain WebSocket client fails on that answer (not HTTP), not on a refused connection.
    let plain = tokio_tungstenite::connect_async(format!("ws://{}/ws", node.addr())).await;
    assert!(
        matches!(
            plain,
            Err(WsError::Protocol(ProtocolError::HttparseError(_)))
        ),
        "a plain WebSocket gets no HTTP answer from the TLS port: {:?}",
        plain.map(|_| "connected")
    );

    // The same port speaks TLS.
    let mut rt = tls_client(&node, &cert, "rt-tls-after-plain").await;
    assert_eq!(rt.open_session(json!({})).await["body"]["code"], 200);
}

async fn tls_node() -> (TestNode, CertificateDer<'static>, tempfile::TempDir) {
    tls_node_with(|_| {}).await
}

async fn tls_node_with(
    edit: impl FnOnce(&mut rethink_node::Config),
) -> (TestNode, CertificateDer<'static>, tempfile::TempDir) {
    let key = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let dir = tempfile::TempDir::new().expect("dir");
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, key.cert.pem()).expect("write cert");
    std::fs::write(&key_path, key.signing_key.serialize_pem()).expect("write key");
    let node = TestNode::spawn_with(|c| {
        c.tls = Some(TlsConfig {
            cert: cert_path.clone(),
            key: key_path.clone(),
        });
        edit(c);
    })
    .await;
    (node, key.cert.der().clone(), dir)
}

#[tokio::test]
async fn a_stalled_handshake_is_dropped_in_time_and_handshakes_in_progress_are_bounded() {
    let within = Duration::from_millis(600);
    let (node, cert, _dir) = tls_node_with(|c| {
        c.server.max_tls_handshakes = 1;
        c.server.tls_handshake_timeout = within;
        c.server.header_timeout = Duration::from_secs(30);
    })
    .await;
    // A client that connects and never starts its handshake holds the one handshake slot.
    let mut stalled = TcpStream::connect(node.addr()).await.expect("tcp");
    let started = Instant::now();
    // The next client's handshake can only begin when the stalled one is dropped.
    let mut next = tls_client(&node, &cert, "rt-tls-next").await;
    let waited = started.elapsed();
    assert!(
        waited >= within - Duration::from_millis(50),
        "a second handshake ran after {waited:?} while one was in progress (limit 1)"
    );
    assert_eq!(next.open_session(json!({})).await["body"]["code"], 200);
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(10), stalled.read(&mut buf))
        .await
        .expect("the node drops a stalled handshake");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

#[tokio::test]
async fn sessions_work_over_tls() {
    let (node, cert, _dir) = tls_node().await;
    let mut a = tls_client(&node, &cert, "rt-tls-a").await;
    let mut b = tls_client(&node, &cert, "rt-tls-b").await;
    for rt in [&mut a, &mut b] {
        assert_eq!(rt.open_session(json!({})).await["body"]["code"], 200);
    }
    let fa = a.allocate(1).await.remove(0);
    let fb = b.allocate(1).await.remove(0);
    a.send(&json!({"id": 1, "type": "PING", "from": fa, "to": fb}))
        .await;
    assert_eq!(b.recv().await["id"], 1);
}
