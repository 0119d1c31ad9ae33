//! Address allocation: single, block, by key, deallocation; ownership of allocated addresses.

use serde_json::json;

use crate::support::{DOMAIN, Rt, TestNode, allocation_endpoint};

#[tokio::test]
async fn allocates_single_and_block_addresses_in_the_domain() {
    let node = TestNode::spawn().await;
    let mut rt = Rt::open(&node, "rt-alloc").await;
    let one = rt.allocate(1).await;
    assert_eq!(one.len(), 1);
    assert!(
        one[0].starts_with(&format!("hyperty://{DOMAIN}/")),
        "{one:?}"
    );
    let block = rt.allocate(5).await;
    assert_eq!(block.len(), 5);
    let mut all = block.clone();
    all.extend(one);
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 6, "addresses are unique");
}

#[tokio::test]
async fn allocation_key_returns_the_same_addresses_and_deletes_them() {
    let node = TestNode::spawn().await;
    let mut rt = Rt::open(&node, "rt-key").await;
    let from = format!("{}/registry/allocation", rt.url);
    let req = json!({"type": "create", "from": from, "to": allocation_endpoint(),
        "body": {"scheme": "comm", "value": {"number": 2, "allocationKey": "obj-key"}}});
    let first = rt.request(req.clone()).await;
    assert_eq!(first["body"]["code"], 200, "{first}");
    let addrs = first["body"]["value"]["allocated"].clone();
    assert_eq!(addrs.as_array().unwrap().len(), 2);
    assert!(
        addrs[0]
            .as_str()
            .unwrap()
            .starts_with("comm://example.com/")
    );
    let again = rt.request(req).await;
    assert_eq!(
        again["body"]["value"]["allocated"], addrs,
        "same key, same addresses"
    );

    let del = rt
        .request(
            json!({"type": "delete", "from": from, "to": allocation_endpoint(),
            "body": {"resource": "obj-key"}}),
        )
        .await;
    assert_eq!(del["body"]["code"], 200, "{del}");
    assert_eq!(del["body"]["value"]["deallocated"], addrs);

    // Released: messages to them now get 404, and sending from them is spoofing.
    let mine = rt.allocate(1).await.remove(0);
    let to = addrs[0].as_str().unwrap();
    let resp = rt
        .request(json!({"type": "PING", "from": mine, "to": to, "body": {}}))
        .await;
    assert_eq!(resp["body"]["code"], 404, "{resp}");
    let spoof = rt
        .request(json!({"type": "PING", "from": to, "to": mine, "body": {}}))
        .await;
    assert_eq!(spoof["body"]["code"], 403, "{spoof}");
}

#[tokio::test]
async fn deallocates_by_children_resources_and_refuses_foreign_addresses() {
    let node = TestNode::spawn().await;
    let mut a = Rt::open(&node, "rt-a").await;
    let mut b = Rt::open(&node, "rt-b").await;
    let mine = a.allocate(2).await;
    let theirs = b.allocate(1).await;
    let from = format!("{}/registry/allocation", a.url);
    let foreign = a
        .request(
            json!({"type": "delete", "from": from, "to": allocation_endpoint(),
            "body": {"childrenResources": theirs}}),
        )
        .await;
    assert_eq!(
        foreign["body"]["code"], 404,
        "cannot release another runtime's address: {foreign}"
    );
    let del = a
        .request(
            json!({"type": "delete", "from": from, "to": allocation_endpoint(),
            "body": {"childrenResources": [mine[0]]}}),
        )
        .await;
    assert_eq!(del["body"]["code"], 200, "{del}");
    assert_eq!(del["body"]["value"]["deallocated"], json!([mine[0]]));
    // b's address still routes; a's released one does not.
    let ok = a
        .request(json!({"type": "PING", "from": mine[1], "to": mine[0]}))
        .await;
    assert_eq!(ok["body"]["code"], 404);
    a.send(&json!({"id": 1, "type": "PING", "from": mine[1], "to": theirs[0]}))
        .await;
    assert_eq!(b.recv().await["from"], json!(mine[1]));
}

#[tokio::test]
async fn refuses_bad_allocation_requests_with_400() {
    let node = TestNode::spawn_with(|c| c.allocation.max_number = 10).await;
    let mut rt = Rt::open(&node, "rt-bad-alloc").await;
    let from = format!("{}/registry/allocation", rt.url);
    for body in [
        json!({"value": {"number": 11}}),
        json!({"value": {"number": 0}}),
        json!({"scheme": "domain", "value": {"number": 1}}),
        json!({"scheme": "Not A Scheme", "value": {"number": 1}}),
        json!({"value": {"number": "three"}}),
    ] {
        let resp = rt
            .request(
                json!({"type": "create", "from": from, "to": allocation_endpoint(), "body": body}),
            )
            .await;
        assert_eq!(resp["body"]["code"], 400, "{body} -> {resp}");
        assert_eq!(resp["from"], json!(allocation_endpoint()));
    }
}

#[tokio::test]
async fn per_session_address_limit_is_enforced() {
    let node = TestNode::spawn_with(|c| c.allocation.max_per_session = 3).await;
    let mut rt = Rt::open(&node, "rt-limit").await;
    rt.allocate(3).await;
    let from = format!("{}/registry/allocation", rt.url);
    let resp = rt
        .request(
            json!({"type": "create", "from": from, "to": allocation_endpoint(),
            "body": {"value": {"number": 1}}}),
        )
        .await;
    assert_eq!(resp["body"]["code"], 403, "{resp}");
}

#[tokio::test]
async fn allocation_key_survives_a_restart() {
    let node = TestNode::spawn().await;
    let mut rt = Rt::open(&node, "rt-key-restart").await;
    let from = format!("{}/registry/allocation", rt.url);
    let req = json!({"type": "create", "from": from, "to": allocation_endpoint(),
        "body": {"value": {"number": 2, "allocationKey": "k"}}});
    let addrs = rt.request(req).await["body"]["value"]["allocated"].clone();
    rt.ack().await;
    let memory = rt.drop_connection();
    let node = node.restart().await;
    let (mut rt, reopen) = memory.resume(&node).await;
    assert_eq!(rt.recv().await["id"], reopen["id"]);
    let del = rt
        .request(
            json!({"type": "delete", "from": from, "to": allocation_endpoint(),
            "body": {"resource": "k"}}),
        )
        .await;
    assert_eq!(del["body"]["code"], 200, "{del}");
    assert_eq!(del["body"]["value"]["deallocated"], addrs);
}
