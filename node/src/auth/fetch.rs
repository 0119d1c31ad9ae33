//! A minimal HTTPS GET for key sets: hyper's HTTP/1 client over `tokio-rustls` (the node's
//! client configuration, `rethink_stubs::tls`). Plain `http://` only for loopback hosts
//! (tests). One request per connection, a size limit and a timeout; no redirects, no proxies,
//! no spawned tasks.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::{Request, StatusCode, Uri, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// The largest key set accepted.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// How long one fetch may take, connection included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a key set could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("no answer within {}s", FETCH_TIMEOUT.as_secs())]
    Timeout,
    #[error("cannot connect: {0}")]
    Connect(#[source] std::io::Error),
    #[error("TLS: {0}")]
    Tls(#[source] std::io::Error),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("cannot build the request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("the server answered {0}")]
    Status(StatusCode),
    #[error("the body is not readable or larger than {MAX_JWKS_BYTES} bytes: {0}")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Why a key set URL is refused; each says the URL as written.
#[derive(Debug, thiserror::Error)]
pub enum JwksUrlError {
    #[error("{text:?} is not a URL: {source}")]
    NotAUrl {
        text: String,
        #[source]
        source: hyper::http::uri::InvalidUri,
    },
    #[error("{0:?} has no host")]
    NoHost(String),
    #[error("{0:?}: credentials in the URL are not supported")]
    Credentials(String),
    #[error("{0:?}: must be https:// (plain http:// only for 127.0.0.1, ::1 or localhost)")]
    PlainHttp(String),
    #[error("{0:?}: must be an https:// URL")]
    NotHttps(String),
}

/// A validated key set URL: `https://`, or `http://` on a loopback host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksUrl {
    uri: Uri,
    tls: bool,
    /// The host without IPv6 brackets.
    host: String,
    port: u16,
}

impl std::fmt::Display for JwksUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.uri)
    }
}

fn is_loopback(host: &str) -> bool {
    matches!(host, "127.0.0.1" | "::1" | "localhost")
}

impl JwksUrl {
    /// Checks a configured URL; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Self, JwksUrlError> {
        let uri: Uri = text.parse().map_err(|source| JwksUrlError::NotAUrl {
            text: text.to_owned(),
            source,
        })?;
        let authority = uri
            .authority()
            .ok_or_else(|| JwksUrlError::NoHost(text.to_owned()))?;
        if authority.as_str().contains('@') {
            return Err(JwksUrlError::Credentials(text.to_owned()));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        if host.is_empty() {
            return Err(JwksUrlError::NoHost(text.to_owned()));
        }
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") if is_loopback(&host) => false,
            Some("http") => return Err(JwksUrlError::PlainHttp(text.to_owned())),
            _ => return Err(JwksUrlError::NotHttps(text.to_owned())),
        };
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        Ok(Self {
            uri,
            tls,
            host,
            port,
        })
    }

    /// Whether the fetch uses TLS.
    pub fn is_https(&self) -> bool {
        self.tls
    }
}

/// The node's TLS client configuration (`rethink_stubs::tls`: ring, the web PKI roots,
/// HTTP/1.1 by ALPN). Built per fetch (a fetch happens at most every few seconds).
fn tls_config() -> Result<Arc<rustls::ClientConfig>, FetchError> {
    rethink_stubs::tls::client_config(&[]).map_err(|e| FetchError::Tls(std::io::Error::other(e)))
}

/// GETs the URL and returns the body of a `200` answer.
pub async fn get(url: &JwksUrl) -> Result<Vec<u8>, FetchError> {
    tokio::time::timeout(FETCH_TIMEOUT, get_inner(url))
        .await
        .map_err(|_| FetchError::Timeout)?
}

async fn get_inner(url: &JwksUrl) -> Result<Vec<u8>, FetchError> {
    let tcp = TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(FetchError::Connect)?;
    if url.tls {
        let name = rustls::pki_types::ServerName::try_from(url.host.clone())
            .map_err(|e| FetchError::Tls(std::io::Error::other(e)))?;
        let stream = tokio_rustls::TlsConnector::from(tls_config()?)
            .connect(name, tcp)
            .await
            .map_err(FetchError::Tls)?;
        request(TokioIo::new(stream), url).await
    } else {
        request(TokioIo::new(tcp), url).await
    }
}

async fn request<I>(io: I, url: &JwksUrl) -> Result<Vec<u8>, FetchError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, mut conn) = hyper::client::conn::http1::handshake(io).await?;
    let path = url.uri.path_and_query().map_or("/", |p| p.as_str());
    let host = url.uri.authority().map_or("", |a| a.as_str());
    let req = Request::get(path)
        .header(header::HOST, host)
        .header(header::ACCEPT, "application/json, application/jwk-set+json")
        .header(header::USER_AGENT, "rethink-node")
        .body(Empty::<Bytes>::new())?;
    let exchange = async {
        let resp = sender.send_request(req).await?;
        if resp.status() != StatusCode::OK {
            return Err(FetchError::Status(resp.status()));
        }
        let body = Limited::new(resp.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(FetchError::Body)?;
        Ok(body.to_bytes().to_vec())
    };
    tokio::pin!(exchange);
    // The connection is driven here (not spawned), so a timeout drops it with the request.
    tokio::select! {
        result = &mut exchange => result,
        closed = &mut conn => {
            closed?;
            exchange.await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_https_except_on_loopback() {
        let u = JwksUrl::parse("https://idp.example.com/.well-known/jwks.json").unwrap();
        assert!(u.is_https());
        assert_eq!((u.host.as_str(), u.port), ("idp.example.com", 443));
        let u = JwksUrl::parse("http://127.0.0.1:8080/jwks").unwrap();
        assert!(!u.is_https());
        assert_eq!(u.port, 8080);
        assert_eq!(JwksUrl::parse("http://[::1]/k").unwrap().host, "::1");
        assert!(JwksUrl::parse("http://localhost:1/k").is_ok());
        for bad in [
            "http://idp.example.com/jwks",
            "http://10.0.0.1/jwks",
            "ftp://idp.example.com/jwks",
            "/jwks.json",
            "https://user:pw@idp.example.com/jwks",
        ] {
            assert!(JwksUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn https_needs_a_tls_server() {
        // A server that closes at once: the TLS handshake fails, and that is reported as TLS.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                drop(sock);
            }
        });
        let url = JwksUrl::parse(&format!("https://{addr}/jwks")).unwrap();
        assert!(matches!(get(&url).await, Err(FetchError::Tls(_))));
        // Nobody listening (port 1): a connection error.
        let url = JwksUrl::parse("http://127.0.0.1:1/jwks").unwrap();
        assert!(matches!(get(&url).await, Err(FetchError::Connect(_))));
    }
}
