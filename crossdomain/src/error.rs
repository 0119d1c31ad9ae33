//! [`CrossDomainError`]: every reason another domain's stub, keys or proof are not accepted.

use crate::fetch::FetchFailure;

/// Why something from another domain was refused. [`CrossDomainError::code`] is the reTHINK
/// code a sender gets for it.
#[derive(Debug, thiserror::Error)]
pub enum CrossDomainError {
    #[error("domain {domain}: fetching {url}: {source}")]
    Fetch {
        domain: String,
        url: String,
        #[source]
        source: FetchFailure,
    },
    #[error("domain {domain}: {what} is not valid JSON: {source}")]
    NotJson {
        domain: String,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("domain {domain}: {what}: {problem}")]
    Malformed {
        domain: String,
        what: &'static str,
        problem: String,
    },
    #[error("domain {domain}: {what} is not signed by {domain}")]
    NotSigned { domain: String, what: &'static str },
    #[error(
        "domain {domain}: {what} is signed with key(s) {key_ids:?}, which {domain} does not publish"
    )]
    UnknownKey {
        domain: String,
        what: &'static str,
        key_ids: Vec<String>,
    },
    #[error("domain {domain}: the signature of {what} does not verify: {source}")]
    BadSignature {
        domain: String,
        what: &'static str,
        #[source]
        source: ruma::signatures::VerificationError,
    },
    #[error(
        "domain {domain}: the stub's bytes have sha256 {actual}, its descriptor says {expected}"
    )]
    HashMismatch {
        domain: String,
        expected: String,
        actual: String,
    },
    #[error("domain {domain}: the stub cache at {path}: {source}")]
    Cache {
        domain: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("node proof: {0}")]
    Proof(String),
    #[error("too many outstanding node challenges; try again later")]
    ChallengesFull,
    /// A failure of this node's own (no randomness, its key cannot sign, its stub host cannot
    /// start): nothing the other domain did. Answered 500; the details are for the log.
    #[error("this node failed at {what}: {problem}")]
    Internal { what: &'static str, problem: String },
    /// This node's own store could not answer (its database unreachable): retry later.
    /// Answered 503; the details are for the log.
    #[error("this node's store is unavailable for {what}: {problem}")]
    Unavailable { what: &'static str, problem: String },
}

impl CrossDomainError {
    /// The reTHINK (HTTP-style) code for a sender whose message needed this: 504 when the other
    /// domain did not answer in time, 401 for a refused node proof, 503 when challenges are
    /// exhausted or this node's store is unavailable, 500 for a failure of this node's own, 502
    /// for everything the other domain got wrong (and our cache failing).
    pub fn code(&self) -> u16 {
        match self {
            Self::Fetch {
                source: FetchFailure::Timeout(_),
                ..
            } => 504,
            Self::Proof(_) => 401,
            Self::ChallengesFull | Self::Unavailable { .. } => 503,
            Self::Internal { .. } => 500,
            _ => 502,
        }
    }

    /// The text for the one who asked (a sender, the node asking for a challenge): the error
    /// itself, except for a failure of this node's own, whose details are for the log only.
    pub fn public_description(&self) -> String {
        match self {
            Self::Internal { what, .. } => format!("this node failed at {what}; see its log"),
            Self::Unavailable { what, .. } => {
                format!("this node's store is unavailable for {what}; try again later")
            }
            _ => self.to_string(),
        }
    }

    /// Whether the way to the other domain is down for now (rather than refused for what it
    /// serves): its node unreachable, or this node's own store unavailable. Its messages
    /// should wait, kept, rather than be answered with an error.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            Self::Fetch {
                source: FetchFailure::Unreachable(_),
                ..
            } | Self::Unavailable { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::CrossDomainError;

    #[test]
    fn a_failure_of_our_own_is_500_and_its_details_stay_in_the_log() {
        let e = CrossDomainError::Internal {
            what: "signing our node proof",
            problem: "secret detail".into(),
        };
        assert_eq!(e.code(), 500);
        assert!(e.to_string().contains("secret detail"), "{e}");
        let public = e.public_description();
        assert!(!public.contains("secret detail"), "{public}");
        assert!(public.contains("signing our node proof"), "{public}");
        // Our store unreachable: 503 (try again), its details in the log too.
        let store = CrossDomainError::Unavailable {
            what: "reading the gateway's queue",
            problem: "secret detail".into(),
        };
        assert_eq!(store.code(), 503);
        assert!(store.is_unreachable(), "its messages wait, kept");
        assert!(!store.public_description().contains("secret detail"));
        // The other domain's errors are told as they are.
        let theirs = CrossDomainError::Proof("expired".into());
        assert_eq!(theirs.code(), 401);
        assert_eq!(theirs.public_description(), theirs.to_string());
    }
}
