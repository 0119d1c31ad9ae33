//! The strict durability promise (issue 10, defect 4): nothing answered as accepted is lost,
//! whatever the recipient's state, even when the node's process is killed with SIGKILL.
//!
//! The node runs as a real child process with a long group-commit delay, so that the window in
//! which an accepted frame exists only in the node's memory would be wide. One recipient is
//! connected but does not read (its socket fills, frames pile up in its outbox), one is
//! disconnected. The sender learns that its messages were accepted from an explicit signal: the
//! answer to a later request, which the node reads only after every earlier frame was handled.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use crate::support::client::RtMemory;
use crate::support::{NodeProcess, Rt, get_at, metric};

/// Messages sent, each to both recipients, and their padding: enough to fill the stuck
/// recipient's socket buffers many times over.
const MESSAGES: u64 = 48;
const PAD: usize = 256 * 1024;

async fn open(node: &NodeProcess, name: &str) -> Rt {
    let (ws, _) = tokio_tungstenite::connect_async(node.ws_url())
        .await
        .unwrap();
    let mut rt = Rt::from_ws(ws, name);
    let resp = rt.open_session(json!({})).await;
    assert_eq!(resp["body"]["code"], 200, "{resp}");
    rt
}

/// Re-opens `memory`'s session on `node` and reads the replay up to the re-open's answer:
/// the message ids by seq.
async fn resume(node: &NodeProcess, memory: &RtMemory, got: &mut BTreeMap<u64, u64>) {
    let (ws, _) = tokio_tungstenite::connect_async(node.ws_url())
        .await
        .unwrap();
    let mut rt = Rt::from_ws(ws, "resumed");
    rt.url = memory.url.clone();
    rt.last_seq = memory.last_seq;
    let url = rt.url.clone();
    rt.send(
        &json!({"id": "resume", "type": "re-open", "from": url, "to": "mn:/session",
        "body": {"runtimeToken": memory.token, "lastSeq": memory.last_seq}}),
    )
    .await;
    loop {
        let v = rt.recv().await;
        if v["id"] == "resume" {
            assert_eq!(v["body"]["code"], 200, "{v}");
            return;
        }
        record(got, &v);
    }
}

fn record(got: &mut BTreeMap<u64, u64>, v: &serde_json::Value) {
    if v["type"] != "PING" {
        return;
    }
    let seq = v["seq"].as_u64().unwrap();
    let id = v["id"].as_u64().unwrap();
    assert!(got.insert(seq, id).is_none(), "seq {seq} delivered twice");
}

/// Waits until the node counts `n` connected sessions (its own published state).
async fn wait_connected(node: &NodeProcess, n: f64) {
    for _ in 0..250 {
        let (_, text) = get_at(node.addr(), "/metrics").await;
        if metric(&text, "rethink_sessions_connected") == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the node never counted {n} connected sessions");
}

#[tokio::test]
async fn accepted_messages_survive_sigkill_for_stalled_and_disconnected_recipients() {
    let dir = tempfile::TempDir::new().unwrap();
    let node = NodeProcess::spawn(
        dir.path(),
        &[
            ("RETHINK_STORE__COMMIT_DELAY_MS", "200"),
            ("RETHINK_SESSION__OUTBOX_MAX_BYTES", "268435456"),
        ],
    )
    .await;
    let mut sender = open(&node, "rt-sender").await;
    let from = sender.allocate(1).await.remove(0);
    let mut stuck = open(&node, "rt-stuck").await;
    let to_stuck = stuck.allocate(1).await.remove(0);
    let mut gone = open(&node, "rt-gone").await;
    let to_gone = gone.allocate(1).await.remove(0);
    gone.ack().await;
    let gone = gone.drop_connection();
    wait_connected(&node, 2.0).await;

    // `stuck` reads nothing from here on: its socket fills, then its outbox.
    let pad = "x".repeat(PAD);
    for id in 0..MESSAGES {
        sender
            .send(
                &json!({"id": id, "type": "PING", "from": from, "to": [to_stuck, to_gone],
                "body": {"pad": pad}}),
            )
            .await;
    }
    // Answered: the node handled every message before this request, so all were accepted.
    let resp = sender
        .request(json!({"type": "PING", "from": from, "to": "hyperty://example.com/nobody"}))
        .await;
    assert_eq!(resp["body"]["code"], 404, "{resp}");
    let mut node = node;
    node.kill().await;

    // What reached `stuck`'s socket before the kill, then the replay after a restart.
    let mut stuck_got = BTreeMap::new();
    while let Some(v) = stuck.try_recv(Duration::from_secs(5)).await {
        record(&mut stuck_got, &v);
    }
    let stuck = stuck.drop_connection();
    let node = node.restart().await;
    resume(&node, &stuck, &mut stuck_got).await;
    let mut gone_got = BTreeMap::new();
    resume(&node, &gone, &mut gone_got).await;

    for (name, got) in [
        ("connected, not reading", &stuck_got),
        ("disconnected", &gone_got),
    ] {
        let mut ids: Vec<u64> = got.values().copied().collect();
        ids.sort_unstable();
        assert_eq!(
            ids,
            (0..MESSAGES).collect::<Vec<_>>(),
            "{name} recipient: every accepted message exactly once"
        );
    }
}
