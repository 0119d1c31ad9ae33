//! A connector on several nodes (issue 14): two node programs on one PostgreSQL database and
//! one NATS server, both running the echo bot of `stubs/guests/echo-connector`. One node feeds
//! the connector its Matrix events (the holder of the advisory lock
//! `rethink.connector-feed.echo`), so each message said in the room, through either node, is
//! answered once (two feeders would each answer it); when the feeding node is killed, the other
//! one goes on from the stored feed position.

use super::cluster::cluster_with;
use super::connector_feed::{bot_texts_until, register, room_with_the_bot, say, write_config};
use super::support::get_at;
use super::support::http::metric_if_any;
use super::support::process::NodeProcess;

/// How many export calls `node` made to its instance of the echo bot (`init` and `on-event`).
pub(crate) async fn calls_by(node: &NodeProcess) -> f64 {
    let (_, text) = get_at(node.addr(), "/metrics").await;
    metric_if_any(&text, "rethink_stub_calls_total{stub=\"echo\"}").unwrap_or(0.0)
}

#[tokio::test]
async fn one_node_feeds_a_connector_and_another_goes_on_when_it_dies() {
    let etc = tempfile::tempdir().expect("tempdir");
    let config = write_config(etc.path());
    let mut c = cluster_with(2, &[("RETHINK_CONFIG", &config)]).await;
    let (a, b) = (c.nodes[0].addr(), c.nodes[1].addr());
    let alice = register(a, "alice").await;
    let room = room_with_the_bot(a, &alice).await;

    // Said through both nodes: each answered once, in order.
    for i in 1..=6 {
        let node = if i % 2 == 0 { b } else { a };
        say(node, &alice, &room, &format!("t{i}"), &format!("m{i}")).await;
    }
    let texts = bot_texts_until(b, &alice, &room, |t| {
        t.last().is_some_and(|l| l == "echo: m6")
    })
    .await;
    let want: Vec<String> = (1..=6).map(|i| format!("echo: m{i}")).collect();
    assert_eq!(texts, want, "every message answered once, in order");
    let calls = [calls_by(&c.nodes[0]).await, calls_by(&c.nodes[1]).await];
    let feeder = usize::from(calls[1] > calls[0]);
    assert!(
        calls[1 - feeder] < 2.0 && calls[feeder] >= 7.0,
        "one node's instance is given the events (the other only `init`): {calls:?}"
    );

    // The feeding node dies; the other one goes on from the stored position. An event given to
    // the dead node's instance but not yet recorded as handled may be given again (at least
    // once); every later one is answered once.
    c.nodes[feeder].kill().await;
    let survivor = c.nodes[1 - feeder].addr();
    say(survivor, &alice, &room, "t7", "m7").await;
    let texts = bot_texts_until(survivor, &alice, &room, |t| {
        t.last().is_some_and(|l| l == "echo: m7")
    })
    .await;
    let (before, after) = texts.split_at(6);
    assert_eq!(before, want, "nothing lost or doubled before the kill");
    let mut again = after.to_vec();
    again.dedup();
    assert!(
        again
            .iter()
            .all(|t| t == "echo: m7" || t == "echo: m6" || t == "echo: m5"),
        "after the kill, at most the last events again, then m7: {after:?}"
    );
    assert_eq!(
        after.iter().filter(|t| *t == "echo: m7").count(),
        1,
        "m7 answered once: {after:?}"
    );
}
