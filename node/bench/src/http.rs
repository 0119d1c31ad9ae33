//! A minimal HTTP/1.1 client for the Matrix scenario: one keep-alive hyper
//! connection per simulated client (one request at a time, reconnected after
//! an error), JSON bodies, an optional bearer token. The connection is driven by
//! the task making the request (raced against it) rather than by a task of its
//! own, which saves two task wake-ups per request in a load generator that
//! shares the machine with the node it measures.

use std::fmt::Write as _;
use std::io;
use std::pin::Pin;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Why a request got no HTTP response.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpError {
    #[error(
        "too many open files (EMFILE) while connecting: raise the limit, e.g. `ulimit -n 65536`"
    )]
    TooManyOpenFiles,
    #[error("cannot connect to {authority}: {source}")]
    Connect {
        authority: String,
        #[source]
        source: io::Error,
    },
    #[error("HTTP handshake with {authority} failed: {source}")]
    Handshake {
        authority: String,
        #[source]
        source: hyper::Error,
    },
    #[error("cannot build the request {method} {path}: {source}")]
    Build {
        method: Method,
        path: String,
        #[source]
        source: hyper::http::Error,
    },
    #[error("{method} {path}: the connection closed ({})", error.as_deref().unwrap_or("by the node"))]
    Closed {
        method: Method,
        path: String,
        error: Option<String>,
    },
    #[error("{method} {path}: {source}")]
    Request {
        method: Method,
        path: String,
        #[source]
        source: hyper::Error,
    },
}

/// A response: status and whole body.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) body: Bytes,
}

/// One keep-alive connection to `authority` (`host:port`), opened on first use.
#[derive(Debug)]
pub(crate) struct HttpConn {
    authority: String,
    open: Option<Open>,
}

#[derive(Debug)]
struct Open {
    sender: SendRequest<Full<Bytes>>,
    /// Polled only while a request is under way.
    connection: Pin<Box<Connection<TokioIo<TcpStream>, Full<Bytes>>>>,
}

impl HttpConn {
    pub(crate) fn new(authority: &str) -> Self {
        HttpConn {
            authority: authority.to_owned(),
            open: None,
        }
    }

    async fn connect(&self) -> Result<Open, HttpError> {
        let tcp = TcpStream::connect(&self.authority)
            .await
            .map_err(|source| {
                // EMFILE (per process) and ENFILE (system wide) on Linux.
                if matches!(source.raw_os_error(), Some(24 | 23)) {
                    HttpError::TooManyOpenFiles
                } else {
                    HttpError::Connect {
                        authority: self.authority.clone(),
                        source,
                    }
                }
            })?;
        // Small requests and responses: do not wait for more to coalesce.
        let _ = tcp.set_nodelay(true);
        let (sender, connection) = http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|source| HttpError::Handshake {
                authority: self.authority.clone(),
                source,
            })?;
        Ok(Open {
            sender,
            connection: Box::pin(connection),
        })
    }

    /// Sends one request (`path` with its query) and reads the whole response. After an
    /// error the connection is dropped; the next request opens a new one.
    pub(crate) async fn request(
        &mut self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Bytes>,
    ) -> Result<Response, HttpError> {
        let result = self.try_request(method, path, token, body).await;
        if result.is_err() {
            self.open = None;
        }
        result
    }

    async fn try_request(
        &mut self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Bytes>,
    ) -> Result<Response, HttpError> {
        let request_error = |method: &Method, source| HttpError::Request {
            method: method.clone(),
            path: path.to_owned(),
            source,
        };
        let open = match self.open.take() {
            Some(open) if !open.sender.is_closed() => open,
            _ => self.connect().await?,
        };
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(HOST, &self.authority);
        if let Some(token) = token {
            builder = builder.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        if body.is_some() {
            builder = builder.header(CONTENT_TYPE, "application/json");
        }
        let request = builder
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|source| HttpError::Build {
                method: method.clone(),
                path: path.to_owned(),
                source,
            })?;
        let Open { sender, connection } = self.open.insert(open);
        let exchange = async {
            sender
                .ready()
                .await
                .map_err(|e| request_error(&method, e))?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| request_error(&method, e))?;
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| request_error(&method, e))?
                .to_bytes();
            Ok(Response { status, body })
        };
        tokio::select! {
            biased;
            result = exchange => result,
            // The connection ends only on an error or a close by the node, mid-request.
            ended = connection.as_mut() => Err(HttpError::Closed {
                method: method.clone(),
                path: path.to_owned(),
                error: ended.err().map(|e| e.to_string()),
            }),
        }
    }
}

/// `s` percent-encoded for a path segment or query value: everything but RFC 3986's
/// unreserved characters.
pub(crate) fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_closed_mid_request_is_an_error_and_the_next_request_reconnects() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            // First connection: read the request, close without answering.
            let (mut first, _) = listener.accept().await.unwrap();
            let _ = first.read(&mut buf).await.unwrap();
            drop(first);
            // Second connection: answer.
            let (mut second, _) = listener.accept().await.unwrap();
            let _ = second.read(&mut buf).await.unwrap();
            second
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
                .unwrap();
            second
        });
        let mut conn = HttpConn::new(&authority);
        let failed = conn.request(Method::GET, "/x", None, None).await;
        assert!(failed.is_err(), "{failed:?}");
        let answered = conn
            .request(Method::GET, "/x", Some("t"), None)
            .await
            .unwrap();
        assert_eq!(answered.status, 200);
        assert_eq!(&answered.body[..], b"ok");
        drop(server.await.unwrap());
    }

    #[test]
    fn encodes_matrix_ids() {
        assert_eq!(encode("!abc:bench.local"), "%21abc%3Abench.local");
        assert_eq!(encode("{\"a\":1}"), "%7B%22a%22%3A1%7D");
        assert_eq!(encode("s12_3-x~"), "s12_3-x~");
    }
}
