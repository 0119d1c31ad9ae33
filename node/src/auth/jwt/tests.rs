//! Tests of JWT verification: each refusal reason, algorithms, key selection, settings.

use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};

use super::super::test_keys::{AUD, ISS, KEYS, claims, now, set_json};
use super::*;

fn issuer(algorithms: &[Algorithm]) -> JwtIssuer {
    JwtIssuer {
        issuer: ISS.into(),
        audience: vec!["other-app".into(), AUD.into()],
        algorithms: algorithms.to_vec(),
        jwks: JwksLocation::File(PathBuf::from("unused.json")),
        idp: "idp.example.org".into(),
        leeway: Duration::from_secs(30),
        jwks_refresh: Duration::from_secs(3600),
    }
}

fn source_with(algorithms: &[Algorithm], jwks: &[Value]) -> JwtSource {
    let set = KeySet::parse(&set_json(jwks)).unwrap();
    let config = issuer(algorithms);
    let cache = Arc::new(KeyCache::new(ISS, config.jwks.clone(), set));
    JwtSource::new(&config, cache)
}

/// An issuer pinning all three algorithms, with one key of each type.
fn source() -> JwtSource {
    let k = &*KEYS;
    source_with(
        &SUPPORTED_ALGORITHMS,
        &[k.rsa.jwk("rsa-1"), k.ec.jwk("ec-1"), k.ed.jwk("ed-1")],
    )
}

fn valid(verdict: Verdict) -> Identity {
    match verdict {
        Verdict::Valid(id) => id,
        other => panic!("expected a valid token, got {other:?}"),
    }
}

#[test]
fn valid_rs256_es256_and_eddsa_tokens_prove_their_subject_until_exp() {
    let k = &*KEYS;
    let s = source();
    let exp = now() + 600;
    for (key, kid) in [(&k.rsa, "rsa-1"), (&k.ec, "ec-1"), (&k.ed, "ed-1")] {
        let id = valid(s.verify(&key.sign(Some(kid), &claims("alice", exp))));
        assert_eq!(id.subject.as_deref(), Some("user://idp.example.org/alice"));
        assert_eq!(id.runtime, None);
        assert_eq!(id.expires_at, Some(exp), "{kid}");
    }
}

#[test]
fn subjects_are_escaped_into_one_path_segment() {
    let id = valid(
        source().verify(
            &KEYS
                .ec
                .sign(Some("ec-1"), &claims("auth0|a b/c%", now() + 60)),
        ),
    );
    assert_eq!(
        id.subject.as_deref(),
        Some("user://idp.example.org/auth0|a%20b%2Fc%25")
    );
}

#[test]
fn wrong_audience_is_invalid() {
    let mut c = claims("alice", now() + 600);
    c["aud"] = "someone-else".into();
    assert_eq!(
        source().verify(&KEYS.rsa.sign(Some("rsa-1"), &c)),
        Verdict::Invalid
    );
    // An array containing one accepted audience is fine.
    c["aud"] = json!(["x", AUD]);
    valid(source().verify(&KEYS.rsa.sign(Some("rsa-1"), &c)));
    // No aud at all is refused.
    c.as_object_mut().unwrap().remove("aud");
    assert_eq!(
        source().verify(&KEYS.rsa.sign(Some("rsa-1"), &c)),
        Verdict::Invalid
    );
}

#[test]
fn expiry_is_checked_with_the_leeway() {
    let s = source();
    let expired = KEYS.ec.sign(Some("ec-1"), &claims("alice", now() - 120));
    assert_eq!(s.verify(&expired), Verdict::Invalid);
    let within = now() - 10;
    let id = valid(s.verify(&KEYS.ec.sign(Some("ec-1"), &claims("alice", within))));
    assert_eq!(id.expires_at, Some(within));
    let mut no_exp = claims("alice", 0);
    no_exp.as_object_mut().unwrap().remove("exp");
    assert_eq!(
        s.verify(&KEYS.ec.sign(Some("ec-1"), &no_exp)),
        Verdict::Invalid
    );
}

#[test]
fn not_before_in_the_future_is_invalid() {
    let s = source();
    let mut c = claims("alice", now() + 600);
    c["nbf"] = (now() + 300).into();
    assert_eq!(s.verify(&KEYS.ed.sign(Some("ed-1"), &c)), Verdict::Invalid);
    c["nbf"] = (now() + 5).into();
    valid(s.verify(&KEYS.ed.sign(Some("ed-1"), &c)));
}

#[test]
fn hs256_signed_with_the_rsa_public_key_is_invalid() {
    let k = &*KEYS;
    let s = source_with(&[Algorithm::RS256], &[k.rsa.jwk("rsa-1")]);
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("rsa-1".into());
    let token = jsonwebtoken::encode(
        &header,
        &claims("mallory", now() + 600),
        &EncodingKey::from_secret(&k.rsa.public_der),
    )
    .unwrap();
    assert_eq!(s.verify(&token), Verdict::Invalid);
    // Also with the JWK's `n` as the secret, and without kid.
    let n = k.rsa.public["n"].as_str().unwrap().as_bytes().to_vec();
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims("mallory", now() + 600),
        &EncodingKey::from_secret(&n),
    )
    .unwrap();
    assert_eq!(s.verify(&token), Verdict::Invalid);
}

