use super::super::test_keys::{KEYS, TestKey, set_json};
use super::*;

#[test]
fn rsa_ec_and_okp_keys_are_parsed_and_others_skipped() {
    let keys = &*KEYS;
    let json = set_json(&[
        keys.rsa.jwk("r1"),
        keys.ec.jwk("e1"),
        keys.ed.jwk("d1"),
        serde_json::json!({"kty": "oct", "kid": "h1", "k": "c2VjcmV0"}),
        serde_json::json!({"kty": "EC", "crv": "P-384", "kid": "e384", "x": "AA", "y": "AA"}),
        serde_json::json!({"kty": "RSA", "kid": "small", "n": "AQAB", "e": "AQAB"}),
        {
            let mut enc = keys.rsa.jwk("enc");
            enc["use"] = "enc".into();
            enc
        },
    ]);
    let set = KeySet::parse(&json).unwrap();
    assert_eq!(set.len(), 3);
    let kinds: Vec<_> = set
        .keys
        .iter()
        .map(|k| (k.kid.as_deref(), k.kind))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (Some("r1"), KeyKind::Rsa),
            (Some("e1"), KeyKind::P256),
            (Some("d1"), KeyKind::Ed25519)
        ]
    );
}

#[test]
fn sets_without_usable_keys_or_not_json_are_errors() {
    assert!(matches!(
        KeySet::parse(br#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#),
        Err(JwksError::NoUsableKey)
    ));
    assert!(matches!(
        KeySet::parse(b"not json"),
        Err(JwksError::Parse(_))
    ));
    assert!(matches!(
        KeySet::parse(br#"{"nokeys": []}"#),
        Err(JwksError::Parse(_))
    ));
}

fn kid_of(set: &KeySet, found: Lookup<'_>) -> Option<String> {
    let Lookup::Found(key) = found else {
        return None;
    };
    set.keys
        .iter()
        .find(|k| std::ptr::eq(&k.decoding, key))
        .and_then(|k| k.kid.clone())
}

#[test]
fn keys_are_found_by_kid_and_type() {
    let keys = &*KEYS;
    let other_rsa: &TestKey = &keys.rsa2;
    let set = KeySet::parse(&set_json(&[
        keys.rsa.jwk("a"),
        other_rsa.jwk("b"),
        keys.ec.jwk("c"),
        keys.ed.jwk("d"),
    ]))
    .unwrap();
    assert_eq!(
        kid_of(&set, set.find(Some("b"), Algorithm::RS256)).as_deref(),
        Some("b")
    );
    assert_eq!(
        kid_of(&set, set.find(Some("a"), Algorithm::RS256)).as_deref(),
        Some("a")
    );
    assert!(matches!(
        set.find(Some("zzz"), Algorithm::RS256),
        Lookup::UnknownKid
    ));
    // The kid exists but names a key of another type.
    assert!(matches!(
        set.find(Some("c"), Algorithm::RS256),
        Lookup::NoFit
    ));
    // Without a kid: exactly one key of the type is needed.
    assert_eq!(
        kid_of(&set, set.find(None, Algorithm::ES256)).as_deref(),
        Some("c")
    );
    assert_eq!(
        kid_of(&set, set.find(None, Algorithm::EdDSA)).as_deref(),
        Some("d")
    );
    assert!(matches!(set.find(None, Algorithm::RS256), Lookup::NoFit));
    // HMAC never finds a key.
    assert!(matches!(
        set.find(Some("a"), Algorithm::HS256),
        Lookup::NoFit
    ));
}

#[test]
fn a_key_pinned_to_another_algorithm_does_not_fit() {
    let mut jwk = KEYS.rsa.jwk("a");
    jwk["alg"] = "RS512".into();
    let set = KeySet::parse(&set_json(&[jwk])).unwrap();
    assert!(matches!(
        set.find(Some("a"), Algorithm::RS256),
        Lookup::NoFit
    ));
}

/// A tiny HTTP server on 127.0.0.1:0: answers every GET with `status` and the current
/// `body`, one request per connection, and counts the requests.
struct JwksServer {
    url: String,
    body: Arc<Mutex<Vec<u8>>>,
    hits: Arc<std::sync::atomic::AtomicUsize>,
}

impl JwksServer {
    async fn start(status: u16, body: Vec<u8>) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().unwrap()
        );
        let body = Arc::new(Mutex::new(body));
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (b, h) = (Arc::clone(&body), Arc::clone(&hits));
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                assert!(req.starts_with(b"GET /.well-known/jwks.json HTTP/1.1\r\n"));
                h.fetch_add(1, Ordering::SeqCst);
                let body = lock(&b).clone();
                let head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(&body).await;
                let _ = sock.shutdown().await;
            }
        });
        Self { url, body, hits }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn serve(&self, body: Vec<u8>) {
        *lock(&self.body) = body;
    }
}

fn url_config(url: &str, refresh: Duration) -> crate::auth::AuthConfig {
    use super::super::test_keys::{AUD, ISS};
    let mut issuer = crate::auth::jwt::RawJwtIssuer {
        issuer: ISS.into(),
        audience: vec![AUD.into()],
        algorithms: vec!["RS256".into(), "ES256".into()],
        jwks_file: None,
        jwks_url: Some(url.into()),
        idp: None,
        leeway_secs: 30,
        jwks_refresh_secs: 3600,
    }
    .validate(0)
    .unwrap();
    issuer.jwks_refresh = refresh;
    crate::auth::AuthConfig {
        allow_anonymous: false,
        tokens: Vec::new(),
        jwt: vec![issuer],
    }
}

