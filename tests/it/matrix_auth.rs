//! The Matrix Client-Server API, first slice: accounts and authentication.
//!
//! A real, independently written client (matrix-sdk) registers through user-interactive
//! authentication, logs in, asks who it is, logs out, and logs in again after a restart. Raw
//! HTTP/1.1 checks every error path with its exact status and `errcode`, and JWT login with an
//! `[[auth.jwt]]` issuer whose key set is a file.

use jsonwebtoken::{Algorithm, EncodingKey};
use matrix_sdk::Client;
use matrix_sdk::ruma::api::client::account::register::v3::Request as RegistrationRequest;
use matrix_sdk::ruma::api::client::uiaa;
use rethink_node::config::StaticToken;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::jwt::{ISS, KEYS, issuer, now, sign};
use crate::support::{DOMAIN, TestNode};

// --- raw HTTP -------------------------------------------------------------------------------

/// A minimal HTTP/1.1 request (one per connection): status and JSON body (`Null` if empty, a
/// JSON string if the body is not JSON).
async fn call(
    node: &TestNode,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
) -> (u16, Value) {
    let mut s = TcpStream::connect(node.addr()).await.expect("connect");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if let Some(b) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    } else if method == "POST" || method == "PUT" {
        head.push_str("Content-Length: 0\r\n");
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await.expect("write");
    if let Some(b) = body {
        s.write_all(b).await.expect("write body");
    }
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.expect("read");
    let text = String::from_utf8(out).expect("utf-8 response");
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let json = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_owned()))
    };
    (status, json)
}

async fn get(node: &TestNode, path: &str, token: Option<&str>) -> (u16, Value) {
    call(node, "GET", path, token, None).await
}

async fn post(node: &TestNode, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
    call(node, "POST", path, token, Some(body.to_string().as_bytes())).await
}

/// Asserts a Matrix error answer.
#[track_caller]
fn assert_error(answer: &(u16, Value), status: u16, errcode: &str) {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["errcode"], errcode, "{}", answer.1);
    assert!(answer.1["error"].is_string(), "{}", answer.1);
}

const REGISTER: &str = "/_matrix/client/v3/register";
const LOGIN: &str = "/_matrix/client/v3/login";
const WHOAMI: &str = "/_matrix/client/v3/account/whoami";

/// Registers `user` through the full dummy flow; returns the access token.
async fn register(node: &TestNode, user: &str, password: &str) -> String {
    let req = json!({"username": user, "password": password});
    let (status, uia) = post(node, REGISTER, None, &req).await;
    assert_eq!(status, 401, "{uia}");
    let mut req = req;
    req["auth"] = json!({"type": "m.login.dummy", "session": uia["session"]});
    let (status, done) = post(node, REGISTER, None, &req).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["user_id"], format!("@{user}:{DOMAIN}"));
    done["access_token"].as_str().expect("token").to_owned()
}

fn password_login(user: &str, password: &str) -> Value {
    json!({
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user},
        "password": password,
    })
}

async fn login(node: &TestNode, user: &str, password: &str) -> Value {
    let (status, body) = post(node, LOGIN, None, &password_login(user, password)).await;
    assert_eq!(status, 200, "{body}");
    body
}

// --- matrix-sdk -------------------------------------------------------------------------------

async fn sdk_client(node: &TestNode) -> Client {
    Client::builder()
        .homeserver_url(format!("http://{}", node.addr()))
        .build()
        .await
        .expect("matrix-sdk client")
}

