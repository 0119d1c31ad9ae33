//! A test identity provider: RSA keys generated once per test binary (the issuer's and an
//! attacker's), token signing, and an `[[auth.jwt]]` issuer whose key set is a file.

use std::path::Path;
use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rethink_node::auth::jwt::{JwtIssuer, RawJwtIssuer};
use rsa::pkcs1::{EncodeRsaPrivateKey, EncodeRsaPublicKey};
use serde_json::{Value, json};

/// The issuer every test node trusts.
pub(crate) const ISS: &str = "https://login.example.org";
/// The key id both keys carry (so a forged token names the issuer's key).
pub(crate) const KID: &str = "test-key";

pub(crate) struct RsaKey {
    pub(crate) encoding: EncodingKey,
    pub(crate) public_jwk: Value,
    pub(crate) public_der: Vec<u8>,
}

fn rsa_key() -> RsaKey {
    let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
    let encoding = EncodingKey::from_rsa_der(key.to_pkcs1_der().unwrap().as_bytes());
    let mut public_jwk =
        serde_json::to_value(Jwk::from_encoding_key(&encoding, Algorithm::RS256).unwrap()).unwrap();
    public_jwk["kid"] = KID.into();
    let public_der = key
        .to_public_key()
        .to_pkcs1_der()
        .unwrap()
        .as_bytes()
        .to_vec();
    RsaKey {
        encoding,
        public_jwk,
        public_der,
    }
}

/// The issuer's key and another key (an attacker's), generated once.
pub(crate) static KEYS: LazyLock<(RsaKey, RsaKey)> = LazyLock::new(|| (rsa_key(), rsa_key()));

/// Unix seconds now.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Signs `claims` with `key` under `alg`, naming [`KID`].
pub(crate) fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(KID.into());
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

/// An issuer for [`ISS`] (RS256 only) trusting the first of [`KEYS`], its key set written to
/// `dir/jwks.json`.
pub(crate) fn issuer(dir: &Path, audience: &str, leeway_secs: u64) -> JwtIssuer {
    let file = dir.join("jwks.json");
    std::fs::write(
        &file,
        serde_json::to_vec(&json!({"keys": [KEYS.0.public_jwk]})).unwrap(),
    )
    .unwrap();
    RawJwtIssuer {
        issuer: ISS.into(),
        audience: vec![audience.into()],
        algorithms: vec!["RS256".into()],
        jwks_file: Some(file),
        jwks_url: None,
        idp: None,
        leeway_secs,
        jwks_refresh_secs: 3600,
    }
    .validate(0)
    .unwrap()
}
