//! `/demo/`: the page where two hyperty runtimes chat through the stub they download from this
//! node, and the JavaScript runtime library it loads (`stubs/js/src`, embedded in the binary).
//!
//! The library transpiles the stub in the browser with jco, whose files (and the WASI shims
//! of `@bytecodealliance/preview2-shim`) are npm packages, not part of this repository: they
//! are served under `/demo/npm/` from `stubs/js/node_modules` of the source tree the node was
//! built from, when `npm ci --prefix stubs/js` has filled it; otherwise those requests are
//! answered 503 with that command. Only files of those two packages are served (no `.` or
//! `..` segment, `.js`, `.wasm` and `.json` only).

use std::path::{Path, PathBuf};

use axum::Router;
use axum::extract::Path as UrlPath;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use crate::node::Node;

const INDEX: &str = include_str!("../../../stubs/js/demo/index.html");
const PANE: &str = include_str!("../../../stubs/js/demo/pane.html");

/// The library's modules, by file name.
const LIBRARY: [(&str, &str); 5] = [
    (
        "runtime.js",
        include_str!("../../../stubs/js/src/runtime.js"),
    ),
    (
        "component.js",
        include_str!("../../../stubs/js/src/component.js"),
    ),
    ("host.js", include_str!("../../../stubs/js/src/host.js")),
    (
        "envelope.js",
        include_str!("../../../stubs/js/src/envelope.js"),
    ),
    ("verify.js", include_str!("../../../stubs/js/src/verify.js")),
];

/// The npm packages the library needs in a browser, served from `node_modules`.
const NPM_PACKAGES: [&str; 2] = [
    "@bytecodealliance/jco-transpile/",
    "@bytecodealliance/preview2-shim/",
];

/// Where `npm ci --prefix stubs/js` puts the packages, in the source tree of this build.
fn node_modules() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../stubs/js/node_modules")
}

/// The demo's routes.
pub(super) fn router() -> Router<Node> {
    Router::new()
        .route("/demo", get(|| async { Redirect::permanent("/demo/") }))
        .route("/demo/", get(|| async { html(INDEX) }))
        .route("/demo/pane.html", get(|| async { html(PANE) }))
        .route("/demo/lib/{file}", get(library))
        .route("/demo/npm/{*path}", get(npm))
}

fn html(text: &'static str) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], text).into_response()
}

async fn library(UrlPath(file): UrlPath<String>) -> Response {
    match LIBRARY.iter().find(|(name, _)| *name == file) {
        Some((_, text)) => (
            [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
            *text,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

/// The content type of a servable npm file, or `None` for a path that is not served.
fn npm_file(path: &str) -> Option<&'static str> {
    if !NPM_PACKAGES.iter().any(|p| path.starts_with(p)) {
        return None;
    }
    if path
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == ".." || s.contains('\\'))
    {
        return None;
    }
    let ext = path.rsplit_once('.')?.1;
    match ext {
        "js" => Some("text/javascript; charset=utf-8"),
        "wasm" => Some("application/wasm"),
        "json" => Some("application/json"),
        _ => None,
    }
}

async fn npm(UrlPath(path): UrlPath<String>) -> Response {
    let Some(content_type) = npm_file(&path) else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    let root = node_modules();
    if !root.is_dir() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the demo needs jco: run `npm ci --prefix stubs/js` in the node's source tree",
        )
            .into_response();
    }
    match tokio::fs::read(root.join(&path)).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, content_type)], bytes).into_response(),
        Err(_) => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::npm_file;

    #[test]
    fn serves_only_files_of_the_two_packages() {
        assert_eq!(
            npm_file("@bytecodealliance/preview2-shim/dist/browser/cli.js"),
            Some("text/javascript; charset=utf-8")
        );
        assert!(npm_file("@bytecodealliance/jco-transpile/vendor/x.core.wasm").is_some());
        assert_eq!(
            npm_file("@bytecodealliance/preview2-shim/../../../etc/passwd.js"),
            None
        );
        assert_eq!(npm_file("@bytecodealliance/preview2-shim/./a.js"), None);
        assert_eq!(npm_file("@bytecodealliance/preview2-shim//a.js"), None);
        assert_eq!(npm_file("left-pad/index.js"), None);
        assert_eq!(npm_file("@bytecodealliance/preview2-shim/README.md"), None);
    }
}
