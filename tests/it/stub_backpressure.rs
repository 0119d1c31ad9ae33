//! A stub with many more requests outstanding than its outgoing queue holds (256): the
//! registry connector, 16 runtimes with 64 lookups each outstanding at once. The host gives the
//! stub another message only while its outgoing queue has room for the answers
//! (`BusPort::ready`), so every lookup is answered, exactly once, none refused by the stub's
//! full queue (which the registry would drop, leaving its caller without an answer).

use std::collections::BTreeSet;

use serde_json::json;

use crate::support::connectors::{read, registered_hyperty, registry, with_registry};
use crate::support::{Rt, TestNode};

const RUNTIMES: usize = 16;
/// Lookups outstanding per runtime: 16 x 64 = 1,024, four times the outgoing queue.
const WINDOW: u64 = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_lookup_is_answered_once_past_the_outgoing_queue() {
    let node = TestNode::spawn_with(|c| {
        with_registry(c);
        // The callers' own rate limit is not what this test is about.
        c.session.rate_per_second = 1_000_000;
        c.session.rate_burst = 1_000_000;
    })
    .await;
    let (_owner, h) = registered_hyperty(&node).await;

    let mut readers = Vec::new();
    for i in 0..RUNTIMES {
        readers.push(Rt::open(&node, &format!("reader{i}")).await);
    }
    // Every runtime's whole window is sent before any answer is read.
    for rt in &mut readers {
        for id in 1..=WINDOW {
            rt.send(&read(id, rt, &h)).await;
        }
    }
    for (i, rt) in readers.iter_mut().enumerate() {
        let mut answered = BTreeSet::new();
        while answered.len() < WINDOW as usize {
            // A lost answer fails here: `recv` gives up after its timeout.
            let r = rt.recv().await;
            assert_eq!(r["type"], "response", "reader{i}: {r}");
            assert_eq!(r["from"], registry(), "reader{i}: {r}");
            assert_eq!(r["body"]["code"], 200, "reader{i}: {r}");
            assert!(r["body"]["value"][&h].is_object(), "reader{i}: {r}");
            let id = r["id"].as_u64().expect("a numeric id");
            assert!((1..=WINDOW).contains(&id), "reader{i}: {r}");
            assert!(answered.insert(id), "reader{i}: answered twice: {r}");
        }
        // Nothing more for the window: the next answer is the one to a new lookup (the
        // registry answers one runtime's lookups in order).
        rt.send(&read(WINDOW + 1, rt, &h)).await;
        let r = rt.recv().await;
        assert_eq!(r["id"], json!(WINDOW + 1), "reader{i}: {r}");
    }
}
