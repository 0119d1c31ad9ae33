//! The HTTP server: the router (`/ws`, `/healthz`, `/metrics`, `POST /admin/policy/reload`, the
//! Matrix API under `/_matrix`, the stub catalogue under `/.well-known/protocolstub` (`catalogue`),
//! the front pages `/` and `/.well-known/matrix/client` (`front`), an application service's
//! `POST /_rethink/app/v1/send` (`appservice_send`), the demo under `/demo/`
//! (`demo`)) with what every request passes (`layers`: span, panic catcher,
//! request deadline), and the listener (`conn`: plain TCP or TLS with `TCP_NODELAY`, connection
//! and handshake limits, header and keep-alive deadlines), stopped by the node's shutdown token.
//!
//! The connections are served with hyper's HTTP/1.1 connection builder rather than
//! `axum::serve`, which can set neither deadlines nor limits.

mod appservice_send;
mod catalogue;
mod conn;
mod demo;
mod front;
mod layers;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

pub use conn::Connections;

use crate::node::Node;
use crate::tls::TlsError;
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

/// The node's routes, each request in its span, with the panic catcher and the request deadline.
/// `bound` is the listening address (what the front pages and the catalogue's descriptors say
/// when `public_url` is not set).
pub fn router(node: Node, bound: SocketAddr) -> Router {
    let request_timeout = node.config().server.request_timeout;
    let public = Arc::new(catalogue::Public::new(node.config(), bound));
    let routes = Router::new()
        .route("/ws", get(ws::handler))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/admin/policy/reload", post(reload_policy))
        .route(appservice_send::PATH, post(appservice_send::send))
        .merge(crate::matrix::router())
        .merge(catalogue::routes(Arc::clone(&public)))
        .merge(front::routes(public))
        .merge(demo::router())
        .merge(crate::crossdomain::routes())
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found") })
        .with_state(node);
    layers::edge(routes, request_timeout)
}

async fn healthz(State(node): State<Node>) -> impl IntoResponse {
    if node.shutdown_token().is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down".to_owned());
    }
    // With store.url, the bus's PostgreSQL database is part of the node's health; with
    // clustering, NATS too.
    let database = match node.database() {
        None => None,
        Some(db) => Some(db.is_up().await),
    };
    let nats = node.cluster().map(|c| c.nats_up());
    let mut body = String::new();
    let mut healthy = true;
    for (name, up) in [("database", database), ("nats", nats)] {
        if let Some(up) = up {
            healthy &= up;
            body.push_str(&format!("{name}: {}\n", if up { "up" } else { "down" }));
        }
    }
    let status = if healthy {
        body.insert_str(0, "ok\n");
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body.trim_end().to_owned())
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
        Err(e) => {
            // A panic in the reload: its text is for the log, not the client.
            tracing::error!(error = %e, "the policy reload task failed");
            json(
                StatusCode::INTERNAL_SERVER_ERROR,
                serde_json::json!({"error": "internal error"}),
            )
        }
    }
}

/// The running listener: its accept task and its connections.
#[derive(Debug)]
pub struct Server {
    /// `None` once it has ended.
    accept: Option<JoinHandle<()>>,
    connections: Connections,
}

impl Server {
    /// The connections (to wait for them, or drop them, at shutdown).
    pub fn connections(&self) -> &Connections {
        &self.connections
    }

    /// Waits until the accept loop has stopped (it stops at the node's shutdown token) and every
    /// socket is closed.
    pub async fn closed(&mut self) {
        if let Some(accept) = &mut self.accept {
            if let Err(e) = accept.await {
                tracing::error!(error = %e, "the accept loop failed");
            }
            self.accept = None;
        }
        self.connections.all_closed().await;
    }
}

/// Binds the configured address and accepts connections until the node's shutdown token is
/// cancelled.
pub async fn serve(node: Node) -> Result<(SocketAddr, Server), ServerError> {
    let config = node.config();
    let addr = config.listen;
    let tcp = TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })?;
    let local = tcp
        .local_addr()
        .map_err(|source| ServerError::Bind { addr, source })?;
    let tls = match &config.tls {
        Some(tls) => Some(conn::TlsAccept {
            acceptor: TlsAcceptor::from(Arc::new(crate::tls::server_config(&tls.cert, &tls.key)?)),
            handshakes: Arc::new(Semaphore::new(config.server.max_tls_handshakes as usize)),
        }),
        None => None,
    };
    let connections = Connections::new(config.server.max_connections);
    // One route table for every connection (a clone is a reference count).
    let app = router(node.clone(), local);
    let accept = tokio::spawn(conn::accept_loop(
        tcp,
        tls,
        app,
        config.server,
        connections.clone(),
        node.shutdown_token().clone(),
    ));
    Ok((
        local,
        Server {
            accept: Some(accept),
            connections,
        },
    ))
}
