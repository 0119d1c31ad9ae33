//! Refusals of routing across domains, with real nodes and, where a domain must misbehave, a
//! domain written in the test ([`FakeDomain`]: its own ed25519 key published in the Matrix
//! server-key format, a signed stub descriptor, a component) on loopback:
//!
//! - a stub whose bytes do not hash to its descriptor's `sha256`, or whose descriptor does not
//!   verify with the key its domain publishes: senders on A get 502 naming the domain;
//! - a domain no map names and no DNS resolves: 502 or 504, within the fetch's bound;
//! - a node session that proved `a.test` may send only from `a.test` (403 otherwise), and a
//!   node token B did not issue the challenge of, or meant for another node, opens nothing;
//! - an unknown address on B is answered 404 back to the sender on A.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rethink_crossdomain::proof::{self, Challenge};
use ruma::CanonicalJsonObject;
use ruma::serde::Base64;
use ruma::signatures::{Ed25519KeyPair, sign_json};
use serde_json::{Value, json};

use crate::catalogue::{get, sha256_hex, variant};
use crate::crossdomain::{A, B, FIRST, free_addr, hyperty, node, node_with, two_nodes};
use crate::support::{Rt, TestNode};

/// The committed default stub (what a well-behaved domain serves).
const DEFAULT_WASM: &[u8] = include_bytes!("../../stubs/guests/default/default.wasm");

/// How a [`FakeDomain`] misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tamper {
    /// Correct: a signed descriptor of the bytes served.
    None,
    /// The component served is not the one the descriptor's `sha256` names.
    Bytes,
    /// The descriptor was changed after it was signed.
    Descriptor,
}

/// A domain written in the test.
struct FakeDomain {
    name: String,
    key: Ed25519KeyPair,
    served: Arc<Served>,
    /// Its servers: the first on the address it started on, then those of [`Self::serve_on`].
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for FakeDomain {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Serves `served` on `addr`.
async fn serve_on(addr: SocketAddr, served: Arc<Served>) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
    let app = Router::new().fallback(serve).with_state(served);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    })
}

#[derive(Debug)]
struct Served {
    keys: Vec<u8>,
    descriptor: Vec<u8>,
    package: Vec<u8>,
    /// The node the stub connects to: node challenges are asked of it.
    node: Option<SocketAddr>,
}

async fn serve(State(s): State<Arc<Served>>, req: Request) -> Response {
    let path = req.uri().path();
    let body = if path == "/_matrix/key/v2/server" {
        &s.keys
    } else if path == "/.well-known/protocolstub/default" {
        &s.descriptor
    } else if path.starts_with("/pkg/") {
        &s.package
    } else if path == "/_rethink/node/challenge"
        && let Some(node) = s.node
    {
        let answer = get(node, path).await;
        let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
        return (status, answer.body).into_response();
    } else {
        return StatusCode::NOT_FOUND.into_response();
    };
    body.clone().into_response()
}

impl FakeDomain {
    /// Domain `name` on `addr`, serving a stub whose node is `ws` (a node's WebSocket URL).
    async fn start(name: &str, addr: SocketAddr, ws: &str, tamper: Tamper) -> Self {
        Self::start_with(name, addr, ws, tamper, &[]).await
    }

