//! Session takeover with another identity (issue 10, defect 8): with anonymous runtimes off, a
//! `re-open` must present the identity the session was opened with. Alice's runtimeToken over
//! Bob's connection, or with no credential at all, is 401 and leaves her session as it was;
//! her own token resumes it.

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::{Rt, TestNode};
use rethink_node::config::StaticToken;

const ALICE: &str = "alice-token-0123456789";
const BOB: &str = "bob-token-0123456789ab";

async fn connect(node: &TestNode, bearer: Option<&str>) -> Rt {
    let mut req = node.ws_url().into_client_request().unwrap();
    if let Some(token) = bearer {
        req.headers_mut()
            .insert("Authorization", format!("Bearer {token}").parse().unwrap());
    }
    let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    Rt::from_ws(ws, "rt-alice")
}

async fn reopen(rt: &mut Rt, runtime_token: &str, body_token: Option<&str>) -> Value {
    let mut body = json!({"runtimeToken": runtime_token, "lastSeq": rt.last_seq});
    if let Some(t) = body_token {
        body["token"] = json!(t);
    }
    let url = rt.url.clone();
    rt.request(json!({"type": "re-open", "from": url, "to": "mn:/session", "body": body}))
        .await
}

#[tokio::test]
async fn a_session_is_resumed_only_with_the_identity_it_was_opened_with() {
    let node = TestNode::spawn_with(|c| {
        c.auth.allow_anonymous = false;
        c.auth.tokens = [
            ("user://example.com/alice", ALICE),
            ("user://example.com/bob", BOB),
        ]
        .into_iter()
        .map(|(subject, token)| StaticToken {
            token: token.into(),
            subject: subject.into(),
            runtime: None,
        })
        .collect();
    })
    .await;
    let mut alice = connect(&node, None).await;
    assert_eq!(
        alice.open_session(json!({"token": ALICE})).await["body"]["code"],
        200
    );
    let hyperty = alice.allocate(1).await.remove(0);
    alice.ack().await;
    let runtime_token = alice.token.clone().unwrap();
    let last_seq = alice.last_seq;
    drop(alice.drop_connection());

    // Bob's connection (header token), and Bob's token in the body: 401.
    let mut bob = connect(&node, Some(BOB)).await;
    bob.last_seq = last_seq;
    let resp = reopen(&mut bob, &runtime_token, None).await;
    assert_eq!(resp["body"]["code"], 401, "{resp}");
    let mut bob = connect(&node, None).await;
    bob.last_seq = last_seq;
    let resp = reopen(&mut bob, &runtime_token, Some(BOB)).await;
    assert_eq!(resp["body"]["code"], 401, "{resp}");
    // No credential at all: 401.
    let mut nobody = connect(&node, None).await;
    nobody.last_seq = last_seq;
    let resp = reopen(&mut nobody, &runtime_token, None).await;
    assert_eq!(resp["body"]["code"], 401, "{resp}");

    // The session was left as it was: a message sent to Alice meanwhile is replayed to her.
    let mut carol = connect(&node, Some(BOB)).await;
    carol.url = "hyperty-runtime://example.com/rt-carol".into();
    assert_eq!(carol.open_session(json!({})).await["body"]["code"], 200);
    let from = carol.allocate(1).await.remove(0);
    carol
        .send(&json!({"id": "while-away", "type": "PING", "from": from, "to": hyperty}))
        .await;
    let resp = carol
        .request(json!({"type": "PING", "from": from, "to": "hyperty://example.com/nobody"}))
        .await;
    assert_eq!(
        resp["body"]["code"], 404,
        "carol's message was handled first"
    );

    // Alice's own token resumes it (in the body here; the header works the same).
    let mut alice = connect(&node, None).await;
    alice.last_seq = last_seq;
    let url = alice.url.clone();
    alice
        .send(
            &json!({"id": "resume", "type": "re-open", "from": url, "to": "mn:/session",
            "body": {"runtimeToken": runtime_token, "lastSeq": last_seq, "token": ALICE}}),
        )
        .await;
    let replayed = alice.recv().await;
    assert_eq!(replayed["id"], "while-away", "{replayed}");
    let resp = alice.recv().await;
    assert_eq!(resp["id"], "resume");
    assert_eq!(resp["body"]["code"], 200, "{resp}");
    let mut again = connect(&node, Some(ALICE)).await;
    again.last_seq = alice.last_seq;
    let resp = reopen(&mut again, &runtime_token, None).await;
    assert_eq!(resp["body"]["code"], 200, "header token: {resp}");
}
