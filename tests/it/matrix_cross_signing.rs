//! Cross-signing: a client that bootstraps it on login has its identity and its device signed
//! by it served to others; Bob's signature of Alice's identity (his user-signing key) comes back
//! to him only; replacing the keys needs the password (user-interactive authentication). The
//! refusals of both upload endpoints are checked over raw HTTP with their errcodes.

use matrix_sdk::Client;
use matrix_sdk::encryption::identities::UserIdentity;
use matrix_sdk::encryption::vodozemac::Ed25519SecretKey;
use matrix_sdk::ruma::CanonicalJsonValue;
use matrix_sdk::ruma::api::client::uiaa::{
    AuthData, AuthType, MatrixUserIdentifier, Password, UserIdentifier,
};
use serde_json::{Value, json};

use crate::matrix_e2ee::{e2ee_client, post_as, sync, uid};
use crate::support::TestNode;
use crate::support::matrix::{
    V3, anon_post, assert_error, ok, password_login, register, register_session, sdk_login,
    sdk_login_cross_signing, user_id,
};

/// The base64 public key of an sdk identity's master key.
fn master_of(identity: &UserIdentity) -> String {
    identity
        .master_key()
        .get_first_key()
        .expect("a master key")
        .to_base64()
}

/// `POST /keys/query` for `user`'s devices, raw, as `client`.
async fn raw_query(node: &TestNode, client: &Client, user: &str) -> Value {
    post_as(
        node,
        client,
        "/keys/query",
        &json!({"device_keys": {user: []}}),
    )
    .await
}