    /// Like [`Self::start`], with `extra` entries in the stub's configuration.
    async fn start_with(
        name: &str,
        addr: SocketAddr,
        ws: &str,
        tamper: Tamper,
        extra: &[(&str, &str)],
    ) -> Self {
        let der = Ed25519KeyPair::generate();
        let key = Ed25519KeyPair::from_der(&der, "t1".into()).expect("key pair");
        let public = Base64::<ruma::serde::base64::Standard, _>::new(key.public_key().to_vec());
        let mut keys: CanonicalJsonObject = serde_json::from_value(json!({
            "server_name": name,
            "valid_until_ts": 4_000_000_000_000u64,
            "old_verify_keys": {},
            "verify_keys": {"ed25519:t1": {"key": public.encode()}},
        }))
        .expect("canonical");
        sign_json(name, &key, &mut keys).expect("sign");
        let sha = sha256_hex(DEFAULT_WASM);
        let mut descriptor: CanonicalJsonObject = serde_json::from_value(json!({
            "type": "ProtocolStub",
            "objectName": "default",
            "version": "0.1.0",
            "sha256": sha,
            "sourcePackageURL": format!("http://{addr}/pkg/{sha}.wasm"),
            "configuration": {"url": ws, "domain": name},
        }))
        .expect("canonical");
        for (k, v) in extra {
            if let Some(ruma::CanonicalJsonValue::Object(c)) = descriptor.get_mut("configuration") {
                c.insert(
                    (*k).to_owned(),
                    ruma::CanonicalJsonValue::String((*v).to_owned()),
                );
            }
        }
        sign_json(name, &key, &mut descriptor).expect("sign");
        let mut descriptor: Value = serde_json::to_value(&descriptor).expect("json");
        if tamper == Tamper::Descriptor {
            descriptor["version"] = json!("0.1.1");
        }
        let package = match tamper {
            Tamper::Bytes => variant(DEFAULT_WASM, "tampered"),
            _ => DEFAULT_WASM.to_vec(),
        };
        let served = Arc::new(Served {
            keys: serde_json::to_vec(&keys).expect("json"),
            descriptor: serde_json::to_vec(&descriptor).expect("json"),
            package,
            node: ws
                .strip_prefix("ws://")
                .and_then(|rest| rest.split('/').next())
                .and_then(|a| a.parse().ok()),
        });
        let task = serve_on(addr, Arc::clone(&served)).await;
        Self {
            name: name.to_owned(),
            key,
            served,
            tasks: vec![task],
        }
    }

    /// The same domain (its key, its documents) served on `addr` too.
    async fn serve_on(&mut self, addr: SocketAddr) {
        let task = serve_on(addr, Arc::clone(&self.served)).await;
        self.tasks.push(task);
    }

    /// A node token answering `challenge` for `destination`, claiming to be `origin`, signed
    /// with this domain's key.
    fn token(&self, origin: &str, destination: &str, challenge: &Challenge) -> String {
        let mut object = proof::proof_object(origin, destination, challenge);
        sign_json(&self.name, &self.key, &mut object).expect("sign");
        proof::token(&object)
    }
}

/// A PING from `rt` (address `from`) to `to`, and its answer.
async fn ping(rt: &mut Rt, from: &str, to: &str, wait: Duration) -> Value {
    let id = rt.fresh_id();
    rt.send(&json!({"id": id, "type": "PING", "from": from, "to": to}))
        .await;
    let resp = rt.try_recv(wait).await.expect("an answer");
    assert_eq!(resp["type"], "response", "{resp}");
    assert_eq!(resp["id"], id, "{resp}");
    resp
}

/// A node of `a.test` whose map sends `b.test` to a fake domain that misbehaves with `tamper`.
async fn a_with_fake_b(tamper: Tamper) -> (TestNode, FakeDomain) {
    let fake_addr = free_addr();
    let a = node(A, free_addr(), &[(B, fake_addr)]).await;
    // The stub would connect to a node on port 9 (nothing listens): it never gets that far.
    let fake = FakeDomain::start(B, fake_addr, "ws://127.0.0.1:9/ws", tamper).await;
    (a, fake)
}

#[tokio::test]
async fn a_stub_whose_bytes_do_not_match_its_hash_is_refused_with_502_naming_the_domain() {
    let (a, _fake) = a_with_fake_b(Tamper::Bytes).await;
    let (mut alice, ha) = hyperty(&a, A, "rt-alice").await;
    let resp = ping(&mut alice, &ha, "hyperty://b.test/bob", FIRST).await;
    assert_eq!(resp["body"]["code"], 502, "{resp}");
    let desc = resp["body"]["description"].as_str().expect("description");
    assert!(desc.contains("domain b.test"), "{desc}");
    assert!(desc.contains("sha256"), "{desc}");
    assert_eq!(resp["from"], "hyperty://b.test/bob");
}

