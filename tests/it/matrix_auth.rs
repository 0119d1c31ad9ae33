//! The Matrix Client-Server API, first slice: accounts and authentication.
//!
//! A real, independently written client (matrix-sdk) registers through user-interactive
//! authentication, logs in, asks who it is, logs out, and logs in again after a restart. Raw
//! HTTP/1.1 checks every error path with its exact status and `errcode`, and JWT login with an
//! `[[auth.jwt]]` issuer whose key set is a file.

use jsonwebtoken::{Algorithm, EncodingKey};
use matrix_sdk::ruma::api::client::account::register::v3::Request as RegistrationRequest;
use matrix_sdk::ruma::api::client::uiaa;
use rethink_node::config::StaticToken;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::support::TestNode;
use crate::support::jwt::{ISS, KEYS, issuer, now, sign};
use crate::support::matrix::{
    anon_get, anon_post, assert_error, call, get, login, login_with, password_login, register,
    sdk_client, user_id,
};

const REGISTER: &str = "/_matrix/client/v3/register";
const LOGIN: &str = "/_matrix/client/v3/login";
const WHOAMI: &str = "/_matrix/client/v3/account/whoami";

// --- matrix-sdk -------------------------------------------------------------------------------

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
    assert_eq!(registered.user_id.as_str(), user_id("alice"));
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
    assert_eq!(me.user_id.as_str(), user_id("alice"));
    assert_eq!(me.device_id, client.device_id().map(ToOwned::to_owned));
    let token = client.access_token().expect("logged in");
    client.matrix_auth().logout().await.expect("logout");
    assert_error(&get(&node, WHOAMI, &token).await, 401, "M_UNKNOWN_TOKEN");

    let node = node.restart().await;
    let client = sdk_client(&node).await;
    client
        .matrix_auth()
        .login_username(user_id("alice"), "correct horse")
        .send()
        .await
        .expect("the account survives a restart");
    let me = client.whoami().await.expect("whoami after restart");
    assert_eq!(me.user_id.as_str(), user_id("alice"));
}

// --- discovery --------------------------------------------------------------------------------

#[tokio::test]
async fn versions_capabilities_and_login_flows() {
    let node = TestNode::spawn().await;
    let (status, versions) = anon_get(&node, "/_matrix/client/versions").await;
    assert_eq!(status, 200);
    let list = versions["versions"].as_array().expect("versions");
    for v in ["v1.1", "v1.12"] {
        assert!(list.iter().any(|x| x == v), "{versions}");
    }
    let (status, flows) = anon_get(&node, LOGIN).await;
    assert_eq!(status, 200);
    assert_eq!(flows, json!({"flows": [{"type": "m.login.password"}]}));

    assert_error(
        &anon_get(&node, "/_matrix/client/v3/capabilities").await,
        401,
        "M_MISSING_TOKEN",
    );
    let token = register(&node, "carol").await;
    let (status, caps) = get(&node, "/_matrix/client/v3/capabilities", &token).await;
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
    let token = register(&node, "dave").await;

    assert_error(&anon_get(&node, WHOAMI).await, 401, "M_MISSING_TOKEN");
    let bad = get(&node, WHOAMI, "rtm_not-a-token").await;
    assert_error(&bad, 401, "M_UNKNOWN_TOKEN");
    assert_eq!(bad.1["soft_logout"], false, "{}", bad.1);

    let (status, me) = get(&node, WHOAMI, &token).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["user_id"], user_id("dave"));
    assert!(me["device_id"].is_string(), "{me}");
    assert!(me.get("is_guest").is_none_or(|g| g == false), "{me}");

    let (status, me) = anon_get(&node, &format!("{WHOAMI}?access_token={token}")).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["user_id"], user_id("dave"));
    assert_error(
        &anon_get(&node, &format!("{WHOAMI}?access_token=nope")).await,
        401,
        "M_UNKNOWN_TOKEN",
    );
}

#[tokio::test]
async fn logout_revokes_the_token_and_logout_all_every_device() {
    let node = TestNode::spawn().await;
    register(&node, "erin").await;
    let one = login(&node, "erin").await.token;
    // No body at all: every field of logout is optional.
    let (status, body) = call(&node, "POST", "/_matrix/client/v3/logout", Some(&one), None).await;
    assert_eq!((status, &body), (200, &json!({})));
    assert_error(&get(&node, WHOAMI, &one).await, 401, "M_UNKNOWN_TOKEN");

    let a = login_with(&node, "erin", "pw-erin").await;
    let b = login_with(&node, "@erin:example.com", "pw-erin").await;
    assert_ne!(a["device_id"], b["device_id"]);
    let (a, b) = (
        a["access_token"].as_str().unwrap().to_owned(),
        b["access_token"].as_str().unwrap().to_owned(),
    );
    assert_eq!(get(&node, WHOAMI, &b).await.0, 200);
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
        assert_error(&get(&node, WHOAMI, t).await, 401, "M_UNKNOWN_TOKEN");
    }
}

