//! [`PasswordHashing`]: argon2id password hashes (PHC strings) computed on one dedicated thread
//! that reuses a single memory buffer.
//!
//! Parameters: argon2id, 7 MiB, 5 passes, 1 lane, one of the equivalent configurations OWASP
//! recommends (the crate default, 19 MiB and 2 passes, is another). One thread and one reused
//! buffer keep the node's memory flat: a fresh 19 MiB block per hash, freed on a blocking-pool
//! thread, was kept by the allocator and grew the node to hundreds of MiB after a burst of
//! registrations. Verification reads the parameters from the stored PHC string, so hashes made
//! with other parameters still verify (the buffer grows to fit them).

use argon2::password_hash::{Output, ParamsString, PasswordHash, Salt, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::oneshot;

use super::error::MatrixError;

/// Memory cost in KiB.
const M_COST: u32 = 7 * 1024;
/// Passes.
const T_COST: u32 = 5;
/// Hash length in bytes.
const OUTPUT_LEN: usize = 32;
/// Jobs queued before callers wait.
const QUEUE: usize = 64;

/// Why hashing or verifying a password failed.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// The PHC string layer's error (no `std::error::Error` either).
    #[error("{0}")]
    Phc(argon2::password_hash::Error),
    /// argon2's own error (it implements no `std::error::Error`, so it is kept as a value).
    #[error("argon2: {0}")]
    Argon2(argon2::Error),
    #[error("stored hash without salt or hash")]
    Incomplete,
}

impl From<argon2::password_hash::Error> for HashError {
    fn from(e: argon2::password_hash::Error) -> Self {
        HashError::Phc(e)
    }
}

impl From<argon2::Error> for HashError {
    fn from(e: argon2::Error) -> Self {
        HashError::Argon2(e)
    }
}

type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

/// Hashes and verifies passwords on the hashing thread. The thread ends when this is dropped.
#[derive(Debug)]
pub(crate) struct PasswordHashing {
    jobs: std::sync::mpsc::SyncSender<Job>,
}

impl PasswordHashing {
    pub(crate) fn new() -> Self {
        let (jobs, rx) = std::sync::mpsc::sync_channel::<Job>(QUEUE);
        let spawned = std::thread::Builder::new()
            .name("argon2".into())
            .spawn(move || {
                let mut memory = Vec::new();
                while let Ok(job) = rx.recv() {
                    job(&mut memory);
                }
            });
        if let Err(e) = spawned {
            // Without the thread every hash answers an internal error (the channel is closed).
            tracing::error!(error = %e, "cannot start the password hashing thread");
        }
        Self { jobs }
    }

    /// The argon2 PHC string of `password`, with a random salt.
    pub(crate) async fn hash(&self, password: String) -> Result<String, MatrixError> {
        let salt: [u8; 16] = super::credentials::random_bytes()?;
        self.run(move |memory| {
            let params = Params::new(M_COST, T_COST, 1, Some(OUTPUT_LEN))?;
            let salt = SaltString::encode_b64(&salt)?;
            let output = compute(
                Algorithm::Argon2id,
                Version::V0x13,
                &params,
                &password,
                salt.as_salt(),
                OUTPUT_LEN,
                memory,
            )?;
            let phc = PasswordHash {
                algorithm: Algorithm::Argon2id.ident(),
                version: Some(Version::V0x13.into()),
                params: ParamsString::try_from(&params)?,
                salt: Some(salt.as_salt()),
                hash: Some(output),
            };
            Ok(phc.to_string())
        })
        .await
    }

    /// Whether `password` matches a PHC string (with the parameters written in it).
    pub(crate) async fn verify(&self, password: String, phc: String) -> Result<bool, MatrixError> {
        self.run(move |memory| {
            let parsed = PasswordHash::new(&phc)?;
            let algorithm = Algorithm::try_from(parsed.algorithm)?;
            let version = parsed
                .version
                .map_or(Ok(Version::V0x13), Version::try_from)?;
            let params = Params::try_from(&parsed)?;
            let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
                return Err(HashError::Incomplete);
            };
            let output = compute(
                algorithm,
                version,
                &params,
                &password,
                salt,
                expected.len(),
                memory,
            )?;
            // `Output`'s equality is constant-time.
            Ok(output == expected)
        })
        .await
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Vec<Block>) -> Result<T, HashError> + Send + 'static,
    ) -> Result<T, MatrixError> {
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move |memory| {
            let _ = done.send(f(memory));
        });
        let jobs = self.jobs.clone();
        // The queue may be full: wait for room off the async threads.
        tokio::task::spawn_blocking(move || jobs.send(job))
            .await
            .map_err(|_| MatrixError::HashingStopped)?
            .map_err(|_| MatrixError::HashingStopped)?;
        result
            .await
            .map_err(|_| MatrixError::HashingStopped)?
            .map_err(MatrixError::PasswordHashing)
    }
}

/// One argon2 computation in `memory` (grown to the parameters' size, never shrunk).
fn compute(
    algorithm: Algorithm,
    version: Version,
    params: &Params,
    password: &str,
    salt: Salt<'_>,
    len: usize,
    memory: &mut Vec<Block>,
) -> Result<Output, HashError> {
    let mut salt_bytes = [0u8; 64];
    let salt = salt.decode_b64(&mut salt_bytes)?;
    if memory.len() < params.block_count() {
        memory.resize(params.block_count(), Block::default());
    }
    let argon = Argon2::new(algorithm, version, params.clone());
    Output::init_with(len, |out| {
        argon
            .hash_password_into_with_memory(
                password.as_bytes(),
                salt,
                out,
                &mut memory[..params.block_count()],
            )
            .map_err(|_| argon2::password_hash::Error::Crypto)
    })
    .map_err(HashError::from)
}

#[cfg(test)]
mod tests {
    use argon2::password_hash::PasswordHasher as _;

    use super::*;

    #[tokio::test]
    async fn passwords_verify_against_their_hash_only() {
        let hashing = PasswordHashing::new();
        let phc = hashing.hash("correct horse".into()).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=7168,t=5,p=1$"), "{phc}");
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

    #[tokio::test]
    async fn hashes_made_with_other_parameters_still_verify() {
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let old = Argon2::default()
            .hash_password(b"old secret", &salt)
            .unwrap()
            .to_string();
        assert!(old.contains("m=19456,t=2"), "{old}");
        let hashing = PasswordHashing::new();
        assert!(
            hashing
                .verify("old secret".into(), old.clone())
                .await
                .unwrap()
        );
        assert!(!hashing.verify("other".into(), old).await.unwrap());
    }
}