#[tokio::test]
async fn a_stub_whose_descriptor_does_not_verify_is_refused_with_502_naming_the_domain() {
    let (a, _fake) = a_with_fake_b(Tamper::Descriptor).await;
    let (mut alice, ha) = hyperty(&a, A, "rt-alice").await;
    let resp = ping(&mut alice, &ha, "hyperty://b.test/bob", FIRST).await;
    assert_eq!(resp["body"]["code"], 502, "{resp}");
    let desc = resp["body"]["description"].as_str().expect("description");
    assert!(desc.contains("domain b.test"), "{desc}");
    assert!(desc.contains("signature"), "{desc}");
    // Messages keep being answered while the domain is refused, not queued.
    let again = ping(&mut alice, &ha, "hyperty://b.test/carol", FIRST).await;
    assert_eq!(again["body"]["code"], 502, "{again}");
}

#[tokio::test]
async fn a_domain_nobody_maps_and_no_dns_resolves_is_answered_within_the_fetch_bound() {
    let a = node(A, free_addr(), &[]).await;
    let (mut alice, ha) = hyperty(&a, A, "rt-alice").await;
    let started = Instant::now();
    // `.invalid` never resolves (RFC 2606).
    let resp = ping(
        &mut alice,
        &ha,
        "hyperty://nowhere.invalid/x",
        Duration::from_secs(30),
    )
    .await;
    let code = resp["body"]["code"].as_u64().expect("code");
    assert!(code == 502 || code == 504, "{resp}");
    let desc = resp["body"]["description"].as_str().expect("description");
    assert!(desc.contains("domain nowhere.invalid"), "{desc}");
    // The fetch is bounded at 10 s; the answer comes within it (plus the routing).
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_unknown_address_on_b_is_answered_404_back_on_a() {
    let (a, b) = two_nodes().await;
    let (mut alice, ha) = hyperty(&a, A, "rt-alice").await;
    let (_bob, _hb) = hyperty(&b, B, "rt-bob").await;
    let resp = ping(&mut alice, &ha, "hyperty://b.test/nobody", FIRST).await;
    assert_eq!(resp["body"]["code"], 404, "{resp}");
    assert_eq!(resp["from"], "hyperty://b.test/nobody");
}

/// Opens a node session on `b` as `origin` with `token`; the answer to `open`.
async fn open_as_node(b: &TestNode, origin: &str, token: &str) -> (Rt, Value) {
    let mut rt = Rt::connect(b, "node").await;
    rt.url = format!("hyperty-runtime://{B}/node/{origin}");
    let resp = rt.open_session(json!({"token": token})).await;
    (rt, resp)
}

async fn challenge(b: &TestNode) -> Challenge {
    let answer = get(b.addr(), "/_rethink/node/challenge").await;
    assert_eq!(answer.status, 200);
    serde_json::from_slice(&answer.body).expect("a challenge")
}

#[tokio::test]
async fn a_node_session_sends_only_from_the_domain_it_proved() {
    let a_addr = free_addr();
    let b = node(B, free_addr(), &[(A, a_addr)]).await;
    let fake_a = FakeDomain::start(A, a_addr, "ws://127.0.0.1:9/ws", Tamper::None).await;
    let (mut bob, hb) = hyperty(&b, B, "rt-bob").await;

    // Tokens B did not issue the challenge of, or meant for another node, open nothing.
    let made_up = Challenge {
        challenge: "00".repeat(32),
        expires_ts: u64::MAX >> 12,
        now_ts: None,
    };
    let (_, resp) = open_as_node(&b, A, &fake_a.token(A, B, &made_up)).await;
    assert_eq!(resp["body"]["code"], 401, "{resp}");
    let c = challenge(&b).await;
    let (_, resp) = open_as_node(&b, A, &fake_a.token(A, "c.test", &c)).await;
    assert_eq!(resp["body"]["code"], 401, "{resp}");
    // Claiming to be c.test with a.test's key: c.test's keys are not reachable.
    let (_, resp) = open_as_node(&b, "c.test", &fake_a.token("c.test", B, &c)).await;
    assert_eq!(resp["body"]["code"], 401, "{resp}");

    let (mut node_a, resp) = open_as_node(&b, A, &fake_a.token(A, B, &c)).await;
    assert_eq!(resp["body"]["code"], 200, "{resp}");

    // From a.test: delivered, with transport "node".
    node_a
        .send(&json!({"id": 1, "type": "PING", "from": "hyperty://a.test/alice", "to": hb}))
        .await;
    let got = bob.recv().await;
    assert_eq!(got["from"], "hyperty://a.test/alice");
    // From another domain: 403, nothing delivered.
    let resp = node_a
        .request(json!({"id": 2, "type": "PING", "from": "hyperty://c.test/mallory", "to": hb}))
        .await;
    assert_eq!(resp["body"]["code"], 403, "{resp}");
    let desc = resp["body"]["description"].as_str().expect("description");
    assert!(desc.contains("not in domain a.test"), "{desc}");
    // Nor from B's own addresses.
    let resp = node_a
        .request(json!({"id": 3, "type": "PING", "from": hb, "to": hb}))
        .await;
    assert_eq!(resp["body"]["code"], 403, "{resp}");
    // A node does not relay: to a third domain is refused.
    let resp = node_a
        .request(
            json!({"id": 4, "type": "PING", "from": "hyperty://a.test/alice",
            "to": "hyperty://c.test/x"}),
        )
        .await;
    assert_eq!(resp["body"]["code"], 403, "{resp}");
    bob.expect_nothing_queued().await;

    // Bob's answer to a.test goes back through the node session.
    bob.send(
        &json!({"id": 1, "type": "response", "from": hb, "to": "hyperty://a.test/alice",
        "body": {"code": 200}}),
    )
    .await;
    let back = node_a.recv().await;
    assert_eq!(back["type"], "response");
    assert_eq!(back["to"], "hyperty://a.test/alice");
}

#[tokio::test]
async fn a_proof_whose_keys_b_cannot_fetch_is_answered_retry_later_not_refused() {
    // B knows A on `a_addr`, where nothing listens yet: B cannot fetch A's keys, so it cannot
    // check A's proof. That is B's answer to give as such (5xx: try again later), not a 401,
    // which tells A's gateway that its proof was refused and has it fetch a new one, in a loop.
    let (a_addr, elsewhere) = (free_addr(), free_addr());
    let b = node(B, free_addr(), &[(A, a_addr)]).await;
    let mut fake_a = FakeDomain::start(A, elsewhere, "ws://127.0.0.1:9/ws", Tamper::None).await;
    let c = challenge(&b).await;
    let token = fake_a.token(A, B, &c);
    let (_, resp) = open_as_node(&b, A, &token).await;
    assert_eq!(resp["body"]["code"], 502, "{resp}");
    let desc = resp["body"]["description"].as_str().expect("description");
    assert!(desc.contains("domain a.test: fetching"), "{desc}");

    // A's node is back: the same proof is accepted.
    fake_a.serve_on(a_addr).await;
    let (_, resp) = open_as_node(&b, A, &token).await;
    assert_eq!(resp["body"]["code"], 200, "{resp}");
}

#[tokio::test]
async fn a_proof_presented_late_is_accepted_within_the_leeway_only() {
    // B's clock runs ahead of A's (a manual clock moved forward): A's proof reaches B after
    // its challenge expired by B's clock.
    let a_addr = free_addr();
    let peers = vec![(A.to_owned(), format!("http://{a_addr}"))];
    let b = TestNode::spawn_with_clock(move |c| {
        c.matrix.server_name = B.try_into().expect("server name");
        c.domain = B.to_owned();
        c.cross_domain.enabled = true;
        c.cross_domain.peers = peers;
        c.cross_domain.proof_ttl = Duration::from_secs(60);
        c.cross_domain.proof_leeway = Duration::from_secs(30);
    })
    .await;
    let fake_a = FakeDomain::start(A, a_addr, "ws://127.0.0.1:9/ws", Tamper::None).await;

    // Expired 10 s ago by B's clock: within the leeway.
    let c = challenge(&b).await;
    b.advance(Duration::from_secs(70)).await;
    let (_, resp) = open_as_node(&b, A, &fake_a.token(A, B, &c)).await;
    assert_eq!(resp["body"]["code"], 200, "{resp}");

    // Expired 40 s ago: beyond it (refused before the runtime URL is looked at).
    let c = challenge(&b).await;
    b.advance(Duration::from_secs(100)).await;
    let (_, resp) = open_as_node(&b, A, &fake_a.token(A, B, &c)).await;
    assert_eq!(resp["body"]["code"], 401, "{resp}");
}

#[tokio::test]
async fn a_proof_refused_beyond_the_leeway_is_renewed_and_the_same_session_resumed() {
    // B's clock jumps ahead of A's by more than the leeway while A's stub is connected (A's
    // next renewal is minutes away); then the stub's connection breaks: its re-open presents
    // a proof B calls expired (401). A must fetch a fresh proof and resume the same session
    // (B still holds it: its clock stands still, so it never expires), not loop.
    let (a, b, relay) = crate::crossdomain::b_behind_a_relay(
        |_| {},
        |c| {
            c.cross_domain.proof_ttl = Duration::from_secs(600);
            c.cross_domain.proof_leeway = Duration::from_secs(30);
        },
    )
    .await;
    let (mut alice, ha) = hyperty(&a, A, "rt-alice").await;
    let (mut bob, hb) = hyperty(&b, B, "rt-bob").await;
    crate::crossdomain::first_ping(&mut alice, &ha, &mut bob, &hb).await;

    b.advance(Duration::from_secs(700)).await;
    // B's connections idle that long are closed (bob's re-opens his session); the stub's is
    // cut all the same.
    relay.cut();
    let (mut bob, _) = bob.drop_connection().resume(&b).await;
    let r = bob.recv().await;
    assert_eq!(r["body"]["code"], 200, "bob's re-open: {r}");
    // Sent while the stub is refused: they wait, and arrive in order, once (4 is the marker:
    // a duplicate would come before it).
    for n in 2..=4u64 {
        alice
            .send(&json!({"id": n, "type": "PING", "from": ha, "to": hb, "body": {"n": n}}))
            .await;
    }
    let mut got = Vec::new();
    while got.last() != Some(&4) {
        let f = bob
            .try_recv(FIRST)
            .await
            .unwrap_or_else(|| panic!("no PING 4 within {FIRST:?}; got {got:?}"));
        assert_eq!(f["type"], "PING", "{f}");
        got.push(f["body"]["n"].as_u64().expect("n"));
    }
    assert_eq!(got, vec![2, 3, 4], "in order, once");
    // Delivered, so the session was resumed: a new `open` would be refused 409 while B holds
    // the old one. The way back works too.
    bob.send(&json!({"id": 1, "type": "response", "from": hb, "to": ha, "body": {"code": 200}}))
        .await;
    let r = alice.try_recv(FIRST).await.expect("bob's answer");
    assert_eq!(
        (r["id"].as_u64(), r["body"]["code"].as_u64()),
        (Some(1), Some(200)),
        "{r}"
    );
}

#[tokio::test]
async fn a_stub_that_does_not_report_what_it_holds_is_acknowledged_from_what_b_confirms() {
    // B's catalogue is served by a domain written in the test, whose stub (the default one
    // with `report_held` = false) ignores A's `gseq` and writes no `"g"`, like a stub of B's own
    // making: A's gateway outbox (16 messages here) must be acknowledged from what B's node
    // confirms (the `cseq` answered to the stub's `sync`), or the 17th message gets 503.
    const M: u64 = 48;
    let (aa, ab, fake_addr) = (free_addr(), free_addr(), free_addr());
    let b = node(B, ab, &[(A, aa)]).await;
    let a = node_with(A, aa, &[(B, fake_addr)], |c| {
        c.session.outbox_max_messages = 16;
    })
    .await;
    let _fake = FakeDomain::start_with(
        B,
        fake_addr,
        &b.ws_url(),
        Tamper::None,
        &[("report_held", "false")],
    )
    .await;
    let (mut alice, ha) = hyperty(&a, A, "rt-alice").await;
    let (mut bob, hb) = hyperty(&b, B, "rt-bob").await;
    for n in 1..=M {
        alice
            .send(&json!({"id": n, "type": "PING", "from": ha, "to": hb, "body": {"n": n}}))
            .await;
        let Some(f) = bob.try_recv(FIRST).await else {
            let refusal = alice.try_recv(Duration::from_secs(1)).await;
            panic!("PING {n} did not reach bob; alice got {refusal:?}");
        };
        assert_eq!(f["body"]["n"], n, "{f}");
        if n % 16 == 0 {
            bob.ack().await;
        }
    }
}
