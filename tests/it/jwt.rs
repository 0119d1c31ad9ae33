//! JWT / OIDC ID tokens: a node with an `[[auth.jwt]]` issuer whose key set is a file, and
//! anonymous runtimes refused. A valid RS256 token opens a session (in the `Authorization`
//! header, the `access_token` query parameter or `body.token` of `open`); a token with the wrong
//! audience, an expired one, one signed by another key under the same `kid`, and an HS256 token
//! keyed with the issuer's RSA public key are refused: HTTP 401 at the upgrade, a 401 response
//! to `open`.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::client::RECV_TIMEOUT;
use crate::support::jwt::{ISS, KEYS, issuer, now, sign};
use crate::support::{Rt, TestNode};

const AUD: &str = "rethink-node-it";

fn claims(aud: &str, exp: u64) -> Value {
    json!({"iss": ISS, "aud": aud, "sub": "alice", "exp": exp, "iat": now()})
}

/// A node trusting `ISS` (RS256 only) with its key set in a file; no anonymous runtimes.
async fn node(dir: &TempDir) -> TestNode {
    let issuer = issuer(dir.path(), AUD, 30);
    TestNode::spawn_with(|c| {
        c.auth.allow_anonymous = false;
        c.auth.jwt = vec![issuer];
    })
    .await
}

async fn connect_with_header(node: &TestNode, token: &str) -> Result<Rt, u16> {
    let mut req = node.ws_url().into_client_request().unwrap();
    req.headers_mut()
        .insert("Authorization", format!("Bearer {token}").parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(Rt::from_ws(ws, "rt-jwt-header")),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("unexpected connection error: {e}"),
    }
}

#[tokio::test]
async fn a_valid_id_token_opens_a_session() {
    let dir = TempDir::new().unwrap();
    let node = node(&dir).await;
    let token = sign(
        Algorithm::RS256,
        &KEYS.0.encoding,
        &claims(AUD, now() + 600),
    );

    let mut rt = connect_with_header(&node, &token)
        .await
        .expect("a valid JWT in the header is accepted");
    let ok = rt.open_session(json!({})).await;
    assert_eq!(ok["body"]["code"], 200, "{ok}");
    assert!(ok["body"]["value"]["runtimeToken"].is_string(), "{ok}");

    let url = format!("{}?access_token={token}", node.ws_url());
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("a valid JWT in the query is accepted");
    let mut q = Rt::from_ws(ws, "rt-jwt-query");
    assert_eq!(q.open_session(json!({})).await["body"]["code"], 200);

    let mut body = Rt::connect(&node, "rt-jwt-body").await;
    assert_eq!(body.open_session(json!({})).await["body"]["code"], 401);
    let ok = body.open_session(json!({ "token": token })).await;
    assert_eq!(ok["body"]["code"], 200, "{ok}");
}

#[tokio::test]
async fn bad_id_tokens_are_refused_at_upgrade_and_at_open() {
    let dir = TempDir::new().unwrap();
    let node = node(&dir).await;
    let (issuer_key, other_key) = &*KEYS;
    let cases = [
        (
            "wrong audience",
            sign(
                Algorithm::RS256,
                &issuer_key.encoding,
                &claims("another-app", now() + 600),
            ),
        ),
        (
            "expired",
            sign(
                Algorithm::RS256,
                &issuer_key.encoding,
                &claims(AUD, now() - 300),
            ),
        ),
        (
            "forged (another key, same kid)",
            sign(
                Algorithm::RS256,
                &other_key.encoding,
                &claims(AUD, now() + 600),
            ),
        ),
        (
            "algorithm confusion (HS256 keyed with the RSA public key)",
            sign(
                Algorithm::HS256,
                &EncodingKey::from_secret(&issuer_key.public_der),
                &claims(AUD, now() + 600),
            ),
        ),
    ];
    let mut rt = Rt::connect(&node, "rt-jwt-bad").await;
    for (what, token) in &cases {
        match connect_with_header(&node, token).await {
            Err(status) => assert_eq!(status, 401, "{what}: header"),
            Ok(_) => panic!("{what}: a bad JWT in the header must be refused with HTTP 401"),
        }
        let refused = rt.open_session(json!({ "token": token })).await;
        assert_eq!(
            refused["body"]["code"], 401,
            "{what}: body.token: {refused}"
        );
    }
    // The same connection still opens a session with a good token.
    let good = sign(
        Algorithm::RS256,
        &issuer_key.encoding,
        &claims(AUD, now() + 600),
    );
    assert_eq!(
        rt.open_session(json!({ "token": good })).await["body"]["code"],
        200
    );
}

#[tokio::test]
async fn a_session_ends_when_its_token_expires() {
    let dir = TempDir::new().unwrap();
    let issuer = issuer(dir.path(), AUD, 30);
    // On a manual clock (that starts at the system time); no idle timeout within the test.
    let node = TestNode::spawn_with_clock(|c| {
        c.auth.allow_anonymous = false;
        c.auth.jwt = vec![issuer];
        c.session.idle_timeout = Duration::from_secs(3600);
    })
    .await;
    let short = sign(Algorithm::RS256, &KEYS.0.encoding, &claims(AUD, now() + 60));
    let long = sign(
        Algorithm::RS256,
        &KEYS.0.encoding,
        &claims(AUD, now() + 3600),
    );
    let mut a = Rt::connect(&node, "rt-short").await;
    assert_eq!(
        a.open_session(json!({ "token": short })).await["body"]["code"],
        200
    );
    let fa = a.allocate(1).await.remove(0);
    let mut b = Rt::connect(&node, "rt-long").await;
    assert_eq!(
        b.open_session(json!({ "token": long })).await["body"]["code"],
        200
    );
    let fb = b.allocate(1).await.remove(0);

    // The token expires 60 s (of the node's clock, from the whole second the token was made
    // in) after the start: not before.
    node.advance(Duration::from_secs(58)).await;
    a.expect_nothing_queued().await;
    node.advance(Duration::from_secs(5)).await;
    let expired = a.recv().await;
    assert_eq!(expired["body"]["code"], 401, "{expired}");
    assert_eq!(expired["from"], "mn:/session");
    assert_eq!(a.closed_with(RECV_TIMEOUT).await, Some(1008));
    // The session is gone with its addresses.
    let gone = b
        .request(json!({"type": "PING", "from": fb, "to": fa}))
        .await;
    assert_eq!(gone["body"]["code"], 404, "{gone}");
}
