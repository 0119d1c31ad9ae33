//! A `[stubs.run]` instance that runs a catalogue stub by name (`stub = "chat"`) follows
//! `stubs.dir`: when the stub is replaced, the new version starts, new messages go to it, the
//! old instance finishes what its mailbox holds and stops. Messages sent without pause across
//! the swap are all answered exactly once, by the old version and then by the new one, none
//! with an error; the key-value store carries over (the new version counts a second boot); the
//! metrics show the running version. A replacement the catalogue refuses, or the stub's removal
//! from the directory, leaves the instance running its last version.
//!
//! The guests are the echo guest (`stubs/tests/guests/echo.wat`) built at test time, changed to
//! answer with the type `v<N>-b<boots>` (its version, and the boot count from its key-value
//! store) and to spin a little in every call, so that the old instance has a backlog to drain.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use rethink_node::config::{StubRunConfig, StubSource, StubsConfig};
use rethink_stubs::catalogue::sha256_hex;
use serde_json::json;
use tempfile::TempDir;

use crate::catalogue_reload::wrong_signature;
use crate::stubs_host::address;
use crate::stubs_host::guests::{self, Init};
use crate::support::client::RECV_TIMEOUT;
use crate::support::{DOMAIN, Rt, TestNode, get};

/// Messages in flight at once.
const WINDOW: usize = 32;
/// Replies from the new version after which the test stops sending.
const AFTER_SWAP: usize = 100;

/// The echo guest answering with type `v<version>-b<boots>`, spinning `spin` loop turns first.
fn versioned(version: u8, spin: u32) -> Vec<u8> {
    assert!(version < 10);
    let wat = guests::echo_wat(Init::Normal { timer_ms: 600_000 }, DOMAIN);
    let echo_else = "      (else\n        (call $send (local.get $id) (local.get $idl) (local.get $ty) (local.get $tyl)";
    assert!(
        wat.contains(echo_else),
        "the echo branch of echo.wat changed"
    );
    let wat = wat
        .replace(
            "(data (i32.const 320) \"listen\")",
            &format!("(data (i32.const 320) \"listen\")\n  (data (i32.const 400) \"v{version}-b0\")"),
        )
        .replace(
            echo_else,
            "      (else\n        (i32.store8 (i32.const 404) (i32.add (i32.const 48) (i32.load8_u (i32.const 1056))))\n        (call $send (local.get $id) (local.get $idl) (i32.const 400) (i32.const 5)",
        )
        .replace(
            "    (local $c i32)\n",
            &format!(
                "    (local $c i32) (local $n i32)\n    (local.set $n (i32.const {spin}))\n    (loop $spin (local.set $n (i32.sub (local.get $n) (i32.const 1))) (br_if $spin (i32.gt_s (local.get $n) (i32.const 0))))\n"
            ),
        );
    guests::component(&wat, guests::WIT, "protocol-stub")
}

/// Writes `bytes` to `dir/name` atomically (a rename), as an operator should.
fn put(dir: &Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).expect("write");
    std::fs::rename(&tmp, dir.join(name)).expect("rename");
}

fn config(dir: &Path, cache: &Path) -> StubsConfig {
    StubsConfig {
        dir: Some(dir.to_path_buf()),
        watch_interval: Duration::from_millis(20),
        cache_dir: cache.to_path_buf(),
        run: vec![StubRunConfig {
            name: "chatter".into(),
            source: StubSource::Catalogue("chat".into()),
            addresses: vec![address("chatter")],
            allow: Vec::new(),
            config: vec![("listen".into(), address("chatter"))],
            memory_bytes: 16 << 20,
            call_timeout: Duration::from_secs(1),
            mailbox: 64,
            patterns: Vec::new(),
            connector: false,
        }],
    }
}

