//! Test keys and tokens for the JWT source: RSA (2048 bits), P-256 and Ed25519 keys generated
//! once per test binary, their public JWKs, and claim sets for a test issuer.

use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// A private key for tests, with its public JWK.
pub(crate) struct TestKey {
    pub(crate) alg: Algorithm,
    pub(crate) encoding: EncodingKey,
    /// The public JWK without `kid`.
    pub(crate) public: Value,
    /// The public key's DER bytes (RSA only), for the algorithm-confusion attack.
    pub(crate) public_der: Vec<u8>,
}

impl TestKey {
    fn new(alg: Algorithm, encoding: EncodingKey, public_der: Vec<u8>) -> Self {
        let jwk = Jwk::from_encoding_key(&encoding, alg).unwrap();
        Self {
            alg,
            encoding,
            public: serde_json::to_value(jwk).unwrap(),
            public_der,
        }
    }

    /// The public JWK with a `kid`.
    pub(crate) fn jwk(&self, kid: &str) -> Value {
        let mut jwk = self.public.clone();
        jwk["kid"] = kid.into();
        jwk
    }

    /// A token with these claims, signed with this key.
    pub(crate) fn sign(&self, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

pub(crate) struct TestKeys {
    pub(crate) rsa: TestKey,
    pub(crate) rsa2: TestKey,
    pub(crate) ec: TestKey,
    pub(crate) ed: TestKey,
}

fn rsa_key() -> TestKey {
    use rsa::pkcs1::{EncodeRsaPrivateKey, EncodeRsaPublicKey};
    let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
    let der = key.to_pkcs1_der().unwrap();
    let public = key.to_public_key().to_pkcs1_der().unwrap();
    TestKey::new(
        Algorithm::RS256,
        EncodingKey::from_rsa_der(der.as_bytes()),
        public.as_bytes().to_vec(),
    )
}

fn ec_key() -> TestKey {
    use p256::pkcs8::EncodePrivateKey;
    let key = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let der = key.to_pkcs8_der().unwrap();
    TestKey::new(
        Algorithm::ES256,
        EncodingKey::from_ec_der(der.as_bytes()),
        Vec::new(),
    )
}

fn ed_key() -> TestKey {
    // PKCS#8 v1 for Ed25519: a fixed 16-byte prefix and the 32-byte seed.
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(&rand::random::<[u8; 32]>());
    TestKey::new(Algorithm::EdDSA, EncodingKey::from_ed_der(&der), Vec::new())
}

/// Keys generated once per test binary (RSA generation is slow).
pub(crate) static KEYS: LazyLock<TestKeys> = LazyLock::new(|| TestKeys {
    rsa: rsa_key(),
    rsa2: rsa_key(),
    ec: ec_key(),
    ed: ed_key(),
});

pub(crate) const ISS: &str = "https://idp.example.org/realm";
pub(crate) const AUD: &str = "rethink-node";

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub(crate) fn claims(sub: &str, exp: u64) -> Value {
    json!({"iss": ISS, "aud": AUD, "sub": sub, "exp": exp, "iat": now()})
}

/// A key set document holding these JWKs.
pub(crate) fn set_json(keys: &[Value]) -> Vec<u8> {
    serde_json::to_vec(&json!({ "keys": keys })).unwrap()
}
