//! Nodes running WebAssembly connectors, and the domain registry's messages.

use std::collections::BTreeMap;

use rethink_node::Config;
use rethink_node::config::{RawConfig, RawConnector};
use serde_json::{Value, json};

use super::{DOMAIN, Rt, TestNode};

/// The domain registry's address.
pub(crate) fn registry() -> String {
    format!("domain://registry.{DOMAIN}")
}

/// `c` with the connectors `connectors`, validated as the node validates its configuration.
pub(crate) fn with_connectors(c: &mut Config, connectors: BTreeMap<String, RawConnector>) {
    let raw = RawConfig {
        domain: DOMAIN.into(),
        listen: "127.0.0.1:0".into(),
        data_dir: c.data_dir.clone(),
        connectors,
        ..RawConfig::default()
    };
    c.stubs = raw.validate().expect("valid connectors").stubs;
}

/// `[connectors.registry]`, and nothing else.
pub(crate) fn with_registry(c: &mut Config) {
    with_connectors(
        c,
        BTreeMap::from([("registry".to_owned(), RawConnector::default())]),
    );
}

/// A registry `read` of `hyperty` with ID `id`, from `rt`'s runtime registry.
pub(crate) fn read(id: u64, rt: &Rt, hyperty: &str) -> Value {
    json!({"id": id, "type": "read", "from": format!("{}/registry", rt.url),
        "to": registry(), "body": {"resource": hyperty}})
}

/// A registration body for the hyperty `url`, expiring after `expires` seconds.
pub(crate) fn hyperty(url: &str, expires: u64) -> Value {
    json!({"value": {"hypertyURL": url, "user": "user://idp.example/alice",
        "hypertyDescriptorURL": "hyperty-catalogue://example.com/chat", "expires": expires,
        "resources": ["chat", "audio"], "dataSchemes": ["comm"]}})
}

/// Sends `body` to the registry as `kind` from `rt`'s runtime registry; returns the answer's
/// body.
pub(crate) async fn ask(rt: &mut Rt, kind: &str, body: Value) -> Value {
    let from = format!("{}/registry", rt.url);
    let r = rt
        .request(json!({"type": kind, "from": from, "to": registry(), "body": body}))
        .await;
    assert_eq!(r["from"], registry(), "{r}");
    r["body"].clone()
}

/// A runtime `owner` on `node` with one hyperty, registered for an hour; returns both.
pub(crate) async fn registered_hyperty(node: &TestNode) -> (Rt, String) {
    let mut owner = Rt::open(node, "owner").await;
    let h = owner.allocate(1).await.remove(0);
    let created = ask(&mut owner, "create", hyperty(&h, 3600)).await;
    assert_eq!(created["code"], 200, "{created}");
    (owner, h)
}
