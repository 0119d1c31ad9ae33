use std::time::Duration;

use super::*;
use crate::peers::Peers;
use crate::testing::{Domain, Table, s};

const WASM: &[u8] = b"\0asm pretend component";

struct World {
    table: Table,
    peer: PeerUrls,
    domain: Domain,
}

fn world() -> World {
    let peers = Peers::new([("b.test".to_owned(), "http://127.0.0.1:7".to_owned())]);
    let w = World {
        table: Table::default(),
        peer: peers.resolve("b.test"),
        domain: Domain::new("b.test", "k1"),
    };
    w.table.put(&w.peer.keys_url, w.domain.key_document());
    w
}

const PACKAGE: &str = "http://127.0.0.1:7/pkg.wasm";

/// A descriptor of `bytes`, signed by `by` (or unsigned), for domain `named`.
fn descriptor(by: Option<&Domain>, named: &str, version: &str, bytes: &[u8]) -> Vec<u8> {
    let v = serde_json::json!({
        "objectName": "default",
        "version": version,
        "sha256": sha256_hex(bytes),
        "sourcePackageURL": PACKAGE,
        "configuration": {"url": "ws://127.0.0.1:7/ws", "domain": named, "n": 3},
    });
    let mut o: CanonicalJsonObject = serde_json::from_value(v).unwrap();
    if let Some(d) = by {
        d.sign(&mut o);
    }
    serde_json::to_vec(&o).unwrap()
}

impl World {
    fn serve(&self, version: &str, bytes: &[u8]) {
        self.table.put(
            &self.peer.descriptor_url,
            descriptor(Some(&self.domain), "b.test", version, bytes),
        );
        self.table.put(PACKAGE, bytes.to_vec());
    }
}

#[tokio::test]
async fn a_verified_stub_is_cached_by_version_in_memory_and_on_disk() {
    let w = world();
    w.serve("1.0", WASM);
    let dir = tempfile::tempdir().unwrap();
    let keys = KeyCache::new();
    let cache = StubCache::new(Some(dir.path().to_owned()));
    let stub = cache
        .load(&w.table, &keys, &w.peer)
        .await
        .expect("verified");
    assert_eq!(&*stub.bytes, WASM);
    assert_eq!(stub.version, "1.0");
    assert_eq!(stub.ws_url, "ws://127.0.0.1:7/ws");
    assert_eq!(stub.origins, vec!["ws://127.0.0.1:7".to_owned()]);
    assert!(
        stub.configuration
            .contains(&("domain".into(), "b.test".into()))
    );
    assert!(!stub.configuration.iter().any(|(k, _)| k == "n"));
    assert_eq!(
        std::fs::read(
            dir.path()
                .join("b.test")
                .join(format!("{}.wasm", stub.sha256))
        )
        .unwrap(),
        WASM
    );
    assert!(dir.path().join("b.test/descriptor.json").is_file());

    // The same version again: the descriptor is fetched, the component is not, nor the keys.
    let again = cache.load(&w.table, &keys, &w.peer).await.unwrap();
    assert!(Arc::ptr_eq(&stub, &again));
    assert_eq!(w.table.count(PACKAGE), 1);
    assert_eq!(w.table.count(&w.peer.keys_url), 1);
    assert_eq!(w.table.count(&w.peer.descriptor_url), 2);

    // A new version is fetched again.
    let v2 = b"\0asm version two";
    w.serve("2.0", v2);
    let stub2 = cache.load(&w.table, &keys, &w.peer).await.unwrap();
    assert_eq!(&*stub2.bytes, v2);
    assert_eq!(w.table.count(PACKAGE), 2);

    // A fresh cache on the same directory (a restart) takes the bytes from disk.
    let restarted = StubCache::new(Some(dir.path().to_owned()));
    w.table.answers.lock().unwrap().remove(PACKAGE);
    let from_disk = restarted.load(&w.table, &keys, &w.peer).await.unwrap();
    assert_eq!(&*from_disk.bytes, v2);
    assert_eq!(w.table.count(PACKAGE), 2);
}

#[tokio::test]
async fn a_component_that_does_not_hash_to_the_descriptor_is_refused() {
    let w = world();
    w.serve("1.0", WASM);
    w.table.put(PACKAGE, b"\0asm tampered".to_vec());
    let cache = StubCache::new(None);
    let e = cache
        .load(&w.table, &KeyCache::new(), &w.peer)
        .await
        .expect_err("tampered");
    assert!(matches!(e, CrossDomainError::HashMismatch { .. }), "{e}");
    assert_eq!(e.code(), 502);
    assert!(e.to_string().contains("domain b.test"), "{e}");
    assert!(cache.cached("b.test").is_none());
}

