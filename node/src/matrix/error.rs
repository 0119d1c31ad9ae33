//! [`MatrixError`], every way a Matrix request can fail, and its one mapping to the wire: an
//! HTTP status with a standard error body (`errcode`, `error`) built with ruma's error types, or
//! the user-interactive authentication answer (401 with `flows`, `params` and `session`).
//!
//! Internal failures (store, hashing, randomness, tasks) are logged here with their source and
//! answered with a bare 500 `M_UNKNOWN`: their details never reach the client.

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ruma::api::OutgoingResponse;
use ruma::api::OutgoingResponseExt as _;
use ruma::api::client::uiaa::{UiaaInfo, UiaaResponse};
use ruma::api::error::{
    Error as RumaError, ErrorBody, ErrorKind, StandardErrorBody, UnknownTokenErrorData,
};

use ruma::api::client::keys::upload_signatures::v3::Failure;

use crate::rooms::RoomError;
use crate::store::StoreError;
use crate::userdata::{FilterError, SignatureFailure, SignatureFailureKind};

/// A failed Matrix request. The `Display` text is the `error` message sent to the client
/// (except for internal errors, which send a generic one).
#[derive(Debug, thiserror::Error)]
pub enum MatrixError {
    #[error("missing access token")]
    MissingToken,
    #[error("unknown access token")]
    UnknownToken,
    #[error("the request body is not valid JSON")]
    NotJson,
    #[error("bad JSON: {0}")]
    BadJson(String),
    #[error("invalid parameter: {0}")]
    InvalidParam(String),
    #[error("missing parameter: {0}")]
    MissingParam(&'static str),
    /// A signature of an uploaded key is missing or wrong (400 `M_INVALID_SIGNATURE`).
    #[error("{0}")]
    InvalidSignature(String),
    #[error("the request body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("unrecognized request")]
    UnrecognizedEndpoint,
    #[error("method not allowed on this endpoint")]
    MethodNotAllowed,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("guest access is not supported")]
    GuestAccessForbidden,
    #[error("invalid username: {0}")]
    InvalidUsername(&'static str),
    #[error("the user ID is already taken")]
    UserInUse,
    #[error("the ID is in a namespace reserved by the node or an application service")]
    Exclusive,
    /// A request the node understands but does not support (login type, identifier type,
    /// user-interactive authentication session): 400 `M_UNKNOWN`.
    #[error("{0}")]
    Unsupported(String),
    #[error("too many requests: {0}")]
    LimitExceeded(&'static str),
    /// Past a `[matrix.rate_limit]` bucket: 429 `M_LIMIT_EXCEEDED` with `retry_after_ms`.
    #[error("too many requests: retry after {retry_after:?}")]
    RateLimited { retry_after: std::time::Duration },
    /// User-interactive authentication is needed (or its stage failed): 401 with the flows.
    #[error("user-interactive authentication required")]
    UiaRequired(Box<UiaaInfo>),
    #[error("{0}")]
    NotFound(String),
    /// A kind of account data that only the server sets (405 `M_BAD_JSON`).
    #[error("{0} is controlled by the server; clients cannot set it")]
    ServerManaged(String),
    #[error(transparent)]
    Room(#[from] RoomError),
    /// The `filter` of a `/sync`.
    #[error(transparent)]
    Filter(#[from] FilterError),
    /// The operator's policy refused the action (the reason names the policy).
    #[error(transparent)]
    Denied(#[from] crate::bus::Denied),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A value the node builds or reads (event content, a stored filter) that cannot be
    /// written or read as JSON.
    #[error("{what}: {source}")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// Hashing or verifying a password failed.
    #[error("password hashing: {0}")]
    PasswordHashing(#[source] super::password::HashError),
    /// The password hashing thread is gone.
    #[error("the password hashing thread has stopped")]
    HashingStopped,
    #[error("no randomness: {0}")]
    NoRandomness(#[source] getrandom::Error),
    /// A stored localpart that no longer makes a valid user ID.
    #[error("stored localpart {localpart:?}: {source}")]
    StoredLocalpart {
        localpart: String,
        #[source]
        source: ruma::IdParseError,
    },
    /// Eight random localparts in a row were taken.
    #[error("no free generated localpart after 8 tries")]
    NoFreeLocalpart,
    /// The bridge of a room to its data object failed.
    #[error("bridge: {0}")]
    Bridge(#[source] crate::bridge::BridgeError),
    /// The handler panicked (caught by the server's request layer; the panic is logged there).
    #[error("the request handler panicked")]
    HandlerPanicked,
    /// An application service's ping: it has no `url` (400 `M_URL_NOT_SET`).
    #[error("the application service has no url")]
    AsUrlNotSet,
    /// An application service's ping: it cannot be reached (502 `M_CONNECTION_FAILED`).
    #[error("cannot reach the application service")]
    AsConnectionFailed,
    /// An application service's ping: no answer in time (504 `M_CONNECTION_TIMEOUT`).
    #[error("the application service did not answer in time")]
    AsConnectionTimeout,
    /// An application service's ping: it answered an error (502 `M_BAD_STATUS`).
    #[error("the application service answered {status}")]
    AsBadStatus { status: u16, body: String },
    /// A user or alias query of the application services whose namespace holds the ID: none
    /// said it exists and one could not be asked (503 `M_UNKNOWN`: whether it exists is
    /// unknown; the services' errors are logged by `appservice`).
    #[error("an application service that may hold it cannot be asked now; try again later")]
    AsUnavailable,
    /// The request took longer than `server.request_timeout_secs` (503 `M_UNKNOWN`).
    #[error("the request took too long")]
    TimedOut,
}

impl MatrixError {
    /// The status this error answers with.
    pub(crate) fn status(&self) -> StatusCode {
        self.status_and_kind().0
    }

    /// The status and error kind this error answers with.
    fn status_and_kind(&self) -> (StatusCode, ErrorKind) {
        use MatrixError as E;
        match self {
            E::MissingToken => (StatusCode::UNAUTHORIZED, ErrorKind::MissingToken),
            E::UnknownToken => (
                StatusCode::UNAUTHORIZED,
                ErrorKind::UnknownToken(UnknownTokenErrorData::new()),
            ),
            E::NotJson => (StatusCode::BAD_REQUEST, ErrorKind::NotJson),
            E::BadJson(_) => (StatusCode::BAD_REQUEST, ErrorKind::BadJson),
            E::InvalidParam(_) => (StatusCode::BAD_REQUEST, ErrorKind::InvalidParam),
            E::MissingParam(_) => (StatusCode::BAD_REQUEST, ErrorKind::MissingParam),
            E::InvalidSignature(_) => (StatusCode::BAD_REQUEST, custom_kind(INVALID_SIGNATURE)),
            E::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, ErrorKind::TooLarge),
            E::UnrecognizedEndpoint => (StatusCode::NOT_FOUND, ErrorKind::Unrecognized),
            E::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, ErrorKind::Unrecognized),
            E::Forbidden(_) => (StatusCode::FORBIDDEN, ErrorKind::Forbidden),
            E::GuestAccessForbidden => (StatusCode::FORBIDDEN, ErrorKind::GuestAccessForbidden),
            E::InvalidUsername(_) => (StatusCode::BAD_REQUEST, ErrorKind::InvalidUsername),
            E::UserInUse => (StatusCode::BAD_REQUEST, ErrorKind::UserInUse),
            E::Exclusive => (StatusCode::BAD_REQUEST, ErrorKind::Exclusive),
            E::Unsupported(_) => (StatusCode::BAD_REQUEST, ErrorKind::Unknown),
            E::LimitExceeded(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                ErrorKind::LimitExceeded(Default::default()),
            ),
            E::RateLimited { retry_after } => {
                let mut data = ruma::api::error::LimitExceededErrorData::new();
                data.retry_after = Some(ruma::api::error::RetryAfter::Delay(*retry_after));
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    ErrorKind::LimitExceeded(data),
                )
            }
            E::UiaRequired(_) => (StatusCode::UNAUTHORIZED, ErrorKind::Unknown),
            E::NotFound(_) => (StatusCode::NOT_FOUND, ErrorKind::NotFound),
            E::ServerManaged(_) => (StatusCode::METHOD_NOT_ALLOWED, ErrorKind::BadJson),
            // The database is unreachable: the request may succeed later.
            E::Store(e) | E::Filter(FilterError::Store(e)) if e.is_unavailable() => {
                (StatusCode::SERVICE_UNAVAILABLE, ErrorKind::Unknown)
            }
            E::Room(room) => room_status_and_kind(room),
            E::Filter(FilterError::NotJson(_)) => (StatusCode::BAD_REQUEST, ErrorKind::NotJson),
            E::Filter(FilterError::BadJson(_)) => (StatusCode::BAD_REQUEST, ErrorKind::BadJson),
            E::Filter(FilterError::Store(_)) => {
                (StatusCode::INTERNAL_SERVER_ERROR, ErrorKind::Unknown)
            }
            E::Denied(_) => (StatusCode::FORBIDDEN, ErrorKind::Forbidden),
            E::TimedOut | E::AsUnavailable => (StatusCode::SERVICE_UNAVAILABLE, ErrorKind::Unknown),
            E::AsUrlNotSet => (StatusCode::BAD_REQUEST, ErrorKind::UrlNotSet),
            E::AsConnectionFailed => (StatusCode::BAD_GATEWAY, ErrorKind::ConnectionFailed),
            E::AsConnectionTimeout => (StatusCode::GATEWAY_TIMEOUT, ErrorKind::ConnectionTimeout),
            E::AsBadStatus { status, body } => {
                let mut data = ruma::api::error::BadStatusErrorData::new();
                data.status = StatusCode::from_u16(*status).ok();
                data.body = Some(body.clone());
                (StatusCode::BAD_GATEWAY, ErrorKind::BadStatus(data))
            }
            E::HandlerPanicked
            | E::Store(_)
            | E::Json { .. }
            | E::PasswordHashing(_)
            | E::HashingStopped
            | E::NoRandomness(_)
            | E::StoredLocalpart { .. }
            | E::NoFreeLocalpart
            | E::Bridge(_) => (StatusCode::INTERNAL_SERVER_ERROR, ErrorKind::Unknown),
        }
    }

    /// The error as ruma's error response.
    fn into_ruma(self) -> RumaError {
        let (status, kind) = self.status_and_kind();
        // Internal errors are exactly those answered 500: their details are logged, not sent.
        let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %self, "matrix request failed");
            "internal server error".to_owned()
        } else if status == StatusCode::SERVICE_UNAVAILABLE
            // A busy room is not a database outage: its own message ("retry").
            && !matches!(
                self,
                Self::TimedOut | Self::AsUnavailable | Self::Room(RoomError::Busy(_))
            )
        {
            tracing::warn!(error = %self, "matrix request failed: the database is unavailable");
            "the database is unavailable; try again later".to_owned()
        } else {
            self.to_string()
        };
        let standard = StandardErrorBody::new(kind, message);
        let body = match &standard.kind {
            // ruma leaves `soft_logout: false` out (the spec's default); say it explicitly, as
            // other homeservers do, so that no client has to know the default.
            ErrorKind::UnknownToken(data) if !data.soft_logout => {
                match serde_json::to_value(&standard) {
                    Ok(mut json) => {
                        json["soft_logout"] = false.into();
                        ErrorBody::Json(json)
                    }
                    Err(_) => ErrorBody::Standard(standard),
                }
            }
            _ => ErrorBody::Standard(standard),
        };
        RumaError::new(status, body)
    }
}

/// `M_INVALID_SIGNATURE` (ruma's `ErrorKind` has no variant for it).
const INVALID_SIGNATURE: &str = "M_INVALID_SIGNATURE";

/// A refused signature of `keys/signatures/upload` as ruma's `Failure` (which has no
/// constructor: it is read from its JSON).
pub(crate) fn signature_failure(failure: SignatureFailure) -> Result<Failure, MatrixError> {
    let kind = match failure.kind {
        SignatureFailureKind::InvalidSignature => custom_kind(INVALID_SIGNATURE),
        SignatureFailureKind::UnknownKey => ErrorKind::NotFound,
        SignatureFailureKind::BadJson => ErrorKind::BadJson,
    };
    let json = serde_json::json!({"errcode": kind.errcode(), "error": failure.error});
    serde_json::from_value(json).map_err(|source| MatrixError::Json {
        what: "signature failure",
        source,
    })
}

/// The `auth_error` of a user-interactive authentication answer whose stage failed
/// (`M_FORBIDDEN`).
pub(crate) fn uia_forbidden(message: String) -> StandardErrorBody {
    StandardErrorBody::new(ErrorKind::Forbidden, message)
}

/// An error kind ruma does not name (it has no constructor for them: one is read from its
/// `errcode`).
fn custom_kind(errcode: &str) -> ErrorKind {
    serde_json::from_value(serde_json::json!({ "errcode": errcode })).unwrap_or(ErrorKind::Unknown)
}

/// The status and error kind of a failed room operation.
fn room_status_and_kind(error: &RoomError) -> (StatusCode, ErrorKind) {
    use RoomError as R;
    match error {
        R::Store(e) if e.is_unavailable() => (StatusCode::SERVICE_UNAVAILABLE, ErrorKind::Unknown),
        R::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, ErrorKind::Unknown),
        R::UnknownRoom(_) | R::NotFound(_) => (StatusCode::NOT_FOUND, ErrorKind::NotFound),
        R::Forbidden(_) => (StatusCode::FORBIDDEN, ErrorKind::Forbidden),
        R::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, ErrorKind::TooLarge),
        R::BadJson(_) => (StatusCode::BAD_REQUEST, ErrorKind::BadJson),
        R::InvalidParam(_) => (StatusCode::BAD_REQUEST, ErrorKind::InvalidParam),
        R::AliasInUse => (StatusCode::CONFLICT, ErrorKind::Unknown),
        R::RoomInUse => (StatusCode::BAD_REQUEST, ErrorKind::RoomInUse),
        R::UnsupportedRoomVersion(_) => {
            (StatusCode::BAD_REQUEST, ErrorKind::UnsupportedRoomVersion)
        }
        R::Store(_)
        | R::Json { .. }
        | R::PduNotAnObject
        | R::StoredNotAnObject(_)
        | R::Signing(_)
        | R::Redaction { .. }
        | R::Identifier { .. }
        | R::TxnEventLost(_) => (StatusCode::INTERNAL_SERVER_ERROR, ErrorKind::Unknown),
    }
}

impl From<crate::bridge::BridgeError> for MatrixError {
    fn from(e: crate::bridge::BridgeError) -> Self {
        use crate::bridge::BridgeError as B;
        match e {
            B::Room(room) => MatrixError::Room(room),
            B::Denied(denied) => MatrixError::Denied(denied),
            other => MatrixError::Bridge(other),
        }
    }
}

impl IntoResponse for MatrixError {
    fn into_response(self) -> Response {
        match self {
            MatrixError::UiaRequired(info) => {
                outgoing(UiaaResponse::AuthResponse(*info), StatusCode::UNAUTHORIZED)
            }
            other => {
                let status = other.status_and_kind().0;
                outgoing(other.into_ruma(), status)
            }
        }
    }
}

/// A successful Matrix response: any ruma response type, serialised by ruma.
#[derive(Debug)]
pub(crate) struct RumaResponse<R>(pub(crate) R);

impl<R: OutgoingResponse> IntoResponse for RumaResponse<R> {
    fn into_response(self) -> Response {
        outgoing(self.0, StatusCode::OK)
    }
}

/// Serialises a ruma response with the CORS headers (every Matrix answer passes here); a failure
/// (a bug) is logged and answered with a bare 500.
fn outgoing<R: OutgoingResponse>(response: R, expected: StatusCode) -> Response {
    let mut answer = serialized(response, expected);
    super::cors::add_headers(answer.headers_mut());
    answer
}

fn serialized<R: OutgoingResponse>(response: R, expected: StatusCode) -> Response {
    match response.try_into_http_response::<Vec<u8>>() {
        Ok(http) => http.map(Body::from),
        Err(e) => unserializable(&e, expected),
    }
}

/// The answer for a JSON body serialized by the handler: 200 with it, or, when serializing failed
/// (a bug), the bare 500; with the CORS headers either way.
pub(super) fn json_answer(body: Result<Vec<u8>, serde_json::Error>) -> Response {
    let mut answer = match body {
        Ok(bytes) => (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            bytes,
        )
            .into_response(),
        Err(e) => unserializable(&e, StatusCode::OK),
    };
    super::cors::add_headers(answer.headers_mut());
    answer
}

/// The answer to a response that could not be serialized (a bug): logged, a bare 500.
fn unserializable(error: &dyn std::fmt::Display, expected: StatusCode) -> Response {
    tracing::error!(error = %error, status = %expected, "cannot serialize a matrix response");
    let body = r#"{"errcode":"M_UNKNOWN","error":"internal server error"}"#;
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// The result of a Matrix handler.
pub(crate) type MatrixResult<R> = Result<RumaResponse<R>, MatrixError>;

#[cfg(test)]
mod tests {
    use super::*;

    async fn answer(e: MatrixError) -> (u16, serde_json::Value) {
        let resp = e.into_response();
        let status = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn a_body_that_failed_to_serialize_is_a_500_with_the_cors_headers() {
        let failed = serde_json::from_str::<u8>("not a number").unwrap_err();
        let resp = json_answer(Err(failed));
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(resp.headers().contains_key("access-control-allow-origin"));
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["errcode"], "M_UNKNOWN");
    }

    #[tokio::test]
    async fn errors_map_to_status_and_errcode() {
        let cases = [
            (MatrixError::MissingToken, 401, "M_MISSING_TOKEN"),
            (MatrixError::NotJson, 400, "M_NOT_JSON"),
            (MatrixError::BadJson("x".into()), 400, "M_BAD_JSON"),
            (MatrixError::UnrecognizedEndpoint, 404, "M_UNRECOGNIZED"),
            (MatrixError::MethodNotAllowed, 405, "M_UNRECOGNIZED"),
            (MatrixError::Forbidden("no"), 403, "M_FORBIDDEN"),
            (MatrixError::UserInUse, 400, "M_USER_IN_USE"),
            (MatrixError::Exclusive, 400, "M_EXCLUSIVE"),
            (MatrixError::InvalidUsername("x"), 400, "M_INVALID_USERNAME"),
            (
                MatrixError::GuestAccessForbidden,
                403,
                "M_GUEST_ACCESS_FORBIDDEN",
            ),
            (MatrixError::TooLarge { limit: 1 }, 413, "M_TOO_LARGE"),
            (
                MatrixError::InvalidSignature("x".into()),
                400,
                "M_INVALID_SIGNATURE",
            ),
            (MatrixError::AsUnavailable, 503, "M_UNKNOWN"),
        ];
        for (e, status, errcode) in cases {
            let (s, body) = answer(e).await;
            assert_eq!(
                (s, body["errcode"].as_str()),
                (status, Some(errcode)),
                "{body}"
            );
            assert!(body["error"].is_string());
        }
    }

    #[tokio::test]
    async fn unknown_token_says_soft_logout_false() {
        let (s, body) = answer(MatrixError::UnknownToken).await;
        assert_eq!(s, 401);
        assert_eq!(body["errcode"], "M_UNKNOWN_TOKEN");
        assert_eq!(body["soft_logout"], false);
    }

    #[tokio::test]
    async fn internal_details_are_not_sent() {
        let (s, body) = answer(MatrixError::StoredLocalpart {
            localpart: "secret detail".into(),
            source: ruma::UserId::parse("not an id").unwrap_err(),
        })
        .await;
        assert_eq!(s, 500);
        assert_eq!(body["errcode"], "M_UNKNOWN");
        assert!(!body.to_string().contains("secret"));
    }

    #[tokio::test]
    async fn a_locked_sqlite_database_is_a_503() {
        for e in [
            MatrixError::Store(crate::store::unavailable_tests::sqlite_busy().await),
            MatrixError::Room(RoomError::Store(
                crate::store::unavailable_tests::sqlite_busy().await,
            )),
        ] {
            let (s, body) = answer(e).await;
            assert_eq!(s, 503, "{body}");
            assert_eq!(body["errcode"], "M_UNKNOWN");
            assert_eq!(
                body["error"],
                "the database is unavailable; try again later"
            );
        }
    }
}
