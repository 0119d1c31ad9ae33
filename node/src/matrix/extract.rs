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
//! missing. `login` and `register` ignore any token (clients send their stale one).

use std::future::Future;

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request};
use axum::http::Method;
use ruma::api::IncomingRequest;
use ruma::api::IncomingRequestExt as _;
use ruma::api::auth_scheme::{
    AccessToken, AccessTokenOptional, AppserviceTokenOptional, AuthScheme, NoAccessToken,
    NoAuthentication, extract_bearer_or_query_token,
};
use ruma::api::error::{DeserializationError, FromHttpRequestError};
use ruma::api::path_builder::PathBuilder as _;
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
        accounts: &Accounts,
        token: Option<String>,
    ) -> impl Future<Output = Result<Self::Caller, MatrixError>> + Send;
}

/// A token is required and must be a live access token.
impl Authentication for AccessToken {
    type Caller = Caller;

    async fn authenticate(
        accounts: &Accounts,
        token: Option<String>,
    ) -> Result<Caller, MatrixError> {
        let token = token.ok_or(MatrixError::MissingToken)?;
        accounts.authenticate(&token).await
    }
}

/// A token may be given; if it is, it must be a live access token.
impl Authentication for AccessTokenOptional {
    type Caller = Option<Caller>;

    async fn authenticate(
        accounts: &Accounts,
        token: Option<String>,
    ) -> Result<Option<Caller>, MatrixError> {
        match token {
            None => Ok(None),
            Some(token) => accounts.authenticate(&token).await.map(Some),
        }
    }
}

/// Endpoints that take no token: whatever is sent is ignored.
impl Authentication for NoAuthentication {
    type Caller = ();

    async fn authenticate(_: &Accounts, _: Option<String>) -> Result<(), MatrixError> {
        Ok(())
    }
}

/// Endpoints that take no token: whatever is sent is ignored.
impl Authentication for NoAccessToken {
    type Caller = ();

    async fn authenticate(_: &Accounts, _: Option<String>) -> Result<(), MatrixError> {
        Ok(())
    }
}

/// Endpoints (`login`, `register`) where only an application service presents a token. No
/// application service is registered with the node yet, and clients often send the access
/// token they hold (perhaps a stale one) to these too: whatever is sent is ignored.
impl Authentication for AppserviceTokenOptional {
    type Caller = ();

    async fn authenticate(_: &Accounts, _: Option<String>) -> Result<(), MatrixError> {
        Ok(())
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
    A::authenticate(node.accounts(), token).await
}

/// Buffers the body up to [`MAX_BODY_BYTES`].
async fn read_body(body: Body) -> Result<axum::body::Bytes, MatrixError> {
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|e| {
            let over_limit = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if over_limit {
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
