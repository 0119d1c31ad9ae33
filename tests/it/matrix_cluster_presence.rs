//! Presence on several nodes (issue 14): each node keeps its own view of who is syncing; the
//! nodes tell each other over NATS (`cluster/presence.rs`), so that a user syncing through one
//! node is not timed out to `offline` by another node that knew them. Two node programs on one
//! fresh PostgreSQL database and one NATS server, presence timing out after 1 s.

use serde_json::Value;

use crate::cluster::cluster_with;
use crate::matrix_cluster::alice_and_bob;
use crate::support::matrix::{V3, get, next_batch, ok, sync, user_id};

/// Alice's presence states in a `/sync` answer, in order.
fn alice_states(body: &Value) -> Vec<String> {
    let alice = user_id("alice");
    body["presence"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["sender"] == alice.as_str())
        .filter_map(|e| e["content"]["presence"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn a_user_syncing_through_one_node_does_not_go_offline_on_another() {
    let c = cluster_with(
        2,
        &[("RETHINK_MATRIX__PRESENCE__OFFLINE_TIMEOUT_MS", "1000")],
    )
    .await;
    let (n1, n2) = (&c.nodes[0], &c.nodes[1]);
    let (alice, bob, _room) = alice_and_bob(n1, n2).await;
    // Node 2 knows Alice (online): she synced through it once.
    sync(n2, &alice.token, None).await;
    let alice_since = next_batch(&sync(n1, &alice.token, None).await);
    let mut since = next_batch(&sync(n2, &bob.token, None).await);

    // Alice syncs through node 1, as a client does, for four offline timeouts; Bob watches her
    // presence through node 2 meanwhile.
    let alice_syncs = async {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(4);
        let mut since = alice_since;
        while std::time::Instant::now() < until {
            let path = format!("{V3}/sync?timeout=500&set_presence=online&since={since}");
            since = next_batch(&ok(get(n1, &path, &alice.token).await));
        }
    };
    tokio::pin!(alice_syncs);
    let mut seen = Vec::new();
    loop {
        let poll_path = format!("{V3}/sync?timeout=500&since={since}");
        let poll = get(n2, &poll_path, &bob.token);
        tokio::select! {
            biased;
            () = &mut alice_syncs => break,
            answer = poll => {
                let body = ok(answer);
                seen.extend(alice_states(&body));
                since = next_batch(&body);
            }
        }
    }
    assert!(
        !seen.iter().any(|s| s == "offline"),
        "Alice went offline while syncing through node 1: {seen:?}"
    );

    // Her sync over, she goes offline a timeout later, and Bob sees it through node 2.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let body = ok(get(
            n2,
            &format!("{V3}/sync?timeout=1000&since={since}"),
            &bob.token,
        )
        .await);
        since = next_batch(&body);
        if alice_states(&body).iter().any(|s| s == "offline") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Alice never went offline"
        );
    }
}
