//! Test support: a real node on 127.0.0.1:0 ([`TestNode`]), a real WebSocket runtime client
//! ([`Rt`]), plain HTTP and metrics (`http`), the Matrix API over raw HTTP and matrix-sdk
//! (`matrix`), a test JWT issuer (`jwt`), and a PostgreSQL server of a test's own (`pg`).

pub(crate) mod client;
pub(crate) mod connectors;
pub(crate) mod http;
pub(crate) mod jwt;
pub(crate) mod keepalive;
pub(crate) mod matrix;
pub(crate) mod node;
pub(crate) mod pg;
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

/// Ports [`free_port`] hands out: below Linux's ephemeral range (32768-60999 by default), so that
/// no outgoing connection of the machine, and no `bind(0)`, takes a port between the moment a
/// test picks it and the moment the node it starts listens on it ("Address already in use",
/// seen when a port was taken from the ephemeral range by binding port 0 and letting it go).
const PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A port nobody listens on now, for a node a test must know the address of before it starts
/// (a peer named in another node's configuration, a node restarted on its address). Each call
/// of this process tries the next port of [`PORTS`] (from a start drawn from the process id), so
/// the tests running at once never get the same one.
pub(crate) fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let span = u32::from(PORTS.end - PORTS.start);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % span,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..span {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % span;
        let port = PORTS.start + u16::try_from(offset).unwrap_or(0);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {PORTS:?}");
}
