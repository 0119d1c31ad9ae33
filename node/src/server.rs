//! The HTTP server: the router (`/ws`, `/healthz`, `/metrics`), a plain TCP or TLS listener
//! with `TCP_NODELAY`, and graceful shutdown on the node's shutdown token.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
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
    let app = router(node.clone());
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
