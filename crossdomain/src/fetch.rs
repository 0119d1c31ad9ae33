//! [`Fetch`]: how the crate GETs a URL. The embedder implements it (the node with its HTTPS
//! client); tests with a table of answers.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// Why a GET gave no usable body.
#[derive(Debug, thiserror::Error)]
pub enum FetchFailure {
    /// No answer in time (a 504 for whoever waits on it).
    #[error("no answer within {}s", .0.as_secs())]
    Timeout(Duration),
    /// The other node is down or unreachable for now (connection refused, reset, no route to
    /// its host; a 502, 503 or 504 from a proxy in front of it): messages for its domain wait.
    #[error("{0}")]
    Unreachable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Anything else: no DNS name, TLS, a status other than 200, a body too large.
    #[error("{0}")]
    Failed(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The future a [`Fetch`] returns.
pub type FetchFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<u8>, FetchFailure>> + Send + 'a>>;

/// GETs a URL and returns the body of a `200` answer. Implementations bound the time and size.
pub trait Fetch: Send + Sync + std::fmt::Debug {
    fn get<'a>(&'a self, url: &'a str) -> FetchFuture<'a>;
}
