//! [`Ruma<T>`], the extractor every Matrix handler starts with: it buffers the body (at most
//! [`MAX_BODY_BYTES`]), authenticates the caller as the endpoint's ruma metadata requires, and
//! parses the request with ruma's `IncomingRequest::try_from_http_request`.
//!
//! In that order, so nothing of an unauthenticated request is parsed. A body that is not JSON
//! is `M_NOT_JSON`; JSON of the wrong shape is `M_BAD_JSON`, and so is JSON holding a string
//! that is not Unicode (a lone surrogate escape such as `"\ud800"`, which ruma and the store
//! would carry as raw JSON into events, to-device messages and keys, and which a strict client
//! then cannot parse): every string of every body is decoded once here
//! ([`crate::strict_json`]), so nothing
//! that could not be served back is stored. A `POST`, `PUT` or `DELETE` without a body is read
//! as `{}` (some clients send none when every field is optional). The access token comes from
//! `Authorization: Bearer` or the `access_token` query parameter (ruma's
//! `extract_bearer_or_query_token`); an `Authorization` header of another scheme counts as
//! missing. `login` and `register` ignore any token (clients send their stale one) except an
//! application service's. An application service's `as_token` authenticates it as its sender
//! user, or as the user of its namespace named by the `user_id` query parameter
//! (masquerading; 403 `M_FORBIDDEN` outside its namespace or for a user not registered).

use std::future::Future;

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request};
use axum::http::Method;
use ruma::api::IncomingRequest;
use ruma::api::IncomingRequestExt as _;
use ruma::api::auth_scheme::{
    AccessToken, AccessTokenOptional, AppserviceToken, AppserviceTokenOptional, AuthScheme,
    NoAccessToken, NoAuthentication, extract_bearer_or_query_token,
};
use std::sync::Arc;

use rethink_connectors::AppService;
use ruma::api::error::{DeserializationError, FromHttpRequestError};
use ruma::api::path_builder::PathBuilder as _;
use ruma::{OwnedDeviceId, UserId};
use serde::de::IgnoredAny;

use super::accounts::{Accounts, Caller};
use super::error::MatrixError;
use crate::node::Node;

/// The largest request body accepted (413 `M_TOO_LARGE` above it).
pub(crate) const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A parsed, authenticated Matrix request.
#[derive(Debug)]
pub(crate) struct Ruma<T>
where
    T: IncomingRequest,
    T::Authentication: Authentication,
{
    /// The request, as ruma parsed it.
    pub(crate) body: T,
    /// Who made it, as the endpoint's authentication scheme defines.
    pub(crate) caller: <T::Authentication as Authentication>::Caller,
}

/// What the node does with the token of each ruma authentication scheme.
pub(crate) trait Authentication: AuthScheme {
    /// What a handler learns about the caller.
    type Caller: Send + std::fmt::Debug;

    fn authenticate(
        node: &Node,
        token: Option<String>,
        query: Option<&str>,
    ) -> impl Future<Output = Result<Self::Caller, MatrixError>> + Send;
}

/// The caller behind a token: an application service (as its sender or a masqueraded user of
/// its namespace) or a device's access token.
async fn caller(node: &Node, token: &str, query: Option<&str>) -> Result<Caller, MatrixError> {
    let service = node.appservices().directory().by_token(token).cloned();
    match service {
        Some(service) => appservice_caller(node, service, query).await,
        None => node.accounts().authenticate(token).await,
    }
}

/// The device an application service's requests are made from unless `device_id` names one.
const APPSERVICE_DEVICE: &str = "APPSERVICE";