#[tokio::test]
async fn a_login_with_a_known_device_id_replaces_its_token() {
    let node = TestNode::spawn().await;
    register(&node, "faye").await;
    let mut req = password_login("faye", "pw-faye");
    req["device_id"] = "PHONE".into();
    let (_, first) = anon_post(&node, LOGIN, &req).await;
    assert_eq!(first["device_id"], "PHONE", "{first}");
    let (_, second) = anon_post(&node, LOGIN, &req).await;
    assert_eq!(second["device_id"], "PHONE", "{second}");
    let old = first["access_token"].as_str().unwrap();
    assert_error(&get(&node, WHOAMI, old).await, 401, "M_UNKNOWN_TOKEN");
    let (status, me) = get(&node, WHOAMI, second["access_token"].as_str().unwrap()).await;
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
        &anon_post(&node, LOGIN, &wrong_types).await,
        400,
        "M_BAD_JSON",
    );
    let wrong_types = json!({"username": ["alice"], "password": 7});
    assert_error(
        &anon_post(&node, REGISTER, &wrong_types).await,
        400,
        "M_BAD_JSON",
    );

    assert_error(
        &anon_get(&node, "/_matrix/client/v3/no/such/endpoint").await,
        404,
        "M_UNRECOGNIZED",
    );
    assert_error(
        &anon_post(&node, "/_matrix/federation/v1/send/1", &json!({})).await,
        404,
        "M_UNRECOGNIZED",
    );
    assert_error(
        &anon_get(&node, "/_matrix/client/v3/logout").await,
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
    assert_eq!(anon_get(&node, "/no-such-path").await.0, 404);
}

// --- password login -----------------------------------------------------------------------------

#[tokio::test]
async fn password_login_failures_are_forbidden() {
    let node = TestNode::spawn().await;
    register(&node, "gina").await;
    let wrong = anon_post(&node, LOGIN, &password_login("gina", "nope")).await;
    assert_error(&wrong, 403, "M_FORBIDDEN");
    let unknown = anon_post(&node, LOGIN, &password_login("nobody", "pw-gina")).await;
    assert_error(&unknown, 403, "M_FORBIDDEN");
    assert_eq!(wrong.1["error"], unknown.1["error"], "failures look alike");
    let other_server = password_login("@gina:elsewhere.org", "pw-gina");
    assert_error(
        &anon_post(&node, LOGIN, &other_server).await,
        403,
        "M_FORBIDDEN",
    );

    let ok = login_with(&node, "GINA", "pw-gina").await;
    assert_eq!(ok["user_id"], user_id("gina"));
    assert!(ok["device_id"].is_string());

    let email = json!({
        "type": "m.login.password",
        "identifier": {"type": "m.id.thirdparty", "medium": "email", "address": "g@example.com"},
        "password": "pw-gina",
    });
    assert_error(&anon_post(&node, LOGIN, &email).await, 400, "M_UNKNOWN");
    let jwt_without_issuer = json!({"type": "org.matrix.login.jwt", "token": "x.y.z"});
    assert_error(
        &anon_post(&node, LOGIN, &jwt_without_issuer).await,
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

    register(&node, "hank").await;
    let dummy = json!({"type": "m.login.dummy"});
    let taken = json!({"username": "hank", "password": "x", "auth": dummy});
    assert_error(
        &anon_post(&node, REGISTER, &taken).await,
        400,
        "M_USER_IN_USE",
    );
    let taken = json!({"username": "HANK", "password": "x"});
    assert_error(
        &anon_post(&node, REGISTER, &taken).await,
        400,
        "M_USER_IN_USE",
    );
    let reserved = json!({"username": "_hyperty_x", "password": "x", "auth": dummy});
    assert_error(
        &anon_post(&node, REGISTER, &reserved).await,
        400,
        "M_EXCLUSIVE",
    );
    let invalid = json!({"username": "a b", "password": "x", "auth": dummy});
    assert_error(
        &anon_post(&node, REGISTER, &invalid).await,
        400,
        "M_INVALID_USERNAME",
    );
    let guest = call(&node, "POST", &format!("{REGISTER}?kind=guest"), None, None).await;
    assert_error(&guest, 403, "M_GUEST_ACCESS_FORBIDDEN");
    let stale = json!({"username": "ivy", "password": "x",
        "auth": {"type": "m.login.dummy", "session": "not-issued-here"}});
    assert_error(&anon_post(&node, REGISTER, &stale).await, 400, "M_UNKNOWN");
    let other_stage = json!({"username": "ivy", "password": "x",
        "auth": {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "ivy"},
                 "password": "x"}});
    let (status, again) = anon_post(&node, REGISTER, &other_stage).await;
    assert_eq!(status, 401, "{again}");
    assert_eq!(again["errcode"], "M_FORBIDDEN", "{again}");
    assert!(again["session"].is_string(), "{again}");
    let no_password = json!({"username": "ivy", "auth": dummy});
    assert_error(
        &anon_post(&node, REGISTER, &no_password).await,
        400,
        "M_MISSING_PARAM",
    );

    // Registration without logging in; then the account logs in.
    let quiet = json!({"username": "ivy", "password": "pw-ivy", "auth": dummy,
        "inhibit_login": true});
    let (status, done) = anon_post(&node, REGISTER, &quiet).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["user_id"], user_id("ivy"));
    assert!(done.get("access_token").is_none(), "{done}");
    login_with(&node, "ivy", "pw-ivy").await;

    // A generated name when none is given.
    let anon = json!({"password": "pw-anon", "auth": dummy});
    let (status, done) = anon_post(&node, REGISTER, &anon).await;
    assert_eq!(status, 200, "{done}");
    assert!(done["user_id"].as_str().unwrap().ends_with(":example.com"));
}