#[test]
fn an_algorithm_not_pinned_is_invalid_even_with_a_good_signature() {
    let k = &*KEYS;
    let s = source_with(&[Algorithm::RS256], &[k.rsa.jwk("rsa-1"), k.ec.jwk("ec-1")]);
    let token = k.ec.sign(Some("ec-1"), &claims("alice", now() + 600));
    assert_eq!(s.verify(&token), Verdict::Invalid);
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

#[test]
fn alg_none_is_invalid() {
    let body = b64(&claims("mallory", now() + 600));
    for header in [
        json!({"alg": "none", "typ": "JWT"}),
        json!({"alg": "None"}),
        json!({"typ": "JWT"}),
    ] {
        let token = format!("{}.{body}.", b64(&header));
        assert_eq!(source().verify(&token), Verdict::Invalid, "{header}");
    }
}

#[test]
fn a_signature_by_another_key_with_the_same_kid_is_invalid() {
    let k = &*KEYS;
    let forged = k.rsa2.sign(Some("rsa-1"), &claims("mallory", now() + 600));
    assert_eq!(source().verify(&forged), Verdict::Invalid);
    // A tampered payload under a good signature, too.
    let good = k.rsa.sign(Some("rsa-1"), &claims("alice", now() + 600));
    let parts: Vec<&str> = good.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(&claims("mallory", now() + 600)),
        parts[2]
    );
    assert_eq!(source().verify(&tampered), Verdict::Invalid);
}

#[test]
fn other_issuers_and_garbage_are_not_mine() {
    let s = source();
    let mut c = claims("alice", now() + 600);
    c["iss"] = "https://other.example.org".into();
    assert_eq!(
        s.verify(&KEYS.rsa.sign(Some("rsa-1"), &c)),
        Verdict::NotMine
    );
    c.as_object_mut().unwrap().remove("iss");
    assert_eq!(
        s.verify(&KEYS.rsa.sign(Some("rsa-1"), &c)),
        Verdict::NotMine
    );
    for garbage in [
        "",
        "secret-token-for-alice",
        "a.b.c",
        "eyJ.x.y",
        "a.b.c.d",
        "..",
        &format!("{}.{}", b64(&json!({"alg": "RS256"})), b64(&claims("a", 1))),
        &format!(
            "{}.{}.sig.extra",
            b64(&json!({"alg": "RS256"})),
            b64(&claims("a", 1))
        ),
        &format!(
            "{}.{}.s",
            b64(&json!(["not", "an", "object"])),
            b64(&claims("a", 1))
        ),
    ] {
        assert_eq!(s.verify(garbage), Verdict::NotMine, "{garbage}");
    }
}

#[test]
fn the_kid_selects_among_several_keys() {
    let k = &*KEYS;
    let s = source_with(&[Algorithm::RS256], &[k.rsa2.jwk("old"), k.rsa.jwk("new")]);
    valid(s.verify(&k.rsa.sign(Some("new"), &claims("a", now() + 60))));
    valid(s.verify(&k.rsa2.sign(Some("old"), &claims("a", now() + 60))));
    assert_eq!(
        s.verify(&k.rsa.sign(Some("old"), &claims("a", now() + 60))),
        Verdict::Invalid
    );
    // Without kid, two RSA keys are ambiguous: refused.
    assert_eq!(
        s.verify(&k.rsa.sign(None, &claims("a", now() + 60))),
        Verdict::Invalid
    );
    // Without kid and exactly one key of the type: that key.
    let one = source_with(&[Algorithm::RS256], &[k.rsa.jwk("only"), k.ec.jwk("ec")]);
    valid(one.verify(&k.rsa.sign(None, &claims("a", now() + 60))));
    // An unknown kid is refused (no runtime here, so nothing is fetched).
    assert_eq!(
        s.verify(&k.rsa.sign(Some("nope"), &claims("a", now() + 60))),
        Verdict::Invalid
    );
}

#[test]
fn critical_headers_are_refused() {
    let k = &*KEYS;
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rsa-1".into());
    header.crit = Some(vec!["exp".into()]);
    let token = jsonwebtoken::encode(&header, &claims("a", now() + 60), &k.rsa.encoding).unwrap();
    assert_eq!(source().verify(&token), Verdict::Invalid);
}

fn raw(file: &std::path::Path) -> RawJwtIssuer {
    RawJwtIssuer {
        issuer: ISS.into(),
        audience: vec![AUD.into()],
        algorithms: vec!["RS256".into(), "EdDSA".into()],
        jwks_file: Some(file.to_path_buf()),
        jwks_url: None,
        idp: None,
        leeway_secs: default_leeway_secs(),
        jwks_refresh_secs: default_jwks_refresh_secs(),
    }
}

