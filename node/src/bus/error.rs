//! Routing errors: why a message could not reach one of its recipients. The WebSocket edge maps
//! each to a reTHINK response code in `ws::codec`.

use super::outbox::OutboxFull;
use super::permit::Denied;

/// Why one recipient of a message was not served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("no such address: {0}")]
    NotFound(String),
    #[error("no route to domain {0}")]
    NoRouteToDomain(String),
    #[error("{0} is not served by this node")]
    NotServed(String),
    #[error("{address}: {full}")]
    OutboxFull { address: String, full: OutboxFull },
    /// The queue to another domain (its gateway's outbox) is full.
    #[error("the queue to {domain} is full ({messages} messages)")]
    QueueFull { domain: String, messages: usize },
    #[error("bad request: {0}")]
    BadRequest(String),
    /// An address of the message (`what`: which one) that is not a valid, canonical address.
    #[error("bad request: {what}: {source}")]
    BadAddress {
        what: &'static str,
        #[source]
        source: rethink_proto::AddressError,
    },
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error(transparent)]
    Denied(Denied),
    /// The cluster could not serve the recipient now (the shared database or NATS is
    /// unreachable, or the session is held by another node that is still alive): retry later.
    #[error("cluster: {0}")]
    Cluster(String),
    /// An update of a data object that cannot become its room's event.
    #[error(transparent)]
    Unbridgeable(super::bridge::Unbridgeable),
}
