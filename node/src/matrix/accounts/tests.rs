use tempfile::TempDir;

use super::*;
use crate::store::sqlite::SqliteStore;

async fn accounts(registration_enabled: bool) -> (TempDir, SqliteStore, Accounts) {
    let dir = TempDir::new().unwrap();
    let sqlite = SqliteStore::open(dir.path()).await.unwrap();
    let config = MatrixConfig {
        server_name: "example.com".try_into().unwrap(),
        registration_enabled,
        jwt_create_accounts: true,
        txn_retention: std::time::Duration::from_secs(60),
        presence: Default::default(),
        rate_limit: crate::config::RateLimitConfig::off(),
    };
    let accounts = Accounts::new(AccountStore::new(sqlite.pool().clone()), &config);
    (dir, sqlite, accounts)
}

#[tokio::test]
async fn usernames_are_checked() {
    let (_dir, _sqlite, a) = accounts(true).await;
    assert_eq!(a.check_username("Alice").await.unwrap(), "alice");
    for bad in ["", "a b", "@a:b", "é", "a:b"] {
        assert!(
            matches!(
                a.check_username(bad).await,
                Err(MatrixError::InvalidUsername(_))
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        a.check_username("_hyperty_x").await,
        Err(MatrixError::Exclusive)
    ));
    let (_dir2, _sqlite2, off) = accounts(false).await;
    assert!(matches!(
        off.check_username("alice").await,
        Err(MatrixError::Forbidden(_))
    ));
}

#[tokio::test]
async fn register_asks_for_uia_then_logs_in() {
    let (_dir, _sqlite, a) = accounts(true).await;
    let reg = || Registration {
        username: Some("alice".into()),
        password: Some("secret".into()),
        ..Registration::default()
    };
    let Err(MatrixError::UiaRequired(info)) = a.register(reg()).await else {
        panic!("expected a UIA answer");
    };
    let session = info.session.clone().unwrap();
    let auth = AuthData::new("m.login.dummy", Some(session), serde_json::Map::new()).unwrap();
    let done = a
        .register(Registration {
            auth: Some(auth),
            ..reg()
        })
        .await
        .unwrap();
    assert_eq!(done.user_id.as_str(), "@alice:example.com");
    let token = done.session.unwrap().access_token;
    let caller = a.authenticate(&token).await.unwrap();
    assert_eq!(caller.user_id, done.user_id);

    assert!(matches!(
        a.login_password("alice", "wrong", DeviceRequest::default())
            .await,
        Err(MatrixError::Forbidden(_))
    ));
    let s = a
        .login_password("@Alice:example.com", "secret", DeviceRequest::default())
        .await
        .unwrap();
    a.logout(&a.authenticate(&s.access_token).await.unwrap())
        .await
        .unwrap();
    assert!(matches!(
        a.authenticate(&s.access_token).await,
        Err(MatrixError::UnknownToken)
    ));
}

#[tokio::test]
async fn an_identity_never_takes_over_another_account() {
    let (_dir, _sqlite, a) = accounts(true).await;
    let auth = AuthData::new("m.login.dummy", None, serde_json::Map::new()).unwrap();
    a.register(Registration {
        username: Some("alice".into()),
        password: Some("secret".into()),
        auth: Some(auth),
        ..Registration::default()
    })
    .await
    .unwrap();
    assert!(matches!(
        a.login_identity("user://idp.example.org/alice", DeviceRequest::default())
            .await,
        Err(MatrixError::Forbidden(_))
    ));
    let s1 = a
        .login_identity("user://idp.example.org/Bob", DeviceRequest::default())
        .await
        .unwrap();
    assert_eq!(s1.user_id.as_str(), "@_bob:example.com");
    let s2 = a
        .login_identity("user://idp.example.org/Bob", DeviceRequest::default())
        .await
        .unwrap();
    assert_eq!(s2.user_id, s1.user_id);
    assert!(matches!(
        a.login_identity("user://idp.example.org/HypertyX", DeviceRequest::default())
            .await,
        Err(MatrixError::Forbidden(_))
    ));
}
