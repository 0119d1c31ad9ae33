//! Address patterns in `[connectors.<name>] namespaces`: a WebAssembly connector (the echo guest
//! of `stubs/tests/guests/echo.wat`, listening on its pattern) claiming `slack://*` and
//! `domain://archive.<domain>/*` receives messages to addresses below them and answers from
//! those addresses; the claim is exclusive, as an application service's `rethink_namespaces`:
//! a runtime may not send from such an address, nor allocate in it, and the connector may not
//! send from an address outside its namespace (403 from the host).

use std::collections::BTreeMap;
use std::path::Path;

use rethink_node::Config;
use rethink_node::config::{RawConfig, RawConnector};
use serde_json::json;

use super::stubs_host::guests::{self, Init};
use super::support::{DOMAIN, Rt, TestNode, allocation_endpoint};

/// `[connectors.slack]`: the echo guest (written to `dir`), owning `namespaces` and listening
/// on `listen`.
fn with_slack(c: &mut Config, dir: &Path, namespaces: &[String], listen: &str) {
    let path = dir.join("slack.wasm");
    std::fs::write(
        &path,
        guests::echo_in(Init::Normal { timer_ms: 600_000 }, DOMAIN),
    )
    .expect("write the component");
    let connector = RawConnector {
        component: Some(path),
        namespaces: Some(namespaces.to_vec()),
        config: BTreeMap::from([("listen".to_owned(), listen.to_owned())]),
        ..RawConnector::default()
    };
    let raw = RawConfig {
        domain: DOMAIN.into(),
        listen: "127.0.0.1:0".into(),
        data_dir: c.data_dir.clone(),
        connectors: BTreeMap::from([("slack".to_owned(), connector)]),
        ..RawConfig::default()
    };
    c.stubs = raw.validate().expect("valid connectors").stubs;
}

#[tokio::test]
async fn a_connector_gets_the_addresses_below_its_patterns_and_answers_from_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    let node =
        TestNode::spawn_with(|c| with_slack(c, &path, &["slack://*".to_owned()], "slack://*"))
            .await;
    let mut alice = Rt::open(&node, "alice").await;
    let me = alice.url.clone();

    for (id, to) in [(1, "slack://team/general"), (2, "slack://other/x/y")] {
        alice
            .send(&json!({"id": id, "type": "create", "from": me, "to": to, "body": {"n": id}}))
            .await;
        let echo = alice.recv().await;
        assert_eq!(echo["type"], "create", "{echo}");
        assert_eq!(echo["id"], id, "{echo}");
        assert_eq!(
            echo["from"], to,
            "answered from the claimed address: {echo}"
        );
        assert_eq!(echo["body"]["n"], id, "{echo}");
    }

    // The guest sends back from alice's own address: the host refuses (403), the guest reports.
    alice
        .send(&json!({"id": 3, "type": "forge", "from": me, "to": "slack://team/general"}))
        .await;
    let report = alice.recv().await;
    assert_eq!(report["type"], "refused", "{report}");
    assert_eq!(report["body"], json!({"code": 403}), "{report}");

    // Exclusive: a runtime may not speak for the connector's addresses.
    let spoof = alice
        .request(json!({"type": "create", "from": "slack://team/general", "to": me}))
        .await;
    assert_eq!(spoof["body"]["code"], 403, "{spoof}");
}

#[tokio::test]
async fn a_pattern_of_the_domain_takes_what_is_below_it_and_keeps_runtimes_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    let archive = format!("domain://archive.{DOMAIN}/*");
    let claimed = format!("hyperty://{DOMAIN}/*");
    let node = TestNode::spawn_with(|c| {
        with_slack(c, &path, &[archive.clone(), claimed.clone()], &archive)
    })
    .await;
    // A runtime opens its session (its runtime URL is not a hyperty address), but cannot
    // allocate hyperty addresses: the connector claims them all.
    let mut rt = Rt::connect(&node, "rt-1").await;
    let opened = rt.open_session(json!({})).await;
    assert_eq!(opened["body"]["code"], 200, "{opened}");
    let me = rt.url.clone();
    let resp = rt
        .request(
            json!({"type": "create", "from": format!("{me}/registry/allocation"),
            "to": allocation_endpoint(),
            "body": {"scheme": "hyperty", "value": {"number": 1}}}),
        )
        .await;
    assert_eq!(resp["body"]["code"], 403, "{resp}");
    let desc = resp["body"]["description"].as_str().unwrap_or_default();
    assert!(desc.contains("connector.slack"), "{desc}");

    // An address two levels below the pattern's authority reaches the connector (an address
    // in `namespaces` would own only from its first path segment down).
    let to = format!("domain://archive.{DOMAIN}/log/topic");
    rt.send(&json!({"id": 7, "type": "create", "from": me, "to": to}))
        .await;
    let echo = rt.recv().await;
    assert_eq!(echo["id"], 7, "{echo}");
    assert_eq!(echo["from"], to.as_str(), "{echo}");
}
