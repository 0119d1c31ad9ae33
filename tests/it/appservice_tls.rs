//! `https://` service URLs: the node pushes transactions (and pings) over TLS, trusting the web
//! PKI roots and `appservices.ca_file`. A service presenting a certificate the node does not
//! trust gets nothing: the transaction stays queued, the failure is counted
//! (`rethink_appservice_txn_failures_total`) and retried, and once the service presents a trusted
//! certificate the same transaction arrives.

use std::sync::Arc;

use serde_json::json;

use super::appservice_support::{AS_TOKEN, Received, Service, free_port, registration};
use super::support::client::RECV_TIMEOUT;
use super::support::http::{get as http_get, metric_if_any};
use super::support::matrix::{V3, assert_error, ok, post, send_text};
use super::support::node::TestNode;

/// A self-signed certificate for `localhost`, as a server configuration and as PEM.
fn certificate(dir: &std::path::Path, name: &str) -> (Arc<rustls::ServerConfig>, String) {
    let key = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let cert_path = dir.join(format!("{name}.pem"));
    let key_path = dir.join(format!("{name}.key"));
    std::fs::write(&cert_path, key.cert.pem()).expect("write cert");
    std::fs::write(&key_path, key.signing_key.serialize_pem()).expect("write key");
    let config =
        rethink_node::tls::server_config(&cert_path, &key_path).expect("server configuration");
    (Arc::new(config), key.cert.pem())
}

/// Waits until the counter `name` is at least `at_least`; panics after [`RECV_TIMEOUT`].
async fn wait_for_count(node: &TestNode, name: &str, at_least: f64) -> f64 {
    let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
    loop {
        let (_, text) = http_get(node, "/metrics").await;
        let now = metric_if_any(&text, name);
        if let Some(v) = now
            && v >= at_least
        {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metric {name} is {now:?}, never reached {at_least}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn transactions_go_over_tls_and_wait_while_the_certificate_is_not_trusted() {
    let certs = tempfile::tempdir().expect("tempdir");
    let (trusted, trusted_pem) = certificate(certs.path(), "trusted");
    let (untrusted, _) = certificate(certs.path(), "untrusted");
    let ca_file = certs.path().join("ca.pem");
    std::fs::write(&ca_file, trusted_pem).expect("write ca file");

    let port = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("bridge.yaml"),
        registration(
            "bridge",
            Some(&format!("https://localhost:{port}")),
            AS_TOKEN,
            super::appservice_support::HS_TOKEN,
        ),
    )
    .expect("write registration");
    let path = dir.path().to_path_buf();
    let node = TestNode::spawn_with(|c| {
        c.appservices.dir = Some(path);
        c.appservices.initial_backoff = std::time::Duration::from_millis(20);
        c.appservices.max_backoff = std::time::Duration::from_millis(100);
        c.appservices.extra_roots =
            rethink_stubs::tls::load_roots(&ca_file).expect("the test CA file");
    })
    .await;

    // The service presents a certificate the node does not trust.
    let mut wrong = Service::start_tls(port, node.addr(), untrusted).await;
    let ping = "/_matrix/client/v1/appservice/bridge/ping";
    assert_error(
        &post(&node, ping, AS_TOKEN, &json!({})).await,
        502,
        "M_CONNECTION_FAILED",
    );
    let room = ok(post(&node, &format!("{V3}/createRoom"), AS_TOKEN, &json!({})).await)["room_id"]
        .as_str()
        .expect("room id")
        .to_owned();
    send_text(&node, AS_TOKEN, &room, "t1", "over tls").await;
    let failures = "rethink_appservice_txn_failures_total{service=\"bridge\"}";
    wait_for_count(&node, failures, 2.0).await;
    assert!(
        wrong.rx.try_recv().is_err(),
        "nothing passed a refused handshake"
    );
    wrong.stop().await;

    // The same port, a trusted certificate: the queued transaction arrives, and pings pass.
    let mut service = Service::start_tls(port, node.addr(), trusted).await;
    assert_eq!(
        service.messages(1).await,
        [(room.clone(), "over tls".to_owned())]
    );
    ok(post(&node, ping, AS_TOKEN, &json!({"transaction_id": "p1"})).await);
    loop {
        if let Received::Ping { txn_id } = service.next().await {
            assert_eq!(txn_id.as_deref(), Some("p1"));
            break;
        }
    }
    wait_for_count(
        &node,
        "rethink_appservice_txns_total{service=\"bridge\"}",
        1.0,
    )
    .await;
}