#[tokio::test]
async fn matrix_sdk_registers_logs_in_and_logs_in_again_after_a_restart() {
    let node = TestNode::spawn().await;
    let client = sdk_client(&node).await;
    let auth = client.matrix_auth();

    let mut request = RegistrationRequest::new();
    request.username = Some("alice".to_owned());
    request.password = Some("correct horse".to_owned());
    request.initial_device_display_name = Some("sdk test".to_owned());
    let err = auth
        .register(request.clone())
        .await
        .expect_err("the first request asks for user-interactive auth");
    let info = err.as_uiaa_response().expect("a UIAA answer");
    assert_eq!(info.flows.len(), 1);
    assert_eq!(info.flows[0].stages, vec![uiaa::AuthType::Dummy]);
    let mut dummy = uiaa::Dummy::new();
    dummy.session = info.session.clone();
    request.auth = Some(uiaa::AuthData::Dummy(dummy));
    let registered = auth.register(request).await.expect("registration");
    assert_eq!(registered.user_id.as_str(), format!("@alice:{DOMAIN}"));
    assert!(registered.access_token.is_some());

    let client = sdk_client(&node).await;
    client
        .matrix_auth()
        .login_username("alice", "correct horse")
        .initial_device_display_name("sdk login")
        .send()
        .await
        .expect("password login");
    let me = client.whoami().await.expect("whoami");
    assert_eq!(me.user_id.as_str(), format!("@alice:{DOMAIN}"));
    assert_eq!(me.device_id, client.device_id().map(ToOwned::to_owned));
    let token = client.access_token().expect("logged in");
    client.matrix_auth().logout().await.expect("logout");
    assert_error(
        &get(&node, WHOAMI, Some(&token)).await,
        401,
        "M_UNKNOWN_TOKEN",
    );

    let node = node.restart().await;
    let client = sdk_client(&node).await;
    client
        .matrix_auth()
        .login_username(format!("@alice:{DOMAIN}"), "correct horse")
        .send()
        .await
        .expect("the account survives a restart");
    let me = client.whoami().await.expect("whoami after restart");
    assert_eq!(me.user_id.as_str(), format!("@alice:{DOMAIN}"));
}

// --- discovery --------------------------------------------------------------------------------

#[tokio::test]
async fn versions_capabilities_and_login_flows() {
    let node = TestNode::spawn().await;
    let (status, versions) = get(&node, "/_matrix/client/versions", None).await;
    assert_eq!(status, 200);
    let list = versions["versions"].as_array().expect("versions");
    for v in ["v1.1", "v1.12"] {
        assert!(list.iter().any(|x| x == v), "{versions}");
    }
    let (status, flows) = get(&node, LOGIN, None).await;
    assert_eq!(status, 200);
    assert_eq!(flows, json!({"flows": [{"type": "m.login.password"}]}));

    assert_error(
        &get(&node, "/_matrix/client/v3/capabilities", None).await,
        401,
        "M_MISSING_TOKEN",
    );
    let token = register(&node, "carol", "pw-carol").await;
    let (status, caps) = get(&node, "/_matrix/client/v3/capabilities", Some(&token)).await;
    assert_eq!(status, 200, "{caps}");
    let caps = &caps["capabilities"];
    assert_eq!(caps["m.change_password"]["enabled"], false, "{caps}");
    assert_eq!(caps["m.room_versions"]["default"], "11", "{caps}");
    assert_eq!(
        caps["m.room_versions"]["available"],
        json!({"11": "stable"}),
        "{caps}"
    );
}

// --- tokens -------------------------------------------------------------------------------------

#[tokio::test]
async fn access_tokens_are_required_checked_and_read_from_the_query() {
    let node = TestNode::spawn().await;
    let token = register(&node, "dave", "pw-dave").await;

    assert_error(&get(&node, WHOAMI, None).await, 401, "M_MISSING_TOKEN");
    let bad = get(&node, WHOAMI, Some("rtm_not-a-token")).await;
    assert_error(&bad, 401, "M_UNKNOWN_TOKEN");
    assert_eq!(bad.1["soft_logout"], false, "{}", bad.1);

    let (status, me) = get(&node, WHOAMI, Some(&token)).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["user_id"], format!("@dave:{DOMAIN}"));
    assert!(me["device_id"].is_string(), "{me}");
    assert!(me.get("is_guest").is_none_or(|g| g == false), "{me}");

    let (status, me) = get(&node, &format!("{WHOAMI}?access_token={token}"), None).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["user_id"], format!("@dave:{DOMAIN}"));
    assert_error(
        &get(&node, &format!("{WHOAMI}?access_token=nope"), None).await,
        401,
        "M_UNKNOWN_TOKEN",
    );
}

#[tokio::test]
async fn logout_revokes_the_token_and_logout_all_every_device() {
    let node = TestNode::spawn().await;
    register(&node, "erin", "pw-erin").await;
    let one = login(&node, "erin", "pw-erin").await;
    let one = one["access_token"].as_str().unwrap().to_owned();
    // No body at all: every field of logout is optional.
    let (status, body) = call(&node, "POST", "/_matrix/client/v3/logout", Some(&one), None).await;
    assert_eq!((status, &body), (200, &json!({})));
    assert_error(
        &get(&node, WHOAMI, Some(&one)).await,
        401,
        "M_UNKNOWN_TOKEN",
    );

    let a = login(&node, "erin", "pw-erin").await;
    let b = login(&node, "@erin:example.com", "pw-erin").await;
    assert_ne!(a["device_id"], b["device_id"]);
    let (a, b) = (
        a["access_token"].as_str().unwrap().to_owned(),
        b["access_token"].as_str().unwrap().to_owned(),
    );
    assert_eq!(get(&node, WHOAMI, Some(&b)).await.0, 200);
    let (status, body) = call(
        &node,
        "POST",
        "/_matrix/client/v3/logout/all",
        Some(&a),
        None,
    )
    .await;
    assert_eq!((status, &body), (200, &json!({})));
    for t in [&a, &b] {
        assert_error(&get(&node, WHOAMI, Some(t)).await, 401, "M_UNKNOWN_TOKEN");
    }
}

