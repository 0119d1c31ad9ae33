//! Test support: a real node on 127.0.0.1:0 ([`TestNode`]), a real WebSocket runtime client
//! ([`Rt`]), plain HTTP and metrics (`http`), the Matrix API over raw HTTP and matrix-sdk
//! (`matrix`), and a test JWT issuer (`jwt`).

pub(crate) mod client;
pub(crate) mod connectors;
pub(crate) mod http;
pub(crate) mod jwt;
pub(crate) mod keepalive;
pub(crate) mod matrix;
pub(crate) mod node;
pub(crate) mod process;
pub(crate) mod relay;

pub(crate) use client::Rt;
pub(crate) use http::{get, get_at, metric, wait_for_metric};
pub(crate) use node::TestNode;
pub(crate) use process::NodeProcess;

/// The domain every test node serves (the reTHINK example messages of `node/proto/testdata/rethink` use it).
pub(crate) const DOMAIN: &str = "example.com";

/// Two opened runtimes named `a` and `b`, each holding one allocated hyperty address.
pub(crate) async fn pair(node: &TestNode, a: &str, b: &str) -> (Rt, Rt, String, String) {
    let mut ra = Rt::open(node, a).await;
    let mut rb = Rt::open(node, b).await;
    let fa = ra.allocate(1).await.remove(0);
    let fb = rb.allocate(1).await.remove(0);
    (ra, rb, fa, fb)
}

/// The node's allocation endpoint.
pub(crate) fn allocation_endpoint() -> String {
    format!("domain://msg-node.{DOMAIN}/address-allocation")
}

/// The node's subscription manager.
pub(crate) fn sm_endpoint() -> String {
    format!("domain://msg-node.{DOMAIN}/sm")
}

/// A policy directory for `policy.dir`: the node's schema (`policy/schema.cedarschema`), the
/// given `policies.cedar` and no entities.
pub(crate) fn policy_dir(policies: &str) -> tempfile::TempDir {
    let dir = tempfile::TempDir::new().expect("temp dir");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/../policy/schema.cedarschema"),
        dir.path().join("schema.cedarschema"),
    )
    .expect("copy the schema");
    std::fs::write(dir.path().join("policies.cedar"), policies).expect("write the policies");
    std::fs::write(dir.path().join("entities.json"), "[]").expect("write the entities");
    dir
}