async fn appservice_caller(
    node: &Node,
    service: Arc<AppService>,
    query: Option<&str>,
) -> Result<Caller, MatrixError> {
    let server = node.appservices().server_name().clone();
    let param = |name: &str| {
        form_urlencoded::parse(query.unwrap_or("").as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    let sender = format!("@{}:{server}", service.registration.sender_localpart);
    let user = param("user_id").unwrap_or_else(|| sender.clone());
    let user_id =
        UserId::parse(&user).map_err(|e| MatrixError::InvalidParam(format!("user_id: {e}")))?;
    if user_id.server_name() != server || !service.owns_user(user_id.as_str(), server.as_str()) {
        return Err(MatrixError::Forbidden(
            "the application service cannot act as this user (outside its namespace)",
        ));
    }
    let accounts: &Accounts = node.accounts();
    if !accounts.exists(user_id.localpart()).await? {
        if user_id.as_str() == sender {
            accounts.create_appservice_user(user_id.localpart()).await?;
        } else {
            return Err(MatrixError::Forbidden(
                "the application service has not registered this user",
            ));
        }
    }
    let device_id: OwnedDeviceId = param("device_id")
        .unwrap_or_else(|| APPSERVICE_DEVICE.to_owned())
        .into();
    Ok(Caller {
        user_id,
        device_id,
        appservice: Some(service),
    })
}

/// A token is required and must be a live access token.
impl Authentication for AccessToken {
    type Caller = Caller;

    async fn authenticate(
        node: &Node,
        token: Option<String>,
        query: Option<&str>,
    ) -> Result<Caller, MatrixError> {
        let token = token.ok_or(MatrixError::MissingToken)?;
        caller(node, &token, query).await
    }
}

/// A token may be given; if it is, it must be a live access token.
impl Authentication for AccessTokenOptional {
    type Caller = Option<Caller>;

    async fn authenticate(
        node: &Node,
        token: Option<String>,
        query: Option<&str>,
    ) -> Result<Option<Caller>, MatrixError> {
        match token {
            None => Ok(None),
            Some(token) => caller(node, &token, query).await.map(Some),
        }
    }
}

/// Endpoints that take no token: whatever is sent is ignored.
impl Authentication for NoAuthentication {
    type Caller = ();

    async fn authenticate(_: &Node, _: Option<String>, _: Option<&str>) -> Result<(), MatrixError> {
        Ok(())
    }
}

/// Endpoints that take no token: whatever is sent is ignored.
impl Authentication for NoAccessToken {
    type Caller = ();

    async fn authenticate(_: &Node, _: Option<String>, _: Option<&str>) -> Result<(), MatrixError> {
        Ok(())
    }
}

/// What `login` and `register` learn from a token: an application service's `as_token`, or
/// some other token (clients often send the access token they hold, perhaps a stale one: it is
/// ignored, unless the request is an application service's).
#[derive(Debug, Clone, Default)]
pub(crate) struct MaybeAppservice {
    pub(crate) service: Option<Arc<AppService>>,
    pub(crate) token_given: bool,
}

impl MaybeAppservice {
    /// The service, required by a request of type `m.login.application_service`.
    pub(crate) fn required(&self) -> Result<&Arc<AppService>, MatrixError> {
        match (&self.service, self.token_given) {
            (Some(s), _) => Ok(s),
            (None, true) => Err(MatrixError::UnknownToken),
            (None, false) => Err(MatrixError::MissingToken),
        }
    }
}

/// Endpoints (`login`, `register`) where only an application service presents a token.
impl Authentication for AppserviceTokenOptional {
    type Caller = MaybeAppservice;

    async fn authenticate(
        node: &Node,
        token: Option<String>,
        _: Option<&str>,
    ) -> Result<MaybeAppservice, MatrixError> {
        Ok(MaybeAppservice {
            service: token
                .as_deref()
                .and_then(|t| node.appservices().directory().by_token(t).cloned()),
            token_given: token.is_some(),
        })
    }
}

/// Endpoints only an application service calls (`/appservice/{id}/ping`).
impl Authentication for AppserviceToken {
    type Caller = Arc<AppService>;

    async fn authenticate(
        node: &Node,
        token: Option<String>,
        _: Option<&str>,
    ) -> Result<Arc<AppService>, MatrixError> {
        let token = token.ok_or(MatrixError::MissingToken)?;
        node.appservices()
            .directory()
            .by_token(&token)
            .cloned()
            .ok_or(MatrixError::UnknownToken)
    }
}

impl<T> FromRequest<Node> for Ruma<T>
where
    T: IncomingRequest + Send,
    T::Authentication: Authentication,
{
    type Rejection = MatrixError;

    async fn from_request(req: Request, node: &Node) -> Result<Self, MatrixError> {
        let (mut parts, body) = req.into_parts();
        let path_args: Vec<String> = match RawPathParams::from_request_parts(&mut parts, node).await
        {
            Ok(params) => params.iter().map(|(_, v)| v.to_owned()).collect(),
            Err(_) => Vec::new(),
        };
        let bytes = read_body(body).await?;
        let carries_body = [Method::POST, Method::PUT, Method::DELETE].contains(&parts.method);
        let json: &[u8] = if carries_body && bytes.is_empty() {
            b"{}"
        } else {
            &bytes
        };
        let request = axum::http::Request::from_parts(parts, json);

        let caller = authenticate::<T::Authentication, _>(&request, node).await?;

        if carries_body {
            check_json(json)?;
        }
        let mut args: Vec<&str> = path_args.iter().map(String::as_str).collect();
        // A route registered without its last (empty) segment, such as `/state/{eventType}/`
        // for the empty state key: that parameter is the empty string.
        let expected = T::PATH_BUILDER
            .all_paths()
            .next()
            .map_or(0, |path| path.matches('{').count());
        args.resize(expected.max(args.len()), "");
        let body = T::try_from_http_request(request, &args).map_err(parse_error)?;
        Ok(Ruma { body, caller })
    }
}

/// The caller of `request` under authentication scheme `A`: the token from `Authorization:
/// Bearer` or the `access_token` query parameter, checked as `A` requires.
pub(super) async fn authenticate<A: Authentication, B>(
    request: &axum::http::Request<B>,
    node: &Node,
) -> Result<A::Caller, MatrixError> {
    let token = extract_bearer_or_query_token(request).map_err(|_| MatrixError::MissingToken)?;
    A::authenticate(node, token, request.uri().query()).await
}

/// Whether reading a body with `axum::body::to_bytes` failed because it was over the limit
/// given (rather than unreadable).
pub(crate) fn body_over_limit(e: &axum::Error) -> bool {
    std::error::Error::source(e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
}

/// Buffers the body up to [`MAX_BODY_BYTES`].
async fn read_body(body: Body) -> Result<axum::body::Bytes, MatrixError> {
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|e| {
            if body_over_limit(&e) {
                MatrixError::TooLarge {
                    limit: MAX_BODY_BYTES,
                }
            } else {
                MatrixError::BadJson(format!("cannot read the request body: {e}"))
            }
        })
}

/// Checks that a body is JSON whose every string is Unicode: `M_NOT_JSON` if it is not JSON at
/// all, `M_BAD_JSON` for a string with a lone surrogate escape (or nesting beyond serde_json's
/// limit).
fn check_json(json: &[u8]) -> Result<(), MatrixError> {
    match crate::strict_json::check(json) {
        Ok(()) => Ok(()),
        Err(e) if serde_json::from_slice::<IgnoredAny>(json).is_ok() => Err(MatrixError::BadJson(
            format!("the body holds a string that is not Unicode: {e}"),
        )),
        Err(_) => Err(MatrixError::NotJson),
    }
}

/// What a parse failure tells the client.
fn parse_error(e: FromHttpRequestError) -> MatrixError {
    match e {
        FromHttpRequestError::MethodMismatch { .. } => MatrixError::MethodNotAllowed,
        FromHttpRequestError::Deserialization(DeserializationError::Json(e)) => {
            MatrixError::BadJson(e.to_string())
        }
        FromHttpRequestError::Deserialization(e) => MatrixError::InvalidParam(e.to_string()),
        other => MatrixError::BadJson(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_that_are_not_unicode_are_bad_json() {
        for bad in [
            &br#"{"body":"\ud800"}"#[..],
            br#"{"a":["x",{"b":"\udc00"}]}"#,
            br#"{"\ud800":1}"#,
            br#"{"a":"\ud800\u0041"}"#,
        ] {
            assert!(
                matches!(check_json(bad), Err(MatrixError::BadJson(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        for good in [
            &br#"{"a":"\ud83d\ude00","b":[1,2.5,-3,true,null],"\u00e9":"\u0000"}"#[..],
            b"{}",
            b"[]",
        ] {
            assert!(
                check_json(good).is_ok(),
                "{}",
                String::from_utf8_lossy(good)
            );
        }
        assert!(matches!(check_json(b"{\"a\":"), Err(MatrixError::NotJson)));
        assert!(matches!(check_json(b"not json"), Err(MatrixError::NotJson)));
    }
}