/// The `rethink_stub_running` lines of the metrics.
async fn running_versions(node: &TestNode) -> Vec<String> {
    let (_, text) = get(node, "/metrics").await;
    text.lines()
        .filter(|l| l.starts_with("rethink_stub_running{"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_replaced_stub_serves_new_messages_while_the_old_instance_drains() {
    let stubs = TempDir::new().unwrap();
    let cache = TempDir::new().unwrap();
    let dir = stubs.path();
    let (one, two) = (versioned(1, 200_000), versioned(2, 200_000));
    put(dir, "chat.toml", b"version = \"1.0.0\"\n");
    put(dir, "chat.wasm", &one);
    let node = TestNode::spawn_with(|c| c.stubs = config(dir, cache.path())).await;
    let lines = running_versions(&node).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("stub=\"chatter\"")
            && lines[0].contains("source=\"chat\"")
            && lines[0].contains(&format!("sha256=\"{}\"", sha256_hex(&one)))
            && lines[0].contains("version=\"1.0.0\"")
            && lines[0].ends_with(" 1"),
        "{lines:?}"
    );

    let mut alice = Rt::open(&node, "alice").await;
    let me = alice.url.clone();
    let to = address("chatter");
    // Sends without pause (WINDOW in flight); the replacement is dropped in after 50 answers,
    // and sending stops once AFTER_SWAP answers came from the new version.
    let mut answered: BTreeMap<u64, String> = BTreeMap::new();
    let (mut sent, mut from_new, mut replaced) = (0u64, 0usize, None);
    // Answers of the old version received after the first of the new one: its drained backlog.
    let mut old_after_new = 0usize;
    let mut first_new = None;
    let deadline = Instant::now() + RECV_TIMEOUT * 4;
    loop {
        while from_new < AFTER_SWAP && (sent as usize) < answered.len() + WINDOW {
            alice
                .send(&json!({"id": sent, "type": "ping", "from": me, "to": to}))
                .await;
            sent += 1;
        }
        if answered.len() as u64 == sent {
            break;
        }
        let reply = alice.recv().await;
        let id = reply["id"].as_u64().unwrap_or_else(|| panic!("{reply}"));
        let kind = reply["type"].as_str().unwrap().to_owned();
        assert_eq!(reply["from"], json!(to), "{reply}");
        assert!(
            kind == "v1-b1" || kind == "v2-b2",
            "an answer of neither version: {reply}"
        );
        if kind == "v2-b2" {
            from_new += 1;
            first_new.get_or_insert_with(Instant::now);
        } else if from_new > 0 {
            old_after_new += 1;
        }
        assert!(
            answered.insert(id, kind).is_none(),
            "id {id} answered twice"
        );
        if answered.len() == 50 && replaced.is_none() {
            put(dir, "chat.toml", b"version = \"2.0.0\"\n");
            put(dir, "chat.wasm", &two);
            replaced = Some(Instant::now());
        }
        assert!(
            Instant::now() < deadline,
            "{sent} sent, {} answered, {from_new} by the new version",
            answered.len()
        );
    }
    // Every message answered once; the old version answered a prefix of them, the new one the
    // rest.
    assert_eq!(answered.len() as u64, sent);
    assert_eq!(*answered.keys().last().unwrap(), sent - 1);
    let old: Vec<u64> = answered
        .iter()
        .filter(|(_, k)| *k == "v1-b1")
        .map(|(id, _)| *id)
        .collect();
    let old_count = old.len() as u64;
    assert!(old_count >= 50, "{old_count} answered by the old version");
    assert_eq!(
        old,
        (0..old_count).collect::<Vec<_>>(),
        "the old version answered a prefix"
    );
    let swap = first_new.unwrap() - replaced.unwrap();
    println!(
        "{sent} messages: {old_count} answered by the old version ({old_after_new} of them after \
         the new version's first answer), the rest by the new one; {swap:?} from the file \
         written to the new version's first answer"
    );

    // Once the old instance has drained, only the new version runs.
    let deadline = Instant::now() + RECV_TIMEOUT;
    loop {
        let lines = running_versions(&node).await;
        if lines.len() == 1 {
            assert!(
                lines[0].contains(&format!("sha256=\"{}\"", sha256_hex(&two)))
                    && lines[0].contains("version=\"2.0.0\""),
                "{lines:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "still running: {lines:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // A replacement the catalogue refuses (a function type differs from the world) changes
    // nothing. The directory is read in one pass, in name order: once `other.wasm`, written
    // after it, is served, the refused `chat.wasm` has been read too.
    put(dir, "chat.wasm", &wrong_signature());
    put(dir, "other.wasm", &two);
    let deadline = Instant::now() + RECV_TIMEOUT;
    while get(&node, "/.well-known/protocolstub/other").await.0 != 200 {
        assert!(Instant::now() < deadline, "other not in the catalogue");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (_, descriptor) = get(&node, "/.well-known/protocolstub/chat").await;
    assert!(descriptor.contains(&sha256_hex(&two)), "{descriptor}");
    alice
        .send(&json!({"id": sent, "type": "ping", "from": me, "to": to}))
        .await;
    let reply = alice.recv().await;
    assert_eq!(
        (&reply["id"], &reply["type"]),
        (&json!(sent), &json!("v2-b2")),
        "{reply}"
    );
    let sent = sent + 1;

    // Removed from the directory: gone from the catalogue, the instance keeps its last version.
    std::fs::remove_file(dir.join("chat.wasm")).unwrap();
    let deadline = Instant::now() + RECV_TIMEOUT;
    while get(&node, "/.well-known/protocolstub/chat").await.0 != 404 {
        assert!(Instant::now() < deadline, "chat still in the catalogue");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The next frame alice gets is this answer: no message was answered twice meanwhile.
    alice
        .send(&json!({"id": sent, "type": "ping", "from": me, "to": to}))
        .await;
    let reply = alice.recv().await;
    assert_eq!(
        (&reply["id"], &reply["type"]),
        (&json!(sent), &json!("v2-b2")),
        "{reply}"
    );
}