/// Waits until `cache` has finished `n` background loads (5 s at most).
async fn loaded(cache: &KeyCache, n: u64) {
    let mut loads = cache.loads();
    tokio::time::timeout(Duration::from_secs(5), loads.wait_for(|done| *done >= n))
        .await
        .unwrap_or_else(|_| panic!("{n} background loads never finished"))
        .expect("the cache lives");
}

#[tokio::test]
async fn a_jwks_url_is_fetched_at_start_and_again_for_an_unknown_kid() {
    use super::super::test_keys::{claims, now};
    use crate::auth::{AuthError, Authenticator};
    let k = &*KEYS;
    let server = JwksServer::start(200, set_json(&[k.rsa.jwk("k1")])).await;
    let shutdown = CancellationToken::new();
    let auth = Authenticator::start(
        &url_config(&server.url, Duration::from_secs(3600)),
        &shutdown,
        &Clock::system(),
    )
    .await
    .unwrap();
    let cache = Arc::clone(auth.key_cache(0));
    assert_eq!(server.hits(), 1, "fetched once at start");
    let exp = now() + 600;
    let id = auth
        .authenticate(Some(&k.rsa.sign(Some("k1"), &claims("alice", exp))))
        .unwrap();
    assert_eq!(id.subject.as_deref(), Some("user://idp.example.org/alice"));
    assert_eq!(id.expires_at, Some(exp));

    // The issuer rotates: a token names the new kid. Refused this time, and the set is
    // fetched again in the background.
    server.serve(set_json(&[k.rsa.jwk("k1"), k.ec.jwk("k2")]));
    let new = k.ec.sign(Some("k2"), &claims("bob", exp));
    assert_eq!(auth.authenticate(Some(&new)), Err(AuthError::InvalidToken));
    assert!(cache.is_loading(), "a reload started");
    loaded(&cache, 1).await;
    assert!(auth.authenticate(Some(&new)).is_ok());
    assert_eq!(server.hits(), 2);

    // Another unknown kid within 30 s: refused, and no reload starts (one would be under
    // way at once: the test's runtime has not run anything since).
    let unknown = k.ec.sign(Some("k3"), &claims("carol", exp));
    assert_eq!(
        auth.authenticate(Some(&unknown)),
        Err(AuthError::InvalidToken)
    );
    assert!(!cache.is_loading(), "at most one on-demand fetch per 30 s");
    assert_eq!(*cache.loads().borrow(), 1);
    shutdown.cancel();
}

#[tokio::test]
async fn the_key_set_is_refreshed_periodically_until_shutdown() {
    const EVERY: Duration = Duration::from_secs(3600);
    let k = &*KEYS;
    let server = JwksServer::start(200, set_json(&[k.rsa.jwk("k1")])).await;
    let manual = crate::clock::ManualClock::new();
    let shutdown = CancellationToken::new();
    let config = url_config(&server.url, EVERY);
    let auth = crate::auth::Authenticator::start(&config, &shutdown, &manual.clock())
        .await
        .unwrap();
    let cache = Arc::clone(auth.key_cache(0));
    assert_eq!(server.hits(), 1, "fetched at start");
    // The refresh comes when the period has passed, not before.
    manual.advance(EVERY - Duration::from_millis(1)).await;
    assert_eq!(server.hits(), 1);
    manual.advance(Duration::from_millis(1)).await;
    loaded(&cache, 1).await;
    assert_eq!(server.hits(), 2);
    manual.advance(EVERY).await;
    loaded(&cache, 2).await;
    assert_eq!(server.hits(), 3);

    // A failed refresh keeps the previous keys, and the next one comes sooner.
    server.serve(b"not json".to_vec());
    manual.advance(EVERY).await;
    loaded(&cache, 3).await;
    assert_eq!(cache.keys().len(), 1);
    server.serve(set_json(&[k.rsa.jwk("k1"), k.ec.jwk("k2")]));
    manual.advance(RETRY_AFTER_FAILURE).await;
    loaded(&cache, 4).await;
    assert_eq!(
        cache.keys().len(),
        2,
        "retried after {RETRY_AFTER_FAILURE:?}"
    );

    // After shutdown the refresh task is gone: time passing fetches nothing.
    let task = Arc::clone(&cache).spawn_refresh(EVERY, shutdown.child_token(), &manual.clock());
    shutdown.cancel();
    task.await.expect("the refresh task ends at shutdown");
    let hits = server.hits();
    manual.advance(EVERY * 3).await;
    assert_eq!(server.hits(), hits, "no refresh after shutdown");
    assert!(!cache.is_loading());
}

#[tokio::test]
async fn start_fails_when_the_key_set_cannot_be_fetched() {
    let server = JwksServer::start(404, b"no".to_vec()).await;
    let err = crate::auth::Authenticator::start(
        &url_config(&server.url, Duration::from_secs(3600)),
        &CancellationToken::new(),
        &Clock::system(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            &err.source,
            JwksError::Fetch { source: fetch::FetchError::Status(s), .. } if s.as_u16() == 404
        ),
        "{err}"
    );
    assert!(err.to_string().contains(&server.url), "{err}");
}
