//! What every request passes on its way to a handler: a tracing span (method, path without the
//! query; status and latency logged at debug when answered), a panic in the handler answered
//! 500 (`M_UNKNOWN` under `/_matrix`) instead of ending the connection, and a deadline for
//! ordinary requests (`server.request_timeout_secs`; not for `/sync`, which long-polls for at
//! most its own bounded `timeout`).

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt as _;
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::matrix::MatrixError;

/// `router` with the request span, the panic catcher and the request deadline around it.
pub(super) fn edge(router: Router, request_timeout: Duration) -> Router {
    router.layer(middleware::from_fn_with_state(request_timeout, guard))
}

/// A `/sync` (any API version): it long-polls, bounded by itself.
fn long_polls(path: &str) -> bool {
    path.starts_with("/_matrix/client/") && path.trim_end_matches('/').ends_with("/sync")
}

async fn guard(State(deadline): State<Duration>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let span = tracing::debug_span!("request", method = %req.method(), path = %path);
    async move {
        let started = Instant::now();
        let handled = AssertUnwindSafe(next.run(req)).catch_unwind();
        let outcome = if long_polls(&path) {
            Some(handled.await)
        } else {
            tokio::time::timeout(deadline, handled).await.ok()
        };
        let matrix = path.starts_with("/_matrix/");
        let response = match outcome {
            Some(Ok(response)) => response,
            Some(Err(panic)) => {
                tracing::error!(panic = panic_message(panic.as_ref()), "handler panicked");
                failure(matrix, StatusCode::INTERNAL_SERVER_ERROR, "internal error")
            }
            None => {
                tracing::warn!(
                    timeout_ms = u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX),
                    "request timed out"
                );
                failure(matrix, StatusCode::SERVICE_UNAVAILABLE, "request timed out")
            }
        };
        tracing::debug!(
            status = response.status().as_u16(),
            latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            "answered"
        );
        response
    }
    .instrument(span)
    .await
}

/// The answer for a request that panicked or timed out: under `/_matrix`, the Matrix error
/// mapping's (`M_UNKNOWN`, CORS headers); elsewhere plain text.
fn failure(matrix: bool, status: StatusCode, text: &'static str) -> Response {
    match (matrix, status) {
        (true, StatusCode::SERVICE_UNAVAILABLE) => MatrixError::TimedOut.into_response(),
        (true, _) => MatrixError::HandlerPanicked.into_response(),
        (false, _) => (status, text).into_response(),
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not a string)")
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use axum::routing::get;
    use tower::ServiceExt as _;

    use super::*;

    async fn answer(router: &Router, path: &str) -> (StatusCode, serde_json::Value) {
        let response = router
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, body)
    }

    fn router() -> Router {
        async fn boom() -> &'static str {
            panic!("a handler bug")
        }
        async fn slow() -> &'static str {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            "late"
        }
        async fn long_poll() -> &'static str {
            tokio::time::sleep(Duration::from_millis(300)).await;
            "polled"
        }
        edge(
            Router::new()
                .route("/boom", get(boom))
                .route("/_matrix/client/v3/boom", get(boom))
                .route("/slow", get(slow))
                .route("/_matrix/client/v3/slow", get(slow))
                .route("/_matrix/client/v3/sync", get(long_poll))
                .route("/fine", get(|| async { "fine" })),
            Duration::from_millis(100),
        )
    }

    #[tokio::test]
    async fn a_panicking_handler_is_answered_500_and_the_router_keeps_serving() {
        let router = router();
        let (status, body) = answer(&router, "/_matrix/client/v3/boom").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["errcode"], "M_UNKNOWN", "{body}");
        let (status, body) = answer(&router, "/boom").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body, "internal error");
        assert_eq!(answer(&router, "/fine").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn ordinary_requests_time_out_but_sync_long_polls_do_not() {
        let router = router();
        let (status, body) = answer(&router, "/slow").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, "request timed out");
        let (status, body) = answer(&router, "/_matrix/client/v3/slow").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["errcode"], "M_UNKNOWN", "{body}");
        // /sync is left to its own bound: it answers after three times the request deadline.
        let (status, body) = answer(&router, "/_matrix/client/v3/sync").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, Some("polled")));
    }

    #[test]
    fn sync_paths_are_recognised() {
        assert!(long_polls("/_matrix/client/v3/sync"));
        assert!(long_polls("/_matrix/client/r0/sync/"));
        assert!(!long_polls("/_matrix/client/v3/keys/query"));
        assert!(!long_polls("/sync"));
    }
}
