//! Secrets: argon2 password hashes ([`PasswordHashing`]), access tokens and their SHA-256, device
//! IDs, randomness.
//!
//! argon2 runs with its default parameters (argon2id, 19 MiB, 2 passes) on the blocking pool, at
//! most one computation per core at a time. Access tokens carry 256 random bits.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ruma::OwnedDeviceId;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::error::MatrixError;

/// Longest password accepted, in bytes.
const MAX_PASSWORD_BYTES: usize = 512;

/// Hashes and verifies passwords off the async threads, a bounded number at a time.
#[derive(Debug)]
pub(crate) struct PasswordHashing {
    permits: Semaphore,
}

impl PasswordHashing {
    /// At most one computation per core.
    pub(crate) fn new() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        Self {
            permits: Semaphore::new(cores),
        }
    }

    /// The argon2 PHC string of `password`, with a random salt.
    pub(crate) async fn hash(&self, password: String) -> Result<String, MatrixError> {
        let salt: [u8; 16] = random_bytes()?;
        self.run(move || {
            let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
            Argon2::default()
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| e.to_string())
        })
        .await
    }

    /// Whether `password` matches a PHC string (with the parameters written in it).
    pub(crate) async fn verify(&self, password: String, phc: String) -> Result<bool, MatrixError> {
        self.run(move || {
            let parsed = PasswordHash::new(&phc).map_err(|e| format!("stored hash: {e}"))?;
            Ok(Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok())
        })
        .await
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, String> + Send + 'static,
    ) -> Result<T, MatrixError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| MatrixError::Internal(format!("hashing: {e}")))?;
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| MatrixError::Internal(format!("hashing task: {e}")))?
            .map_err(|e| MatrixError::Internal(format!("argon2: {e}")))
    }
}

/// A password a registration may set: not empty, at most [`MAX_PASSWORD_BYTES`].
pub(crate) fn check_password(password: &str) -> Result<(), MatrixError> {
    if password.is_empty() {
        return Err(MatrixError::InvalidParam("the password is empty".into()));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(MatrixError::InvalidParam(format!(
            "the password is longer than {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    Ok(())
}

/// A new access token: `rtm_` and 256 random bits in URL-safe base64.
pub(crate) fn new_access_token() -> Result<String, MatrixError> {
    Ok(format!(
        "rtm_{}",
        URL_SAFE_NO_PAD.encode(random_bytes::<32>()?)
    ))
}

/// SHA-256 of an access token: what the store keeps.
pub(crate) fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Ten random capital letters, as other homeservers generate them.
pub(crate) fn new_device_id() -> Result<OwnedDeviceId, MatrixError> {
    let bytes: [u8; 10] = random_bytes()?;
    let id: String = bytes.iter().map(|b| char::from(b'A' + b % 26)).collect();
    Ok(id.into())
}

pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], MatrixError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes)
        .map_err(|e| MatrixError::Internal(format!("no randomness: {e}")))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passwords_verify_against_their_hash_only() {
        let hashing = PasswordHashing::new();
        let phc = hashing.hash("correct horse".into()).await.unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(
            hashing
                .verify("correct horse".into(), phc.clone())
                .await
                .unwrap()
        );
        assert!(!hashing.verify("wrong".into(), phc).await.unwrap());
        assert!(
            hashing
                .verify("x".into(), "not a hash".into())
                .await
                .is_err()
        );
    }

    #[test]
    fn tokens_and_device_ids_are_random() {
        let (a, b) = (new_access_token().unwrap(), new_access_token().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.len(), 4 + 43);
        assert_ne!(token_hash(&a), token_hash(&b));
        let id = new_device_id().unwrap();
        assert!(id.as_str().len() == 10 && id.as_str().bytes().all(|c| c.is_ascii_uppercase()));
        assert!(check_password("").is_err());
        assert!(check_password(&"x".repeat(513)).is_err());
    }
}
