//! The HTTP server: the router (`/ws`, `/healthz`, `/metrics`, `POST /admin/policy/reload`, the
//! Matrix API under `/_matrix`), a plain TCP or TLS listener with `TCP_NODELAY`, and graceful
//! shutdown on the node's shutdown token.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::node::Node;
use crate::tls::{TlsError, TlsListener};
use crate::ws;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// The node's routes.
pub fn router(node: Node) -> Router {
    Router::new()
        .route("/ws", get(ws::handler))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/admin/policy/reload", post(reload_policy))
        .merge(crate::matrix::router())
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found") })
        .with_state(node)
}

async fn healthz(State(node): State<Node>) -> impl IntoResponse {
    if node.shutdown_token().is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down")
    } else {
        (StatusCode::OK, "ok")
    }
}

async fn metrics(State(node): State<Node>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        node.metrics().render(),
    )
}

fn json(status: StatusCode, value: serde_json::Value) -> axum::response::Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

/// `POST /admin/policy/reload`: reloads the policy directory now. 200 with the policy count, or
/// 400 naming the file, line and problem (the previous set stays). Needs `admin.token`.
async fn reload_policy(State(node): State<Node>, headers: HeaderMap) -> axum::response::Response {
    let Some(expected) = &node.config().admin.token else {
        return json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": "admin endpoints are disabled"}),
        );
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let ok = presented.is_some_and(|p| {
        p.len() == expected.len()
            && p.bytes()
                .zip(expected.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    });
    if !ok {
        return json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({"error": "admin token required"}),
        );
    }
    let point = std::sync::Arc::clone(node.bus().policy());
    match tokio::task::spawn_blocking(move || point.reload()).await {
        Ok(Ok(count)) => json(StatusCode::OK, serde_json::json!({"policies": count})),
        Ok(Err(e)) => json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"error": e.to_string()}),
        ),
        Err(e) => json(
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({"error": format!("reload task failed: {e}")}),
        ),
    }
}

/// Binds the configured address and serves until the node's shutdown token is cancelled.
pub async fn serve(node: Node) -> Result<(SocketAddr, JoinHandle<()>), ServerError> {
    let config = node.config();
    let addr = config.listen;
    let tcp = TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })?;
    let local = tcp
        .local_addr()
        .map_err(|source| ServerError::Bind { addr, source })?;
    let shutdown = node.shutdown_token().clone().cancelled_owned();
    // One route table for every connection: serving the `Router` itself would rebuild it for
    // each connection (`Router::with_state` per connection in axum 0.8), ~110 KiB of boxed
    // routes per open connection.
    let app = router(node.clone()).into_make_service();
    let task = match &config.tls {
        Some(tls) => {
            let listener = TlsListener::new(tcp, &tls.cert, &tls.key)?;
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await
                {
                    tracing::error!(error = %e, "server failed");
                }
            })
        }
        None => {
            let listener = tcp.tap_io(|s| {
                let _ = s.set_nodelay(true);
            });
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await
                {
                    tracing::error!(error = %e, "server failed");
                }
            })
        }
    };
    Ok((local, task))
}
