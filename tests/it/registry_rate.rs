//! The rate limit holds the callers of a connector, not the connector: with
//! `session.rate_per_second` at 1 (burst 10), three runtimes each within their own burst get
//! 24 lookups answered by the one registry session (which, held to the same limit, would answer
//! 10 and refuse the rest), and a runtime past its own burst gets 429.

use serde_json::json;

use crate::support::connectors::{read, registered_hyperty, registry, with_registry};
use crate::support::{Rt, TestNode};

const BURST: u32 = 10;
const LOOKUPS: u64 = 8;

#[tokio::test]
async fn the_registry_answers_past_one_runtimes_rate() {
    let node = TestNode::spawn_with(|c| {
        with_registry(c);
        c.session.rate_per_second = 1;
        c.session.rate_burst = BURST;
    })
    .await;
    let (_owner, h) = registered_hyperty(&node).await;

    let mut readers = Vec::new();
    for i in 0..3 {
        let mut rt = Rt::open(&node, &format!("reader{i}")).await;
        for id in 1..=LOOKUPS {
            rt.send(&read(id, &rt, &h)).await;
        }
        readers.push(rt);
    }
    // 24 answers from the registry's one session, more than its burst.
    for rt in &mut readers {
        for id in 1..=LOOKUPS {
            let r = rt.recv_response(&json!(id)).await;
            assert_eq!(r["from"], registry(), "{r}");
            assert_eq!(r["body"]["code"], 200, "{r}");
            assert!(r["body"]["value"][&h].is_object(), "{r}");
        }
    }

    // The caller is held to its own limit: 20 more in a row overrun its burst.
    let rt = &mut readers[0];
    for id in 100..120 {
        rt.send(&read(id, rt, &h)).await;
    }
    // Refusals come from the node at once, answers from the registry: in any order.
    let mut codes = Vec::new();
    for _ in 100..120 {
        let r = rt.recv().await;
        assert_eq!(r["type"], "response", "{r}");
        codes.push(r["body"]["code"].clone());
    }
    assert!(codes.contains(&json!(429)), "{codes:?}");
}