#[tokio::test]
async fn cross_signing_a_client_bootstraps_is_served_and_bobs_signature_reaches_him_only() {
    let node = TestNode::spawn().await;
    register(&node, "alice").await;
    register(&node, "bob").await;
    let alice = sdk_login_cross_signing(&node, "alice").await;
    let bob = sdk_login_cross_signing(&node, "bob").await;
    sync(&alice).await;
    sync(&bob).await;
    let status = alice.encryption().cross_signing_status().await.unwrap();
    assert!(status.is_complete(), "{status:?}");

    // Bob asks the node: Alice's identity has the master key her client made, and her device
    // carries the signature of her self-signing key.
    let own = alice
        .encryption()
        .get_user_identity(&uid("alice"))
        .await
        .unwrap()
        .expect("alice's own identity");
    let identity = bob
        .encryption()
        .request_user_identity(&uid("alice"))
        .await
        .expect("keys/query")
        .expect("alice's identity is on the node");
    assert_eq!(master_of(&identity), master_of(&own));
    let device = bob
        .encryption()
        .get_device(&uid("alice"), alice.device_id().unwrap())
        .await
        .unwrap()
        .expect("alice's device");
    assert!(
        device.is_cross_signed_by_owner(),
        "the node serves her device signed by her self-signing key"
    );

    // Bob verifies Alice: his user-signing key signs her master key. The signature comes back
    // with her master key to him, not to her (nor her user-signing key to him).
    assert!(!identity.is_verified());
    identity.verify().await.expect("keys/signatures/upload");
    let identity = bob
        .encryption()
        .request_user_identity(&uid("alice"))
        .await
        .unwrap()
        .unwrap();
    assert!(identity.is_verified(), "bob's signature is served to bob");
    let to_bob = raw_query(&node, &bob, &user_id("alice")).await;
    let to_alice = raw_query(&node, &alice, &user_id("alice")).await;
    let signers = |answer: &Value| {
        answer["master_keys"][user_id("alice")]["signatures"]
            .as_object()
            .map(|o| o.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    assert_eq!(
        signers(&to_bob),
        [user_id("alice"), user_id("bob")],
        "{to_bob}"
    );
    assert_eq!(signers(&to_alice), [user_id("alice")], "{to_alice}");
    assert!(to_alice["user_signing_keys"][user_id("alice")].is_object());
    assert!(to_bob["user_signing_keys"].get(user_id("alice")).is_none());
    assert!(to_bob["self_signing_keys"][user_id("alice")].is_object());
}

#[tokio::test]
async fn replacing_cross_signing_keys_needs_the_password() {
    let node = TestNode::spawn().await;
    register(&node, "alice").await;
    let alice = sdk_login_cross_signing(&node, "alice").await;
    let bob = e2ee_client(&node, "bob").await;
    let alices_master = || async {
        let identity = bob
            .encryption()
            .request_user_identity(&uid("alice"))
            .await
            .unwrap()
            .expect("alice's identity");
        master_of(&identity)
    };
    let first = alices_master().await;

    // The same keys again need no authentication.
    alice
        .encryption()
        .bootstrap_cross_signing(None)
        .await
        .expect("the same keys again");
    assert_eq!(alices_master().await, first);

    // A new device of hers, without the private keys, makes new ones: 401 with the password
    // flow, then accepted with her password.
    let laptop = sdk_login(&node, "alice").await;
    let err = laptop
        .encryption()
        .bootstrap_cross_signing(None)
        .await
        .expect_err("replacing the keys without authentication");
    let uiaa = err.as_uiaa_response().expect("a 401 with the flows");
    assert!(
        uiaa.flows.iter().any(|f| f.stages == [AuthType::Password]),
        "{:?}",
        uiaa.flows
    );
    let mut password = Password::new(
        UserIdentifier::Matrix(MatrixUserIdentifier::new("alice".to_owned())),
        "pw-alice".to_owned(),
    );
    password.session = uiaa.session.clone();
    laptop
        .encryption()
        .bootstrap_cross_signing(Some(AuthData::Password(password)))
        .await
        .expect("with the password");
    let own = laptop
        .encryption()
        .get_user_identity(&uid("alice"))
        .await
        .unwrap()
        .expect("the laptop's identity");
    let replaced = alices_master().await;
    assert_ne!(replaced, first, "bob sees a new master key");
    assert_eq!(replaced, master_of(&own), "the one the laptop made");
}

/// Alice's `m.login.password` stage, in `session` if any.
fn password_auth(session: Option<&str>) -> Value {
    let mut auth = json!({
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": "alice"},
        "password": "pw-alice",
    });
    if let Some(session) = session {
        auth["session"] = json!(session);
    }
    auth
}

/// A fresh ed25519 key and its public key (unpadded base64).
fn ed25519() -> (Ed25519SecretKey, String) {
    let key = Ed25519SecretKey::new();
    let public = key.public_key().to_base64();
    (key, public)
}

/// A cross-signing key object of `user`.
fn signing_key(user: &str, usage: &str, public: &str) -> Value {
    json!({"user_id": user, "usage": [usage], "keys": {format!("ed25519:{public}"): public}})
}

/// `object` with a signature by `user`'s key `public` (`key`) added.
fn signed(mut object: Value, user: &str, key: &Ed25519SecretKey, public: &str) -> Value {
    let mut unsigned = object.clone();
    let fields = unsigned.as_object_mut().unwrap();
    fields.remove("signatures");
    fields.remove("unsigned");
    let canonical = CanonicalJsonValue::try_from(unsigned).unwrap().to_string();
    let sig = key.sign(canonical.as_bytes()).to_base64();
    object["signatures"][user][format!("ed25519:{public}")] = json!(sig);
    object
}

#[tokio::test]
async fn cross_signing_key_uploads_are_refused_with_the_spec_errcodes() {
    let node = TestNode::spawn().await;
    let alice = register_session(&node, "alice").await;
    let me = alice.user_id.as_str();
    let path = "/keys/device_signing/upload";
    let (master, master_pub) = ed25519();
    let (_, ssk_pub) = ed25519();

    let ssk_alone = json!({"self_signing_key": signing_key(me, "self_signing", &ssk_pub)});
    assert_error(
        &alice.post(&node, path, &ssk_alone).await,
        400,
        "M_MISSING_PARAM",
    );
    let of_bob = json!({"master_key": signing_key(&user_id("bob"), "master", &master_pub)});
    assert_error(
        &alice.post(&node, path, &of_bob).await,
        400,
        "M_INVALID_PARAM",
    );
    let wrong_usage = json!({"master_key": signing_key(me, "user_signing", &master_pub)});
    assert_error(
        &alice.post(&node, path, &wrong_usage).await,
        400,
        "M_INVALID_PARAM",
    );
    let not_a_key = json!({"master_key": signing_key(me, "master", "short")});
    assert_error(
        &alice.post(&node, path, &not_a_key).await,
        400,
        "M_INVALID_PARAM",
    );

    let master_key = json!({"master_key": signing_key(me, "master", &master_pub)});
    ok(alice.post(&node, path, &master_key).await);
    let unsigned = json!({"self_signing_key": signing_key(me, "self_signing", &ssk_pub)});
    assert_error(
        &alice.post(&node, path, &unsigned).await,
        400,
        "M_INVALID_SIGNATURE",
    );
    let (other, other_pub) = ed25519();
    let by_other = signed(
        signing_key(me, "self_signing", &ssk_pub),
        me,
        &other,
        &other_pub,
    );
    let mut forged = by_other.clone();
    forged["signatures"][me] = json!({format!("ed25519:{master_pub}"): "bm90IGEgc2lnbmF0dXJl"});
    for bad in [by_other, forged] {
        let body = json!({"self_signing_key": bad});
        assert_error(
            &alice.post(&node, path, &body).await,
            400,
            "M_INVALID_SIGNATURE",
        );
    }
    // A valid one, added to the stored master key: new keys, so the password is needed.
    let good = signed(
        signing_key(me, "self_signing", &ssk_pub),
        me,
        &master,
        &master_pub,
    );
    let mut body = json!({"self_signing_key": good});
    let challenge = alice.post(&node, path, &body).await;
    assert_eq!(challenge.0, 401, "{}", challenge.1);
    assert_eq!(
        challenge.1["flows"],
        json!([{"stages": ["m.login.password"]}])
    );
    body["auth"] = password_auth(challenge.1["session"].as_str());
    ok(alice.post(&node, path, &body).await);
    body.as_object_mut().unwrap().remove("auth");
    ok(alice.post(&node, path, &body).await); // The same keys again need none.

    // A key named like one of the user's devices: 403.
    let (_, device_named) = ed25519();
    let mut login = password_login("alice", "pw-alice");
    login["device_id"] = json!(device_named);
    let phone = ok(anon_post(&node, &format!("{V3}/login"), &login).await);
    assert_eq!(phone["device_id"], json!(device_named));
    let mut clash = json!({"master_key": signing_key(me, "master", &device_named)});
    clash["auth"] = password_auth(None);
    assert_error(&alice.post(&node, path, &clash).await, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn refused_signatures_are_listed_as_failures_and_good_ones_are_served() {
    let node = TestNode::spawn().await;
    let alice = register_session(&node, "alice").await;
    let bob = register_session(&node, "bob").await;
    let me = alice.user_id.as_str();
    let (device_key, device_pub) = ed25519();
    let device = alice.device_id.as_str();
    let device_keys = signed(
        json!({
            "user_id": me,
            "device_id": device,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {
                format!("curve25519:{device}"): "Y3VydmU",
                format!("ed25519:{device}"): device_pub,
            },
        }),
        me,
        &device_key,
        device,
    );
    ok(alice
        .post(&node, "/keys/upload", &json!({"device_keys": device_keys}))
        .await);
    let path = "/keys/signatures/upload";
    let failures = |answer: &Value, key: &str| answer["failures"][me][key]["errcode"].clone();

    // No self-signing key yet, an unknown key, a signature that does not verify.
    let answer = ok(alice
        .post(
            &node,
            path,
            &json!({me: {device: device_keys, "NOSUCH": device_keys}}),
        )
        .await);
    assert_eq!(failures(&answer, device), "M_INVALID_SIGNATURE", "{answer}");
    assert_eq!(failures(&answer, "NOSUCH"), "M_NOT_FOUND", "{answer}");

    let (master, master_pub) = ed25519();
    let (ssk, ssk_pub) = ed25519();
    let keys = json!({
        "master_key": signing_key(me, "master", &master_pub),
        "self_signing_key": signed(signing_key(me, "self_signing", &ssk_pub), me, &master, &master_pub),
    });
    ok(alice
        .post(&node, "/keys/device_signing/upload", &keys)
        .await);
    let mut bogus = device_keys.clone();
    bogus["signatures"][me][format!("ed25519:{ssk_pub}")] = json!("bm90IGEgc2lnbmF0dXJl");
    let mut changed = signed(device_keys.clone(), me, &ssk, &ssk_pub);
    changed["keys"][format!("curve25519:{device}")] = json!("b3RoZXI");
    for bad in [bogus, changed] {
        let answer = ok(alice.post(&node, path, &json!({me: {device: bad}})).await);
        assert_eq!(failures(&answer, device), "M_INVALID_SIGNATURE", "{answer}");
    }
    // Bob has no user-signing key: he may not sign her master key.
    let signed_by_bob = json!({me: {master_pub.clone(): signing_key(me, "master", &master_pub)}});
    let answer = ok(bob.post(&node, path, &signed_by_bob).await);
    assert_eq!(
        answer["failures"][me][&master_pub]["errcode"], "M_INVALID_SIGNATURE",
        "{answer}"
    );

    // A good one: no failures, and the device keys come with it.
    let good = signed(device_keys.clone(), me, &ssk, &ssk_pub);
    let answer = ok(alice.post(&node, path, &json!({me: {device: good}})).await);
    assert!(
        answer.get("failures").is_none_or(|f| f == &json!({})),
        "{answer}"
    );
    let found = ok(bob
        .post(&node, "/keys/query", &json!({"device_keys": {me: []}}))
        .await);
    let sigs = &found["device_keys"][me][device]["signatures"][me];
    assert!(sigs[format!("ed25519:{ssk_pub}")].is_string(), "{found}");
    assert!(sigs[format!("ed25519:{device}")].is_string(), "{found}");
    assert_eq!(
        found["master_keys"][me]["keys"][format!("ed25519:{master_pub}")],
        json!(master_pub)
    );
}
