//! The reTHINK example messages (test data of `rethink-proto`: `node/proto/testdata/rethink`)
//! sent to a real node by a runtime that owns their senders: allocation (current and phase-1),
//! deallocation, subscribe (current and legacy), the domain registry, and the `invalid-*`
//! messages, which get 400.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::support::{Rt, TestNode};

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../node/proto/testdata/rethink")
}

fn vector(name: &str) -> Value {
    let path = vectors_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("vector is JSON")
}

#[tokio::test]
async fn allocation_vectors_allocate_and_deallocate() {
    let node = TestNode::spawn().await;
    let mut rt = Rt::open(&node, "rt-123").await;

    let resp = rt.request(vector("allocation-request.json")).await;
    assert_eq!(resp["body"]["code"], 200, "{resp}");
    let shape = vector("allocation-response.json");
    assert_eq!(resp["from"], shape["from"]);
    assert_eq!(resp["to"], shape["to"]);
    let allocated = resp["body"]["value"]["allocated"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(allocated.len(), 1);
    assert!(
        allocated[0]
            .as_str()
            .unwrap()
            .starts_with("hyperty://example.com/")
    );

    let legacy = rt
        .request(vector("allocation-request-legacy-no-scheme.json"))
        .await;
    assert_eq!(legacy["body"]["code"], 200, "{legacy}");
    assert_eq!(
        legacy["body"]["value"]["allocated"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    let mut dealloc = vector("deallocation-by-children.json");
    dealloc["body"]["childrenResources"] = json!([allocated[0]]);
    let resp = rt.request(dealloc).await;
    assert_eq!(resp["body"]["code"], 200, "{resp}");
    assert_eq!(resp["body"]["value"]["deallocated"], json!([allocated[0]]));
}

#[tokio::test]
async fn subscribe_vectors_subscribe() {
    let node = TestNode::spawn().await;
    let mut rt = Rt::open(&node, "rt-456").await;
    for name in ["subscribe.json", "subscribe-legacy.json"] {
        let resp = rt.request(vector(name)).await;
        assert_eq!(resp["body"]["code"], 200, "{name}: {resp}");
    }
}

#[tokio::test]
async fn registry_vector_is_answered_not_served() {
    let node = TestNode::spawn().await;
    let mut rt = Rt::open(&node, "rt-123").await;
    let resp = rt.request(vector("registry-create.json")).await;
    assert_eq!(resp["body"]["code"], 404, "{resp}");
    assert_eq!(resp["from"], "domain://registry.example.com");
}

#[tokio::test]
async fn messages_from_addresses_the_runtime_does_not_hold_are_refused() {
    let node = TestNode::spawn().await;
    let mut rt = Rt::open(&node, "rt-789").await;
    for name in [
        "hyperty-to-hyperty.json",
        "multi-to.json",
        "update-changes.json",
        "response-error-desc.json",
    ] {
        let resp = rt.request(vector(name)).await;
        assert_eq!(resp["body"]["code"], 403, "{name}: {resp}");
    }
}

#[tokio::test]
async fn invalid_vectors_get_400() {
    let node = TestNode::spawn().await;
    let mut rt = Rt::open(&node, "rt-inv").await;
    let mut seen = 0;
    for entry in std::fs::read_dir(vectors_dir()).expect("vectors") {
        let path = entry.expect("entry").path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("invalid-") {
            continue;
        }
        let msg = vector(&name);
        rt.send(&msg).await;
        let resp = rt.recv().await;
        assert_eq!(resp["body"]["code"], 400, "{name}: {resp}");
        assert_eq!(resp["id"], msg["id"], "{name}");
        seen += 1;
    }
    assert!(seen >= 2, "the invalid vectors were found");
}