#[tokio::test]
async fn a_descriptor_changed_after_signing_or_signed_by_another_key_is_refused() {
    let w = world();
    let cache = StubCache::new(None);
    // Changed after signing: the URL points elsewhere.
    let good = descriptor(Some(&w.domain), "b.test", "1.0", WASM);
    let mut forged: serde_json::Value = serde_json::from_slice(&good).unwrap();
    forged["configuration"]["url"] = "ws://evil.example/ws".into();
    w.table
        .put(&w.peer.descriptor_url, serde_json::to_vec(&forged).unwrap());
    let e = cache
        .load(&w.table, &KeyCache::new(), &w.peer)
        .await
        .unwrap_err();
    assert!(matches!(e, CrossDomainError::BadSignature { .. }), "{e}");
    assert_eq!(e.code(), 502);

    // Unsigned.
    w.table.put(
        &w.peer.descriptor_url,
        descriptor(None, "b.test", "1.0", WASM),
    );
    let e = cache
        .load(&w.table, &KeyCache::new(), &w.peer)
        .await
        .unwrap_err();
    assert!(matches!(e, CrossDomainError::NotSigned { .. }), "{e}");

    // Signed by a key b.test does not publish (same key id, another key).
    let impostor = Domain::new("b.test", "k1");
    w.table.put(
        &w.peer.descriptor_url,
        descriptor(Some(&impostor), "b.test", "1.0", WASM),
    );
    let e = cache
        .load(&w.table, &KeyCache::new(), &w.peer)
        .await
        .unwrap_err();
    assert!(matches!(e, CrossDomainError::BadSignature { .. }), "{e}");

    // Signed by b.test, describing another domain.
    w.table.put(
        &w.peer.descriptor_url,
        descriptor(Some(&w.domain), "c.test", "1.0", WASM),
    );
    let e = cache
        .load(&w.table, &KeyCache::new(), &w.peer)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("describes domain \"c.test\""), "{e}");
    assert!(w.table.count(PACKAGE) == 0);
}

#[tokio::test]
async fn an_unknown_key_id_refreshes_the_keys_at_most_once_per_interval() {
    let w = world();
    w.serve("1.0", WASM);
    let keys = KeyCache::with_min_refresh(Duration::ZERO);
    let cache = StubCache::new(None);
    cache.load(&w.table, &keys, &w.peer).await.unwrap();
    assert_eq!(w.table.count(&w.peer.keys_url), 1);

    // The domain rotates its key: the next descriptor names k2, the keys are fetched again.
    let rotated = Domain::new("b.test", "k2");
    w.table.put(&w.peer.keys_url, rotated.key_document());
    w.table.put(
        &w.peer.descriptor_url,
        descriptor(Some(&rotated), "b.test", "1.1", WASM),
    );
    let stub = cache.load(&w.table, &keys, &w.peer).await.expect("new key");
    assert_eq!(stub.version, "1.1");
    assert_eq!(w.table.count(&w.peer.keys_url), 2);

    // With the default interval, a second unknown key right after is refused without a fetch.
    let slow = KeyCache::new();
    cache.load(&w.table, &slow, &w.peer).await.unwrap();
    let other = Domain::new("b.test", "k3");
    w.table.put(
        &w.peer.descriptor_url,
        descriptor(Some(&other), "b.test", "1.2", WASM),
    );
    let before = w.table.count(&w.peer.keys_url);
    let e = cache.load(&w.table, &slow, &w.peer).await.unwrap_err();
    assert!(matches!(e, CrossDomainError::UnknownKey { .. }), "{e}");
    assert_eq!(w.table.count(&w.peer.keys_url), before);
}

#[tokio::test]
async fn a_key_document_not_signed_by_its_own_key_is_refused() {
    let w = world();
    w.serve("1.0", WASM);
    let mut doc: serde_json::Value = serde_json::from_slice(&w.domain.key_document()).unwrap();
    doc["valid_until_ts"] = 1.into();
    w.table
        .put(&w.peer.keys_url, serde_json::to_vec(&doc).unwrap());
    let e = StubCache::new(None)
        .load(&w.table, &KeyCache::new(), &w.peer)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("server key document"), "{e}");
    let _ = s("unused");
}

#[tokio::test]
async fn an_unreachable_domain_names_the_url() {
    let w = world();
    let e = StubCache::new(None)
        .load(&w.table, &KeyCache::new(), &w.peer)
        .await
        .unwrap_err();
    assert!(matches!(e, CrossDomainError::Fetch { .. }));
    assert_eq!(e.code(), 502);
    assert!(e.to_string().contains(&w.peer.descriptor_url), "{e}");
}
