//! The node's client of one application service: `PUT /_matrix/app/v1/transactions/{txnId}`,
//! the user and alias queries and the ping, built with ruma's appservice-api types and sent over
//! HTTP/1.1 (hyper) with `Authorization: Bearer <hs_token>`, in clear for `http://` URLs and over
//! TLS for `https://` ones (the client configuration is the node's, given to [`AsClient::new`]:
//! the web PKI roots and the operator's `appservices.ca_file`). Connections are kept and reused
//! (a few at most); one that failed is dropped.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use ruma::api::appservice::event::push_events;
use ruma::api::appservice::ping::send_ping;
use ruma::api::appservice::query::{query_room_alias, query_user_id};
use ruma::api::{OutgoingRequest, OutgoingRequestExt as _};
use ruma::{OwnedRoomAliasId, OwnedTransactionId, OwnedUserId};
use tokio::net::TcpStream;

use crate::locks::lock;

/// How long a transaction may take to be answered.
pub const PUSH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a query or a ping may take (Synapse waits 10 s for queries).
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read from a service.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Idle connections kept per service.
const KEPT_CONNECTIONS: usize = 4;

/// Why a request to a service failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid service url: {0}")]
    BadUrl(String),
    #[error("cannot connect to {addr}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS with {addr} failed")]
    Tls {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP exchange with the service failed")]
    Http(#[from] hyper::Error),
    #[error("the service did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the service answered {status}")]
    Status { status: u16, body: String },
    #[error("cannot build the request")]
    Build(#[from] ruma::api::error::IntoHttpError),
    #[error("cannot encode the transaction")]
    Encode(#[from] serde_json::Error),
    #[error("the service's answer is too large or unreadable")]
    Body,
}

impl ClientError {
    /// Whether the service itself answered (with an error status), as opposed to not being
    /// reachable.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Where a service listens: `http://host:port[/base]` or `https://host:port[/base]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port`, to connect to (and the `Host` header).
    pub authority: String,
    /// The host, without IPv6 brackets: the name the certificate must hold.
    pub host: String,
    pub port: u16,
    /// Whether the URL is `https://`.
    pub tls: bool,
    /// The URL without a trailing slash: ruma appends the endpoint's path.
    pub base: String,
}

impl Endpoint {
    /// Accepts `http://` and `https://` URLs without a query.
    pub fn parse(url: &str) -> Result<Self, ClientError> {
        let uri: hyper::Uri = url
            .parse()
            .map_err(|_| ClientError::BadUrl(format!("{url:?} is not a URL")))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => {
                return Err(ClientError::BadUrl(format!(
                    "{url:?} is not an http:// or https:// URL"
                )));
            }
        };
        let raw_host = uri
            .host()
            .ok_or_else(|| ClientError::BadUrl(format!("{url:?} has no host")))?;
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        if uri.query().is_some() {
            return Err(ClientError::BadUrl(format!("{url:?} has a query")));
        }
        Ok(Endpoint {
            authority: format!("{raw_host}:{port}"),
            host: raw_host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
            tls,
            base: url.trim_end_matches('/').to_owned(),
        })
    }
}

/// A client of one service.
#[derive(Debug)]
pub struct AsClient {
    endpoint: Endpoint,
    hs_token: String,
    /// The TLS client configuration, used for an `https://` endpoint.
    tls: Arc<rustls::ClientConfig>,
    idle: std::sync::Mutex<Vec<SendRequest<Full<Bytes>>>>,
}

impl AsClient {
    pub fn new(endpoint: Endpoint, hs_token: String, tls: Arc<rustls::ClientConfig>) -> Self {
        Self {
            endpoint,
            hs_token,
            tls,
            idle: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Pushes a transaction: `body` is the stored JSON object (`events`, and the other fields
    /// the node adds: `ephemeral`, `rethink_messages`...), sent as it is; ruma makes the path
    /// and the authorization. Success is any 2xx answer.
    pub async fn push(&self, txn_id: &str, body: &str) -> Result<(), ClientError> {
        // Only a JSON object is a transaction body.
        serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(body)?;
        let req = push_events::v1::Request::new(OwnedTransactionId::from(txn_id), Vec::new());
        self.send_with_body(req, Some(Bytes::from(body.to_owned())), PUSH_TIMEOUT)
            .await
    }

    /// `GET /_matrix/app/v1/users/{userId}`: `Ok(true)` if the service created the user.
    pub async fn query_user(&self, user_id: OwnedUserId) -> Result<bool, ClientError> {
        found(
            self.send(query_user_id::v1::Request::new(user_id), QUERY_TIMEOUT)
                .await,
        )
    }

    /// `GET /_matrix/app/v1/rooms/{roomAlias}`: `Ok(true)` if the service created the alias.
    pub async fn query_alias(&self, alias: OwnedRoomAliasId) -> Result<bool, ClientError> {
        found(
            self.send(query_room_alias::v1::Request::new(alias), QUERY_TIMEOUT)
                .await,
        )
    }

    /// `POST /_matrix/app/v1/ping`, with the client's transaction ID if it gave one.
    pub async fn ping(&self, txn_id: Option<OwnedTransactionId>) -> Result<(), ClientError> {
        let mut req = send_ping::v1::Request::new();
        req.transaction_id = txn_id;
        self.send(req, QUERY_TIMEOUT).await
    }

    async fn send<R>(&self, req: R, timeout: Duration) -> Result<(), ClientError>
    where
        R: OutgoingRequest<
                Authentication = ruma::api::appservice::HomeserverToken,
                PathBuilder = ruma::api::path_builder::SinglePath,
            >,
    {
        self.send_with_body(req, None, timeout).await
    }

    /// Sends `req`, with `body` instead of the one ruma made when given.
    async fn send_with_body<R>(
        &self,
        req: R,
        body: Option<Bytes>,
        timeout: Duration,
    ) -> Result<(), ClientError>
    where
        R: OutgoingRequest<
                Authentication = ruma::api::appservice::HomeserverToken,
                PathBuilder = ruma::api::path_builder::SinglePath,
            >,
    {
        let http: hyper::Request<Vec<u8>> =
            req.try_into_http_request(&self.endpoint.base, &self.hs_token, ())?;
        let (mut parts, made) = http.into_parts();
        if let Ok(host) = self.endpoint.authority.parse() {
            parts.headers.insert(hyper::header::HOST, host);
        }
        let body = body.unwrap_or_else(|| Bytes::from(made));
        parts.headers.insert(
            hyper::header::CONTENT_LENGTH,
            hyper::header::HeaderValue::from(body.len()),
        );
        let request = hyper::Request::from_parts(parts, Full::new(body));
        tokio::time::timeout(timeout, self.exchange(request))
            .await
            .map_err(|_| ClientError::Timeout(timeout))?
    }

    async fn exchange(&self, request: hyper::Request<Full<Bytes>>) -> Result<(), ClientError> {
        let mut conn = self.connection().await?;
        let answer = conn.send_request(request).await?;
        let status = answer.status();
        let body = Limited::new(answer.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|_| ClientError::Body)?
            .to_bytes();
        // Only a connection whose exchange completed goes back to the pool.
        let mut idle = lock(&self.idle);
        if idle.len() < KEPT_CONNECTIONS {
            idle.push(conn);
        }
        drop(idle);
        if status.is_success() {
            Ok(())
        } else {
            Err(ClientError::Status {
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body).chars().take(200).collect(),
            })
        }
    }

    async fn connection(&self) -> Result<SendRequest<Full<Bytes>>, ClientError> {
        loop {
            let Some(mut conn) = lock(&self.idle).pop() else {
                break;
            };
            if conn.ready().await.is_ok() {
                return Ok(conn);
            }
        }
        let e = &self.endpoint;
        let tcp = TcpStream::connect((e.host.as_str(), e.port))
            .await
            .map_err(|source| ClientError::Connect {
                addr: e.authority.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        if !e.tls {
            return handshake(TokioIo::new(tcp)).await;
        }
        let tls_error = |source| ClientError::Tls {
            addr: e.authority.clone(),
            source,
        };
        let name = rustls::pki_types::ServerName::try_from(e.host.clone())
            .map_err(|err| tls_error(std::io::Error::other(err)))?;
        let stream = tokio_rustls::TlsConnector::from(Arc::clone(&self.tls))
            .connect(name, tcp)
            .await
            .map_err(tls_error)?;
        handshake(TokioIo::new(stream)).await
    }
}

/// HTTP/1.1 over `io`; the connection is driven by its own task.
async fn handshake<I>(io: I) -> Result<SendRequest<Full<Bytes>>, ClientError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (send, conn) = http1::handshake(io).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "application service connection ended");
        }
    });
    Ok(send)
}

/// A query's answer: 2xx found, 404 not found, anything else an error.
fn found(result: Result<(), ClientError>) -> Result<bool, ClientError> {
    match result {
        Ok(()) => Ok(true),
        Err(ClientError::Status { status: 404, .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let e = Endpoint::parse("http://127.0.0.1:9000/").expect("valid");
        assert_eq!(e.authority, "127.0.0.1:9000");
        assert_eq!(e.base, "http://127.0.0.1:9000");
        assert!(!e.tls);
        let e = Endpoint::parse("https://bridge.example/base").expect("valid");
        assert_eq!(
            (e.host.as_str(), e.port, e.tls),
            ("bridge.example", 443, true)
        );
        assert_eq!(
            Endpoint::parse("https://[::1]:8443").expect("valid").host,
            "::1"
        );
        assert_eq!(
            Endpoint::parse("http://bridge/base")
                .expect("valid")
                .authority,
            "bridge:80"
        );
        for bad in ["ftp://x", "nope", "http://x/?a=b"] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }
}