#[tokio::test]
async fn a_login_with_a_known_device_id_replaces_its_token() {
    let node = TestNode::spawn().await;
    register(&node, "faye", "pw-faye").await;
    let mut req = password_login("faye", "pw-faye");
    req["device_id"] = "PHONE".into();
    let (_, first) = post(&node, LOGIN, None, &req).await;
    assert_eq!(first["device_id"], "PHONE", "{first}");
    let (_, second) = post(&node, LOGIN, None, &req).await;
    assert_eq!(second["device_id"], "PHONE", "{second}");
    let old = first["access_token"].as_str().unwrap();
    assert_error(&get(&node, WHOAMI, Some(old)).await, 401, "M_UNKNOWN_TOKEN");
    let (status, me) = get(&node, WHOAMI, second["access_token"].as_str()).await;
    assert_eq!((status, &me["device_id"]), (200, &json!("PHONE")));
}

// --- bad requests -------------------------------------------------------------------------------

#[tokio::test]
async fn malformed_requests_get_exact_errcodes() {
    let node = TestNode::spawn().await;
    let not_json = call(&node, "POST", LOGIN, None, Some(b"{\"type\": ")).await;
    assert_error(&not_json, 400, "M_NOT_JSON");
    let wrong_types = json!({
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": 42},
        "password": true,
    });
    assert_error(
        &post(&node, LOGIN, None, &wrong_types).await,
        400,
        "M_BAD_JSON",
    );
    let wrong_types = json!({"username": ["alice"], "password": 7});
    assert_error(
        &post(&node, REGISTER, None, &wrong_types).await,
        400,
        "M_BAD_JSON",
    );

    assert_error(
        &get(&node, "/_matrix/client/v3/no/such/endpoint", None).await,
        404,
        "M_UNRECOGNIZED",
    );
    assert_error(
        &post(&node, "/_matrix/federation/v1/send/1", None, &json!({})).await,
        404,
        "M_UNRECOGNIZED",
    );
    assert_error(
        &get(&node, "/_matrix/client/v3/logout", None).await,
        405,
        "M_UNRECOGNIZED",
    );
    let huge = vec![b' '; 1024 * 1024 + 1];
    assert_error(
        &call(&node, "POST", LOGIN, None, Some(&huge)).await,
        413,
        "M_TOO_LARGE",
    );
    // Outside /_matrix the node's own 404 stays.
    assert_eq!(get(&node, "/no-such-path", None).await.0, 404);
}

// --- password login -----------------------------------------------------------------------------

#[tokio::test]
async fn password_login_failures_are_forbidden() {
    let node = TestNode::spawn().await;
    register(&node, "gina", "pw-gina").await;
    let wrong = post(&node, LOGIN, None, &password_login("gina", "nope")).await;
    assert_error(&wrong, 403, "M_FORBIDDEN");
    let unknown = post(&node, LOGIN, None, &password_login("nobody", "pw-gina")).await;
    assert_error(&unknown, 403, "M_FORBIDDEN");
    assert_eq!(wrong.1["error"], unknown.1["error"], "failures look alike");
    let other_server = password_login("@gina:elsewhere.org", "pw-gina");
    assert_error(
        &post(&node, LOGIN, None, &other_server).await,
        403,
        "M_FORBIDDEN",
    );

    let ok = login(&node, "GINA", "pw-gina").await;
    assert_eq!(ok["user_id"], format!("@gina:{DOMAIN}"));
    assert!(ok["device_id"].is_string());

    let email = json!({
        "type": "m.login.password",
        "identifier": {"type": "m.id.thirdparty", "medium": "email", "address": "g@example.com"},
        "password": "pw-gina",
    });
    assert_error(&post(&node, LOGIN, None, &email).await, 400, "M_UNKNOWN");
    let jwt_without_issuer = json!({"type": "org.matrix.login.jwt", "token": "x.y.z"});
    assert_error(
        &post(&node, LOGIN, None, &jwt_without_issuer).await,
        400,
        "M_UNKNOWN",
    );
}

