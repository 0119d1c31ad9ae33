//! The node's front pages: `GET /`, a short HTML page saying what this node is (its domain, its
//! WebSocket URL, the stubs it serves, links to `/demo/`, the catalogue, `/healthz` and
//! `/metrics`), and `GET /.well-known/matrix/client`, which points Matrix clients at this node
//! (with CORS, as the Matrix spec asks).

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderValue;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use rethink_stubs::catalogue::descriptor_path;

use super::catalogue::{Public, cors, preflight};
use crate::node::Node;

/// The front pages' routes, with the node's public addresses.
pub(super) fn routes(public: Arc<Public>) -> Router<Node> {
    Router::new()
        .route("/", get(home))
        .route(
            "/.well-known/matrix/client",
            get(matrix_client).options(preflight),
        )
        .layer(Extension(public))
}

/// Escapes text for HTML.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `GET /`.
async fn home(State(node): State<Node>, Extension(public): Extension<Arc<Public>>) -> Response {
    let domain = escape(&node.config().domain);
    let ws = escape(&public.ws_url);
    let mut stubs = String::new();
    for stub in node.catalogue().snapshot().stubs() {
        let path = escape(&descriptor_path(stub.name()));
        let _ = writeln!(
            stubs,
            "<li><a href=\"{path}\">{name}</a> {version} <code>sha256 {sha}</code></li>",
            name = escape(stub.name()),
            version = escape(stub.version()),
            sha = stub.sha256(),
        );
    }
    let page = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\">\
         <title>rethink-node: {domain}</title></head>\n<body>\n\
         <h1>rethink-node for {domain}</h1>\n\
         <p>A <a href=\"https://github.com/reTHINK-project\">reTHINK</a> messaging node: hyperty \
         runtimes connect to <code>{ws}</code> and exchange reTHINK messages; it is also a Matrix \
         homeserver (Client-Server API under <code>/_matrix/client</code>).</p>\n\
         <ul>\n<li><a href=\"/demo/\">Demo</a>: two runtimes chatting through the downloaded \
         stub</li>\n\
         <li>Protocol stubs (the catalogue, signed descriptors):\n<ul>\n{stubs}</ul></li>\n\
         <li><a href=\"/healthz\">/healthz</a>, <a href=\"/metrics\">/metrics</a></li>\n\
         <li>The signing key: <a href=\"/_matrix/key/v2/server\">/_matrix/key/v2/server</a>\
         </li>\n</ul>\n</body>\n</html>\n"
    );
    (
        [
            (
                CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        page,
    )
        .into_response()
}

/// `GET /.well-known/matrix/client`.
async fn matrix_client(Extension(public): Extension<Arc<Public>>) -> Response {
    let body = serde_json::json!({"m.homeserver": {"base_url": public.base_url}});
    let mut response = (
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        body.to_string(),
    )
        .into_response();
    cors(response.headers_mut());
    response
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
