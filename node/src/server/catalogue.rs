//! The stub catalogue over HTTP (the catalogue itself is `rethink_stubs::catalogue`):
//!
//! - `GET /.well-known/protocolstub/<name>`: the stub's reTHINK descriptor, signed with the
//!   node's server key as Matrix signs JSON;
//! - `GET /.well-known/protocolstub/<name>/sha256/<hex>.wasm`: the component's bytes,
//!   content-addressed (`ETag`, `Cache-Control: immutable`, `If-None-Match` → 304);
//! - `OPTIONS` on both: the CORS preflight (every answer carries `Access-Control-Allow-Origin: *`
//!   so pages on other origins can download stubs).
//!
//! Also [`Public`], the node's public addresses (from `public_url`, else from the bound address
//! and TLS), which descriptors and the front pages (`front`) carry. [`FrontError`] is this edge's
//! one mapping from errors to answers: `{"code": <status>, "desc": <text>}`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use rethink_stubs::catalogue::{Site, Stub};
use ruma::canonical_json::{CanonicalJsonError, try_from_json_map};

use crate::config::Config;
use crate::node::Node;
use crate::rooms::RoomError;

/// The node's public addresses.
#[derive(Debug, Clone)]
pub(super) struct Public {
    /// `https://node.example.com`, no trailing slash.
    pub(super) base_url: String,
    /// `wss://node.example.com/ws`.
    pub(super) ws_url: String,
}

impl Public {
    /// From `public_url`, else from the bound address (the domain's name for an unspecified
    /// address such as `0.0.0.0`) with `https` under TLS.
    pub(super) fn new(config: &Config, bound: SocketAddr) -> Self {
        let base_url = config.public_url.clone().unwrap_or_else(|| {
            let scheme = if config.tls.is_some() {
                "https"
            } else {
                "http"
            };
            if bound.ip().is_unspecified() {
                format!("{scheme}://{}:{}", config.domain, bound.port())
            } else {
                format!("{scheme}://{bound}")
            }
        });
        let ws_base = match base_url.strip_prefix("https://") {
            Some(rest) => format!("wss://{rest}"),
            None => format!(
                "ws://{}",
                base_url.strip_prefix("http://").unwrap_or(&base_url)
            ),
        };
        Self {
            ws_url: format!("{ws_base}/ws"),
            base_url,
        }
    }
}