#[test]
fn issuer_settings_are_validated_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jwks.json");
    std::fs::write(&file, set_json(&[KEYS.ed.jwk("ed-1")])).unwrap();
    let ok = raw(&file).validate(0).unwrap();
    assert_eq!(ok.idp, "idp.example.org");
    assert_eq!(ok.algorithms, vec![Algorithm::RS256, Algorithm::EdDSA]);
    assert_eq!(ok.leeway, Duration::from_secs(30));
    assert_eq!(ok.jwks_refresh, Duration::from_secs(3600));

    let cases: Vec<(RawJwtIssuer, &str)> = vec![
        (
            RawJwtIssuer {
                algorithms: vec!["HS256".into()],
                ..raw(&file)
            },
            "setting `auth.jwt[2].algorithms`: \"HS256\" is not allowed",
        ),
        (
            RawJwtIssuer {
                algorithms: vec!["none".into()],
                ..raw(&file)
            },
            "setting `auth.jwt[2].algorithms`",
        ),
        (
            RawJwtIssuer {
                algorithms: vec![],
                ..raw(&file)
            },
            "setting `auth.jwt[2].algorithms`: required",
        ),
        (
            RawJwtIssuer {
                audience: vec![],
                ..raw(&file)
            },
            "setting `auth.jwt[2].audience`",
        ),
        (
            RawJwtIssuer {
                issuer: String::new(),
                ..raw(&file)
            },
            "setting `auth.jwt[2].issuer`",
        ),
        (
            RawJwtIssuer {
                jwks_url: Some("https://idp.example.org/k".into()),
                ..raw(&file)
            },
            "setting `auth.jwt[2].jwks_file`: give either",
        ),
        (
            RawJwtIssuer {
                jwks_file: None,
                ..raw(&file)
            },
            "setting `auth.jwt[2].jwks_url`: required",
        ),
        (
            RawJwtIssuer {
                jwks_file: None,
                jwks_url: Some("http://idp.example.org/k".into()),
                ..raw(&file)
            },
            "setting `auth.jwt[2].jwks_url`: \"http://idp.example.org/k\": must be https://",
        ),
        (
            RawJwtIssuer {
                jwks_file: Some(dir.path().join("missing.json")),
                ..raw(&file)
            },
            "setting `auth.jwt[2].jwks_file`: cannot read",
        ),
        (
            RawJwtIssuer {
                issuer: "not-a-url".into(),
                ..raw(&file)
            },
            "setting `auth.jwt[2].idp`: required",
        ),
        (
            RawJwtIssuer {
                idp: Some("bad idp/x".into()),
                ..raw(&file)
            },
            "setting `auth.jwt[2].idp`",
        ),
        (
            RawJwtIssuer {
                jwks_refresh_secs: 0,
                ..raw(&file)
            },
            "setting `auth.jwt[2].jwks_refresh_secs`",
        ),
    ];
    for (r, want) in cases {
        let e = r.validate(2).expect_err(want).to_string();
        assert!(e.starts_with(want), "{e} / {want}");
    }
    let bad_set = dir.path().join("bad.json");
    std::fs::write(&bad_set, b"{\"keys\": []}").unwrap();
    let e = RawJwtIssuer {
        jwks_file: Some(bad_set),
        ..raw(&file)
    }
    .validate(0)
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("auth.jwt[0].jwks_file") && e.contains("no usable"),
        "{e}"
    );
    let e = validate_issuers(vec![raw(&file), raw(&file)])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("auth.jwt[1].issuer") && e.contains("twice"),
        "{e}"
    );
}

#[test]
fn issuers_are_read_from_the_configuration_file() {
    use figment::providers::{Format, Serialized, Toml};
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jwks.json");
    std::fs::write(&file, set_json(&[KEYS.ec.jwk("ec-1")])).unwrap();
    let load = |algorithms: &str| {
        let toml = format!(
            "[auth]\nallow_anonymous = false\n[[auth.jwt]]\nissuer = \"{ISS}\"\n\
             audience = [\"{AUD}\"]\nalgorithms = {algorithms}\njwks_file = {:?}\n",
            file.display().to_string()
        );
        figment::Figment::from(Serialized::defaults(crate::RawConfig::default()))
            .merge(Toml::string(&toml))
            .extract::<crate::RawConfig>()
            .unwrap()
            .validate()
    };
    let config = load("[\"ES256\"]").unwrap();
    let jwt = &config.auth.jwt[0];
    assert_eq!(jwt.issuer, ISS);
    assert_eq!(jwt.idp, "idp.example.org");
    assert_eq!(jwt.leeway, Duration::from_secs(30));
    assert_eq!(jwt.jwks, JwksLocation::File(file.clone()));
    let err = load("[\"ES256\", \"HS256\"]").unwrap_err().to_string();
    assert!(
        err.starts_with("setting `auth.jwt[0].algorithms`: \"HS256\" is not allowed"),
        "{err}"
    );
}