// --- registration -------------------------------------------------------------------------------

#[tokio::test]
async fn registration_asks_for_the_dummy_stage_and_checks_names() {
    let node = TestNode::spawn().await;
    // No body at all: every field of register is optional, so this is the first UIA step.
    let (status, uia) = call(&node, "POST", REGISTER, None, None).await;
    assert_eq!(status, 401, "{uia}");
    assert_eq!(
        uia["flows"],
        json!([{"stages": ["m.login.dummy"]}]),
        "{uia}"
    );
    assert_eq!(uia["params"], json!({}), "{uia}");
    assert!(
        uia["session"].as_str().is_some_and(|s| !s.is_empty()),
        "{uia}"
    );

    register(&node, "hank", "pw-hank").await;
    let dummy = json!({"type": "m.login.dummy"});
    let taken = json!({"username": "hank", "password": "x", "auth": dummy});
    assert_error(
        &post(&node, REGISTER, None, &taken).await,
        400,
        "M_USER_IN_USE",
    );
    let taken = json!({"username": "HANK", "password": "x"});
    assert_error(
        &post(&node, REGISTER, None, &taken).await,
        400,
        "M_USER_IN_USE",
    );
    let reserved = json!({"username": "_hyperty_x", "password": "x", "auth": dummy});
    assert_error(
        &post(&node, REGISTER, None, &reserved).await,
        400,
        "M_EXCLUSIVE",
    );
    let invalid = json!({"username": "a b", "password": "x", "auth": dummy});
    assert_error(
        &post(&node, REGISTER, None, &invalid).await,
        400,
        "M_INVALID_USERNAME",
    );
    let guest = call(&node, "POST", &format!("{REGISTER}?kind=guest"), None, None).await;
    assert_error(&guest, 403, "M_GUEST_ACCESS_FORBIDDEN");
    let stale = json!({"username": "ivy", "password": "x",
        "auth": {"type": "m.login.dummy", "session": "not-issued-here"}});
    assert_error(&post(&node, REGISTER, None, &stale).await, 400, "M_UNKNOWN");
    let other_stage = json!({"username": "ivy", "password": "x",
        "auth": {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "ivy"},
                 "password": "x"}});
    let (status, again) = post(&node, REGISTER, None, &other_stage).await;
    assert_eq!(status, 401, "{again}");
    assert_eq!(again["errcode"], "M_FORBIDDEN", "{again}");
    assert!(again["session"].is_string(), "{again}");
    let no_password = json!({"username": "ivy", "auth": dummy});
    assert_error(
        &post(&node, REGISTER, None, &no_password).await,
        400,
        "M_MISSING_PARAM",
    );

    // Registration without logging in; then the account logs in.
    let quiet = json!({"username": "ivy", "password": "pw-ivy", "auth": dummy,
        "inhibit_login": true});
    let (status, done) = post(&node, REGISTER, None, &quiet).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["user_id"], format!("@ivy:{DOMAIN}"));
    assert!(done.get("access_token").is_none(), "{done}");
    login(&node, "ivy", "pw-ivy").await;

    // A generated name when none is given.
    let anon = json!({"password": "pw-anon", "auth": dummy});
    let (status, done) = post(&node, REGISTER, None, &anon).await;
    assert_eq!(status, 200, "{done}");
    assert!(done["user_id"].as_str().unwrap().ends_with(":example.com"));
}

#[tokio::test]
async fn username_availability() {
    let node = TestNode::spawn().await;
    register(&node, "jack", "pw-jack").await;
    let available = "/_matrix/client/v3/register/available?username=";
    let (status, body) = get(&node, &format!("{available}kate"), None).await;
    assert_eq!((status, body), (200, json!({"available": true})));
    assert_error(
        &get(&node, &format!("{available}jack"), None).await,
        400,
        "M_USER_IN_USE",
    );
    assert_error(
        &get(&node, &format!("{available}_hyperty_abc"), None).await,
        400,
        "M_EXCLUSIVE",
    );
    assert_error(
        &get(&node, &format!("{available}a%20b"), None).await,
        400,
        "M_INVALID_USERNAME",
    );
}

