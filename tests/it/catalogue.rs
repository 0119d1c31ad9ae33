//! The stub catalogue and the front pages over real HTTP: the descriptor's fields, its signature
//! checked with ruma (not the node's code) against the key the node publishes at
//! `/_matrix/key/v2/server`, the bytes matching `sha256`, conditional GET, CORS, 404s for
//! unknown names and hashes, `public_url`, `GET /` and `/.well-known/matrix/client`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use ruma::canonical_json::CanonicalJsonObject;
use ruma::serde::Base64;
use ruma::signatures::{PublicKeyMap, verify_json};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{DOMAIN, TestNode};

/// An HTTP answer: status, headers (lowercase names), body.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: HashMap<String, String>,
    pub(crate) body: Vec<u8>,
}

impl Answer {
    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or_else(
            || panic!("no {name} header in {:?}", self.headers),
            String::as_str,
        )
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// A raw HTTP/1.1 request with extra header lines (`"If-None-Match: \"x\""`).
pub(crate) async fn request(addr: SocketAddr, method: &str, path: &str, extra: &[&str]) -> Answer {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for line in extra {
        req.push_str(line);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.expect("read");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    let head = String::from_utf8(raw[..split].to_vec()).expect("an ASCII head");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect::<HashMap<_, _>>();
    assert!(
        !headers
            .get("transfer-encoding")
            .is_some_and(|t| t.contains("chunked")),
        "this client reads sized bodies only"
    );
    Answer {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

pub(crate) async fn get(addr: SocketAddr, path: &str) -> Answer {
    request(addr, "GET", path, &[]).await
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// The path part of an absolute URL the node wrote (`http://127.0.0.1:1234/x` → `/x`).
pub(crate) fn path_of(url: &str) -> &str {
    let rest = url.split_once("://").expect("an absolute URL").1;
    &rest[rest.find('/').expect("a path")..]
}

/// A stub's descriptor and its component's bytes, as a runtime downloads them.
pub(crate) async fn download(addr: SocketAddr, name: &str) -> (Value, Vec<u8>) {
    let d = get(addr, &format!("/.well-known/protocolstub/{name}")).await;
    assert_eq!(d.status, 200, "{}", String::from_utf8_lossy(&d.body));
    let descriptor = d.json();
    let url = descriptor["sourcePackageURL"]
        .as_str()
        .expect("sourcePackageURL");
    let p = get(addr, path_of(url)).await;
    assert_eq!(p.status, 200);
    (descriptor, p.body)
}

/// `bytes` (a component) with a custom section appended: still a valid component, other bytes.
pub(crate) fn variant(bytes: &[u8], tag: &str) -> Vec<u8> {
    assert!(tag.len() < 100);
    let mut out = bytes.to_vec();
    out.push(0);
    out.push(u8::try_from(tag.len() + 1).unwrap());
    out.push(u8::try_from(tag.len()).unwrap());
    out.extend_from_slice(tag.as_bytes());
    out
}

/// The node's published key, as ruma's key map (the key document itself verified).
async fn published_keys(addr: SocketAddr) -> PublicKeyMap {
    let answer = get(addr, "/_matrix/key/v2/server").await;
    assert_eq!(answer.status, 200);
    let object: CanonicalJsonObject = serde_json::from_slice(&answer.body).expect("JSON");
    let doc = answer.json();
    let mut keys = BTreeMap::new();
    for (key_id, key) in doc["verify_keys"].as_object().expect("verify_keys") {
        let public = key["key"].as_str().expect("key");
        keys.insert(key_id.clone(), Base64::parse(public).expect("base64"));
    }
    let map: PublicKeyMap = [(DOMAIN.to_owned(), keys)].into();
    verify_json(&map, &object).expect("the key document is self-signed");
    map
}

fn assert_cors(answer: &Answer) {
    assert_eq!(answer.header("access-control-allow-origin"), "*");
    assert!(
        answer
            .header("access-control-allow-methods")
            .contains("GET")
    );
}

#[tokio::test]
async fn the_default_descriptor_is_signed_with_the_published_key_and_names_its_bytes() {
    let node = TestNode::spawn().await;
    let addr = node.addr();
    let answer = get(addr, "/.well-known/protocolstub/default").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("content-type"), "application/json");
    assert_cors(&answer);
    let d = answer.json();
    assert_eq!(d["type"], "ProtocolStub");
    assert_eq!(d["objectName"], "default");
    assert_eq!(d["language"], "wasm-component");
    assert_eq!(d["interface"], "rethink:stub/protocol-stub@0.1.0");
    assert_eq!(d["version"], "0.1.0");
    assert_eq!(d["configuration"]["url"], format!("ws://{addr}/ws"));
    assert_eq!(d["configuration"]["domain"], DOMAIN);
    assert_eq!(
        d["constraints"],
        serde_json::json!({"browser": true, "node": true})
    );
    assert_eq!(d["interworking"], false);
    assert_eq!(d["sourcePackage"]["sourceCodeClassname"], "default");
    assert_eq!(d["sourcePackage"]["encoding"], "wasm-component");
    let sha = d["sha256"].as_str().expect("sha256").to_owned();
    assert_eq!(sha.len(), 64);
    assert_eq!(d["sourcePackage"]["sha256"], sha);
    assert_eq!(
        d["sourcePackageURL"],
        format!("http://{addr}/.well-known/protocolstub/default/sha256/{sha}.wasm")
    );

    // The signature, checked by ruma with the key the node publishes.
    let keys = published_keys(addr).await;
    let signed: CanonicalJsonObject = serde_json::from_slice(&answer.body).expect("canonical");
    let sigs = d["signatures"][DOMAIN]
        .as_object()
        .expect("signed by the domain");
    assert_eq!(sigs.len(), 1);
    assert!(sigs.keys().all(|k| k.starts_with("ed25519:")));
    verify_json(&keys, &signed).expect("the descriptor's signature verifies");
    // A descriptor changed in transit does not.
    let mut forged = d.clone();
    forged["configuration"]["url"] = Value::String("wss://evil.example/ws".into());
    let forged: CanonicalJsonObject = serde_json::from_value(forged).expect("canonical");
    assert!(verify_json(&keys, &forged).is_err());

    // The bytes: what the hash names.
    let bytes = get(addr, path_of(d["sourcePackageURL"].as_str().unwrap())).await;
    assert_eq!(bytes.status, 200);
    assert_eq!(bytes.header("content-type"), "application/wasm");
    assert_eq!(bytes.header("etag"), format!("\"{sha}\""));
    assert_eq!(
        bytes.header("cache-control"),
        "public, max-age=31536000, immutable"
    );
    assert_cors(&bytes);
    assert_eq!(bytes.header("access-control-expose-headers"), "ETag");
    assert_eq!(sha256_hex(&bytes.body), sha);
    assert_eq!(d["size"], bytes.body.len());
    assert_eq!(&bytes.body[..8], b"\0asm\x0d\0\x01\0", "a component");
}

#[tokio::test]
async fn a_conditional_get_of_the_bytes_answers_304() {
    let node = TestNode::spawn().await;
    let addr = node.addr();
    let d = get(addr, "/.well-known/protocolstub/default").await.json();
    let sha = d["sha256"].as_str().unwrap();
    let path = path_of(d["sourcePackageURL"].as_str().unwrap()).to_owned();
    let tag = format!("If-None-Match: \"{sha}\"");
    let answer = request(addr, "GET", &path, &[&tag]).await;
    assert_eq!(answer.status, 304);
    assert!(answer.body.is_empty());
    assert_eq!(answer.header("etag"), format!("\"{sha}\""));
    assert_cors(&answer);
    let other = request(addr, "GET", &path, &["If-None-Match: \"0000\""]).await;
    assert_eq!(other.status, 200);
    assert_eq!(sha256_hex(&other.body), sha);
}

#[tokio::test]
async fn unknown_stubs_and_hashes_are_404_with_a_json_error() {
    let node = TestNode::spawn().await;
    let addr = node.addr();
    let answer = get(addr, "/.well-known/protocolstub/nope").await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.header("content-type"), "application/json");
    assert_cors(&answer);
    let e = answer.json();
    assert_eq!(e["code"], 404);
    assert_eq!(e["desc"], "no protocol stub named \"nope\"");

    let sha = get(addr, "/.well-known/protocolstub/default").await.json()["sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    let zeros = "0".repeat(64);
    for path in [
        format!("/.well-known/protocolstub/default/sha256/{zeros}.wasm"),
        format!("/.well-known/protocolstub/nope/sha256/{sha}.wasm"),
        format!("/.well-known/protocolstub/default/sha256/{sha}"),
    ] {
        let answer = get(addr, &path).await;
        assert_eq!(answer.status, 404, "{path}");
        assert_eq!(answer.json()["code"], 404, "{path}");
    }
}

#[tokio::test]
async fn preflight_requests_are_answered_for_any_origin() {
    let node = TestNode::spawn().await;
    for path in [
        "/.well-known/protocolstub/default",
        "/.well-known/protocolstub/default/sha256/x.wasm",
        "/.well-known/matrix/client",
    ] {
        let answer = request(
            node.addr(),
            "OPTIONS",
            path,
            &[
                "Origin: https://app.example.org",
                "Access-Control-Request-Method: GET",
            ],
        )
        .await;
        assert_eq!(answer.status, 204, "{path}");
        assert_cors(&answer);
    }
}

#[tokio::test]
async fn the_front_page_and_the_matrix_client_well_known() {
    let node = TestNode::spawn().await;
    let addr = node.addr();
    let page = get(addr, "/").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), "text/html; charset=utf-8");
    let html = String::from_utf8(page.body).expect("UTF-8");
    for needle in [
        format!("rethink-node for {DOMAIN}"),
        format!("ws://{addr}/ws"),
        "href=\"/demo/\"".to_owned(),
        "href=\"/.well-known/protocolstub/default\"".to_owned(),
        "href=\"/healthz\"".to_owned(),
        "href=\"/metrics\"".to_owned(),
    ] {
        assert!(html.contains(&needle), "{needle} missing in:\n{html}");
    }

    let wk = get(addr, "/.well-known/matrix/client").await;
    assert_eq!(wk.status, 200);
    assert_eq!(wk.header("content-type"), "application/json");
    assert_cors(&wk);
    assert_eq!(
        wk.json(),
        serde_json::json!({"m.homeserver": {"base_url": format!("http://{addr}")}})
    );
    // The base URL really is this homeserver.
    let versions = get(addr, "/_matrix/client/versions").await;
    assert_eq!(versions.status, 200);
}

#[tokio::test]
async fn public_url_is_what_descriptors_and_the_well_known_say() {
    let node = TestNode::spawn_with(|c| {
        c.public_url = Some("https://node.example.com".into());
    })
    .await;
    let addr = node.addr();
    let d = get(addr, "/.well-known/protocolstub/default").await.json();
    assert_eq!(d["configuration"]["url"], "wss://node.example.com/ws");
    let sha = d["sha256"].as_str().unwrap();
    assert_eq!(
        d["sourcePackageURL"],
        format!("https://node.example.com/.well-known/protocolstub/default/sha256/{sha}.wasm")
    );
    let wk = get(addr, "/.well-known/matrix/client").await.json();
    assert_eq!(wk["m.homeserver"]["base_url"], "https://node.example.com");
}