/// Why a catalogue or front-page request is not answered with what it asked for.
#[derive(Debug, thiserror::Error)]
pub(super) enum FrontError {
    #[error("no protocol stub named {0:?}")]
    UnknownStub(String),
    #[error("protocol stub {name:?} has no package {file:?}")]
    UnknownPackage { name: String, file: String },
    #[error("descriptor is not canonical JSON: {0}")]
    Canonical(#[source] CanonicalJsonError),
    #[error("descriptor signing failed: {0}")]
    Signing(#[source] RoomError),
    #[error("descriptor serialization failed: {0}")]
    Serialize(#[source] serde_json::Error),
}

impl IntoResponse for FrontError {
    fn into_response(self) -> Response {
        let (status, desc) = match &self {
            FrontError::UnknownStub(_) | FrontError::UnknownPackage { .. } => {
                (StatusCode::NOT_FOUND, self.to_string())
            }
            FrontError::Canonical(_) | FrontError::Signing(_) | FrontError::Serialize(_) => {
                tracing::error!(error = %self, "catalogue request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error".to_owned(),
                )
            }
        };
        let body = serde_json::json!({"code": status.as_u16(), "desc": desc});
        let mut response = (
            status,
            [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            body.to_string(),
        )
            .into_response();
        cors(response.headers_mut());
        response
    }
}

/// The CORS headers of every catalogue and `.well-known` answer: readable from any origin.
pub(super) fn cors(headers: &mut HeaderMap) {
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    headers.insert(
        ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, OPTIONS"),
    );
    headers.insert(
        ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("If-None-Match, Content-Type"),
    );
    headers.insert(
        ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("ETag"),
    );
}

/// The answer to a CORS preflight.
pub(super) async fn preflight() -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    cors(response.headers_mut());
    response
}

/// The catalogue's routes, with the node's public addresses.
pub(super) fn routes(public: Arc<Public>) -> Router<Node> {
    Router::new()
        .route(
            "/.well-known/protocolstub/{name}",
            get(descriptor).options(preflight),
        )
        .route(
            "/.well-known/protocolstub/{name}/sha256/{file}",
            get(package).options(preflight),
        )
        .layer(Extension(public))
}

/// The signed descriptor of `stub`, as JSON text.
fn signed_descriptor(node: &Node, public: &Public, stub: &Stub) -> Result<Vec<u8>, FrontError> {
    let site = Site {
        base_url: &public.base_url,
        ws_url: &public.ws_url,
        domain: &node.config().domain,
    };
    let mut object = try_from_json_map(stub.descriptor(&site)).map_err(FrontError::Canonical)?;
    node.rooms()
        .server_key()
        .sign_json(&mut object)
        .map_err(FrontError::Signing)?;
    serde_json::to_vec(&object).map_err(FrontError::Serialize)
}

/// `GET /.well-known/protocolstub/<name>`.
async fn descriptor(
    State(node): State<Node>,
    Extension(public): Extension<Arc<Public>>,
    Path(name): Path<String>,
) -> Result<Response, FrontError> {
    let snapshot = node.catalogue().snapshot();
    let stub = snapshot
        .get(&name)
        .ok_or_else(|| FrontError::UnknownStub(name.clone()))?;
    let body = signed_descriptor(&node, &public, stub)?;
    let mut response = (
        [
            (CONTENT_TYPE, HeaderValue::from_static("application/json")),
            // A reload may change it: revalidate every time.
            (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response();
    cors(response.headers_mut());
    Ok(response)
}

/// Whether an `If-None-Match` header names the entity tag `"<sha256>"` (or is `*`).
fn none_match(headers: &HeaderMap, sha256: &str) -> bool {
    headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| {
            tag == "*" || tag.strip_prefix('"').and_then(|t| t.strip_suffix('"')) == Some(sha256)
        })
}

/// `GET /.well-known/protocolstub/<name>/sha256/<hex>.wasm`.
async fn package(
    State(node): State<Node>,
    Path((name, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, FrontError> {
    let snapshot = node.catalogue().snapshot();
    let stub = file
        .strip_suffix(".wasm")
        .and_then(|sha| snapshot.by_hash(&name, sha))
        .ok_or_else(|| FrontError::UnknownPackage {
            name: name.clone(),
            file: file.clone(),
        })?;
    let etag = HeaderValue::from_str(&format!("\"{}\"", stub.sha256()))
        .unwrap_or_else(|_| HeaderValue::from_static("\"\""));
    let immutable = HeaderValue::from_static("public, max-age=31536000, immutable");
    let mut response = if none_match(&headers, stub.sha256()) {
        (
            StatusCode::NOT_MODIFIED,
            [(ETAG, etag), (CACHE_CONTROL, immutable)],
        )
            .into_response()
    } else {
        (
            [
                (CONTENT_TYPE, HeaderValue::from_static("application/wasm")),
                (ETAG, etag),
                (CACHE_CONTROL, immutable),
            ],
            stub.bytes().clone(),
        )
            .into_response()
    };
    cors(response.headers_mut());
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TlsConfig;

    #[test]
    fn public_urls_come_from_the_setting_or_the_bound_address() {
        let mut config = Config::for_tests(&std::env::temp_dir(), "example.com");
        let at = |config: &Config, bound: &str| {
            let p = Public::new(config, bound.parse().expect("address"));
            (p.base_url, p.ws_url)
        };
        assert_eq!(
            at(&config, "127.0.0.1:8900"),
            (
                "http://127.0.0.1:8900".into(),
                "ws://127.0.0.1:8900/ws".into()
            )
        );
        assert_eq!(
            at(&config, "[::1]:80"),
            ("http://[::1]:80".into(), "ws://[::1]:80/ws".into())
        );
        assert_eq!(
            at(&config, "0.0.0.0:8900"),
            (
                "http://example.com:8900".into(),
                "ws://example.com:8900/ws".into()
            )
        );
        config.tls = Some(TlsConfig {
            cert: "c.pem".into(),
            key: "k.pem".into(),
        });
        assert_eq!(
            at(&config, "127.0.0.1:443"),
            (
                "https://127.0.0.1:443".into(),
                "wss://127.0.0.1:443/ws".into()
            )
        );
        config.public_url = Some("https://node.example.com/rethink".into());
        assert_eq!(
            at(&config, "127.0.0.1:443"),
            (
                "https://node.example.com/rethink".into(),
                "wss://node.example.com/rethink/ws".into()
            )
        );
        config.public_url = Some("http://node.example.com".into());
        assert_eq!(at(&config, "127.0.0.1:443").1, "ws://node.example.com/ws");
    }

    #[test]
    fn if_none_match_names_the_hash() {
        let sha = "ab12";
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(IF_NONE_MATCH, HeaderValue::from_static(v));
            h
        };
        assert!(none_match(&with("\"ab12\""), sha));
        assert!(none_match(&with("\"x\", W/\"ab12\""), sha));
        assert!(none_match(&with("*"), sha));
        assert!(!none_match(&with("\"ab1\""), sha));
        assert!(!none_match(&with("ab12"), sha));
        assert!(!none_match(&HeaderMap::new(), sha));
    }
}