#[tokio::test]
async fn username_availability() {
    let node = TestNode::spawn().await;
    register(&node, "jack").await;
    let available = "/_matrix/client/v3/register/available?username=";
    let (status, body) = anon_get(&node, &format!("{available}kate")).await;
    assert_eq!((status, body), (200, json!({"available": true})));
    assert_error(
        &anon_get(&node, &format!("{available}jack")).await,
        400,
        "M_USER_IN_USE",
    );
    assert_error(
        &anon_get(&node, &format!("{available}_hyperty_abc")).await,
        400,
        "M_EXCLUSIVE",
    );
    assert_error(
        &anon_get(&node, &format!("{available}a%20b")).await,
        400,
        "M_INVALID_USERNAME",
    );
}

#[tokio::test]
async fn registration_can_be_switched_off() {
    let node = TestNode::spawn_with(|c| c.matrix.registration_enabled = false).await;
    let req = json!({"username": "lena", "password": "x", "auth": {"type": "m.login.dummy"}});
    assert_error(&anon_post(&node, REGISTER, &req).await, 403, "M_FORBIDDEN");
    assert_error(
        &call(&node, "POST", REGISTER, None, None).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &anon_get(&node, "/_matrix/client/v3/register/available?username=lena").await,
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

    let (status, flows) = anon_get(&node, LOGIN).await;
    assert_eq!(status, 200);
    let types: Vec<&str> = flows["flows"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["type"].as_str())
        .collect();
    assert_eq!(types, ["m.login.password", "org.matrix.login.jwt"]);

    let (status, first) = anon_post(
        &node,
        LOGIN,
        &jwt_login(&jwt(&issuer.encoding, "Nina", 600)),
    )
    .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["user_id"], user_id("_nina"));
    let (status, me) = get(&node, WHOAMI, first["access_token"].as_str().unwrap()).await;
    assert_eq!((status, &me["user_id"]), (200, &first["user_id"]));
    let (status, second) = anon_post(
        &node,
        LOGIN,
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
        let answer = anon_post(&node, LOGIN, &jwt_login(token)).await;
        assert_eq!(answer.0, 403, "{what}: {}", answer.1);
        assert_eq!(answer.1["errcode"], "M_FORBIDDEN", "{what}");
    }
    let no_token = json!({"type": "org.matrix.login.jwt"});
    assert_error(&anon_post(&node, LOGIN, &no_token).await, 400, "M_BAD_JSON");

    // A password account is never taken over by an identity with the same name.
    register(&node, "omar").await;
    let takeover = anon_post(
        &node,
        LOGIN,
        &jwt_login(&jwt(&issuer.encoding, "omar", 600)),
    )
    .await;
    assert_error(&takeover, 403, "M_FORBIDDEN");
    // An identity cannot reach the reserved namespace either.
    let reserved = anon_post(
        &node,
        LOGIN,
        &jwt_login(&jwt(&issuer.encoding, "HypertyX", 600)),
    )
    .await;
    assert_error(&reserved, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn jwt_login_without_account_creation_needs_an_existing_account() {
    let dir = TempDir::new().unwrap();
    let node = jwt_node(&dir, false).await;
    let answer = anon_post(&node, LOGIN, &jwt_login(&jwt(&KEYS.0.encoding, "pat", 600))).await;
    assert_error(&answer, 403, "M_FORBIDDEN");
}
