//! Secrets: passwords (hashed by [`PasswordHashing`], in `password.rs`), access tokens and their
//! SHA-256, device IDs, randomness. Access tokens carry 256 random bits.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ruma::OwnedDeviceId;
use sha2::{Digest, Sha256};

use super::error::MatrixError;

/// Longest password accepted, in bytes.
const MAX_PASSWORD_BYTES: usize = 512;

pub(crate) use super::password::PasswordHashing;

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
    getrandom::fill(&mut bytes).map_err(MatrixError::NoRandomness)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

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