#[tokio::test]
async fn registration_can_be_switched_off() {
    let node = TestNode::spawn_with(|c| c.matrix.registration_enabled = false).await;
    let req = json!({"username": "lena", "password": "x", "auth": {"type": "m.login.dummy"}});
    assert_error(&post(&node, REGISTER, None, &req).await, 403, "M_FORBIDDEN");
    assert_error(
        &call(&node, "POST", REGISTER, None, None).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &get(
            &node,
            "/_matrix/client/v3/register/available?username=lena",
            None,
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
}

// --- JWT login ----------------------------------------------------------------------------------

const AUD: &str = "rethink-matrix-it";
const STATIC_TOKEN: &str = "static-runtime-token-0123456789";

fn jwt(key: &EncodingKey, sub: &str, exp_in: i64) -> String {
    let now = now().cast_signed();
    let claims = json!({"iss": ISS, "aud": AUD, "sub": sub, "exp": now + exp_in, "iat": now});
    sign(Algorithm::RS256, key, &claims)
}

/// A node trusting `ISS` with its key set in a file, and knowing one static runtime token.
async fn jwt_node(dir: &TempDir, create_accounts: bool) -> TestNode {
    let issuer = issuer(dir.path(), AUD, 0);
    TestNode::spawn_with(move |c| {
        c.auth.jwt = vec![issuer];
        c.auth.tokens = vec![StaticToken {
            token: STATIC_TOKEN.into(),
            subject: "user://login.example.org/mallory".into(),
            runtime: None,
        }];
        c.matrix.jwt_create_accounts = create_accounts;
    })
    .await
}

fn jwt_login(token: &str) -> Value {
    json!({"type": "org.matrix.login.jwt", "token": token})
}

#[tokio::test]
async fn jwt_login_creates_the_account_once_and_refuses_bad_tokens() {
    let dir = TempDir::new().unwrap();
    let node = jwt_node(&dir, true).await;
    let (issuer, attacker) = &*KEYS;

    let (status, flows) = get(&node, LOGIN, None).await;
    assert_eq!(status, 200);
    let types: Vec<&str> = flows["flows"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["type"].as_str())
        .collect();
    assert_eq!(types, ["m.login.password", "org.matrix.login.jwt"]);

    let (status, first) = post(
        &node,
        LOGIN,
        None,
        &jwt_login(&jwt(&issuer.encoding, "Nina", 600)),
    )
    .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["user_id"], format!("@_nina:{DOMAIN}"));
    let (status, me) = get(&node, WHOAMI, first["access_token"].as_str()).await;
    assert_eq!((status, &me["user_id"]), (200, &first["user_id"]));
    let (status, second) = post(
        &node,
        LOGIN,
        None,
        &jwt_login(&jwt(&issuer.encoding, "Nina", 600)),
    )
    .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["user_id"], first["user_id"]);
    assert_ne!(second["device_id"], first["device_id"]);

    let refused = [
        ("expired", jwt(&issuer.encoding, "Nina", -60)),
        ("forged", jwt(&attacker.encoding, "Nina", 600)),
        ("garbage", "not.a.jwt".to_owned()),
        ("a static runtime token", STATIC_TOKEN.to_owned()),
    ];
    for (what, token) in &refused {
        let answer = post(&node, LOGIN, None, &jwt_login(token)).await;
        assert_eq!(answer.0, 403, "{what}: {}", answer.1);
        assert_eq!(answer.1["errcode"], "M_FORBIDDEN", "{what}");
    }
    let no_token = json!({"type": "org.matrix.login.jwt"});
    assert_error(
        &post(&node, LOGIN, None, &no_token).await,
        400,
        "M_BAD_JSON",
    );

    // A password account is never taken over by an identity with the same name.
    register(&node, "omar", "pw-omar").await;
    let takeover = post(
        &node,
        LOGIN,
        None,
        &jwt_login(&jwt(&issuer.encoding, "omar", 600)),
    )
    .await;
    assert_error(&takeover, 403, "M_FORBIDDEN");
    // An identity cannot reach the reserved namespace either.
    let reserved = post(
        &node,
        LOGIN,
        None,
        &jwt_login(&jwt(&issuer.encoding, "HypertyX", 600)),
    )
    .await;
    assert_error(&reserved, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn jwt_login_without_account_creation_needs_an_existing_account() {
    let dir = TempDir::new().unwrap();
    let node = jwt_node(&dir, false).await;
    let answer = post(
        &node,
        LOGIN,
        None,
        &jwt_login(&jwt(&KEYS.0.encoding, "pat", 600)),
    )
    .await;
    assert_error(&answer, 403, "M_FORBIDDEN");
}
