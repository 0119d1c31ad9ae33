//! The WebSocket edge's one mapping from errors to the wire: every refusal becomes a reTHINK
//! `response` with a precise code and a description. Internal details are logged, not sent.
//!
//! A message with several recipients of which some failed gets one response listing them
//! ([`failures_response`]); a message with one recipient gets the plain refusal.

use std::borrow::Cow;

use rethink_proto::{Code, Envelope, ParseError, ResponseBuilder};
use serde_json::json;

use super::error::SessionError;
use crate::auth::AuthError;
use crate::bus::bridge::Unbridgeable;
use crate::bus::{RouteError, RouteFailure};

/// The code for a refusal of the session protocol.
pub fn session_code(e: &SessionError) -> Code {
    match e {
        SessionError::Parse(e) => parse_code(e),
        SessionError::Control(_) | SessionError::Binary | SessionError::NotAHandshake => {
            Code::BAD_REQUEST
        }
        SessionError::Auth(e) => auth_code(e),
        SessionError::Denied(d) => d.code(),
        SessionError::Route(e) => route_code(e),
        SessionError::FrameTooLarge { .. } => Code::TOO_LARGE,
        SessionError::NoSession | SessionError::OtherIdentity | SessionError::CredentialExpired => {
            Code::UNAUTHORIZED
        }
        SessionError::AlreadyOpen => Code::CONFLICT,
        SessionError::UnknownRuntimeToken => Code::NOT_FOUND,
        SessionError::OtherRuntime => Code::FORBIDDEN,
        SessionError::Internal(_) => Code::INTERNAL,
    }
}

/// The description sent with a refusal. Internal errors are logged here and described only
/// as such.
pub fn session_description(e: &SessionError) -> Cow<'static, str> {
    match e {
        SessionError::Internal(source) => {
            tracing::error!(error = %e, %source, "internal error answering a runtime");
            Cow::Borrowed("internal error")
        }
        SessionError::Auth(AuthError::Unchecked(e)) => Cow::Owned(e.public_description()),
        other => Cow::Owned(other.to_string()),
    }
}

/// The response refusing a request with `e`. `id_json` is the request's raw id (`null` when
/// unknown); `from` the address answering, `to` the requester.
pub fn refusal(id_json: &str, from: &str, to: &str, e: &SessionError) -> Envelope {
    error_response(id_json, from, to, session_code(e), &session_description(e))
}

/// The one response to a routed message some of whose recipients failed.
///
/// With one recipient: the plain refusal, from that recipient (`body.code`, `body.description`).
/// With several: `from` the first failed recipient, `body.code` the first failure's code (so
/// the common code when they all agree), `body.description` "N of M recipients failed", and
/// `body.value.failed` one `{to, code, description}` per failed recipient, in `to` order.
pub fn failures_response(env: &Envelope, failures: &[RouteFailure]) -> Option<Envelope> {
    let first = failures.first()?;
    let recipients = env.to().len();
    if recipients == 1 {
        return Some(error_response(
            env.id_json(),
            &first.recipient,
            env.from(),
            route_code(&first.error),
            &first.error.to_string(),
        ));
    }
    // When they all agree this is their code; otherwise the first's (each is in the list).
    let code = route_code(&first.error);
    let failed: Vec<serde_json::Value> = failures
        .iter()
        .map(|f| {
            json!({
                "to": f.recipient,
                "code": route_code(&f.error).as_u16(),
                "description": f.error.to_string(),
            })
        })
        .collect();
    let description = format!("{} of {recipients} recipients failed", failures.len());
    let built = ResponseBuilder::new(env.id_json(), &first.recipient, env.from(), code)
        .description(&description)
        .value(json!({ "failed": failed }))
        .build();
    match built {
        Ok(reply) => Some(reply),
        // The request parsed, so its id and addresses serialize again.
        Err(e) => Some(refusal(
            "null",
            &first.recipient,
            env.from(),
            &SessionError::Internal(e),
        )),
    }
}

/// The code for a routing failure.
pub fn route_code(e: &RouteError) -> Code {
    match e {
        RouteError::NotFound(_) | RouteError::NoRouteToDomain(_) | RouteError::NotServed(_) => {
            Code::NOT_FOUND
        }
        RouteError::OutboxFull { .. } | RouteError::QueueFull { .. } | RouteError::Cluster(_) => {
            Code::UNAVAILABLE
        }
        RouteError::BadRequest(_) | RouteError::BadAddress { .. } => Code::BAD_REQUEST,
        RouteError::Forbidden(_) => Code::FORBIDDEN,
        RouteError::Conflict(_) => Code::CONFLICT,
        RouteError::Denied(d) => d.code(),
        RouteError::Unbridgeable(Unbridgeable::TooLarge { .. }) => Code::TOO_LARGE,
        RouteError::Unbridgeable(Unbridgeable::NotUnicode) => Code::BAD_REQUEST,
    }
}

/// The code for a message that did not parse.
pub fn parse_code(_: &ParseError) -> Code {
    Code::BAD_REQUEST
}

/// The code for a failed authentication: 401, but a token that could not be checked now
/// (its error's code, a 5xx: the runtime tries again later).
pub fn auth_code(e: &AuthError) -> Code {
    match e {
        AuthError::Unchecked(e) => Code(e.code()),
        AuthError::InvalidToken | AuthError::AnonymousRefused | AuthError::WrongRuntime => {
            Code::UNAUTHORIZED
        }
    }
}

/// Builds an error response. `id_json` is the request's raw id, or `null` when unknown.
pub fn error_response(
    id_json: &str,
    from: &str,
    to: &str,
    code: Code,
    description: &str,
) -> Envelope {
    let built = ResponseBuilder::new(id_json, from, to, code)
        .description(description)
        .build();
    match built {
        Ok(env) => env,
        Err(_) => {
            // Only a salvaged id could be unusable; answer without it.
            match ResponseBuilder::new("null", from, to, code)
                .description(description)
                .build()
            {
                Ok(env) => env,
                Err(e) => unreachable!("a response with a null id is valid: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::Denied;
    use crate::bus::outbox::OutboxFull;
    use rethink_crossdomain::{CrossDomainError, FetchFailure};

    #[test]
    fn every_error_has_its_code() {
        assert_eq!(
            route_code(&RouteError::NotFound("x".into())),
            Code::NOT_FOUND
        );
        let bad = RouteError::BadAddress {
            what: "recipient",
            source: rethink_proto::AddressError::Empty,
        };
        assert_eq!(route_code(&bad), Code::BAD_REQUEST);
        assert!(
            std::error::Error::source(&bad).is_some(),
            "the address error is kept"
        );
        assert_eq!(
            route_code(&RouteError::NoRouteToDomain("o".into())),
            Code::NOT_FOUND
        );
        assert_eq!(
            route_code(&RouteError::OutboxFull {
                address: "a".into(),
                full: OutboxFull {
                    messages: 1,
                    bytes: 1
                }
            }),
            Code::UNAVAILABLE
        );
        assert_eq!(
            route_code(&RouteError::Conflict("c".into())),
            Code::CONFLICT
        );
        assert_eq!(Denied::RateLimited.code(), Code::TOO_MANY_REQUESTS);
        assert_eq!(Denied::Spoofed { from: "f".into() }.code(), Code::FORBIDDEN);
        assert_eq!(auth_code(&AuthError::InvalidToken), Code::UNAUTHORIZED);
        let unchecked = AuthError::Unchecked(CrossDomainError::Fetch {
            domain: "a.test".into(),
            url: "https://a.test/keys".into(),
            source: FetchFailure::Timeout(std::time::Duration::from_secs(5)),
        });
        assert_eq!(auth_code(&unchecked), Code::GATEWAY_TIMEOUT);
        assert!(
            std::error::Error::source(&unchecked).is_some(),
            "the cross-domain error is kept"
        );
        let described = session_description(&SessionError::Auth(unchecked));
        assert!(
            described.starts_with("domain a.test: fetching"),
            "{described}"
        );
    }

    #[test]
    fn a_token_unchecked_for_a_failure_of_ours_is_not_described() {
        let e = SessionError::Auth(AuthError::Unchecked(CrossDomainError::Internal {
            what: "checking a node proof",
            problem: "secret detail".into(),
        }));
        assert_eq!(session_code(&e), Code::INTERNAL);
        let described = session_description(&e);
        assert!(!described.contains("secret"), "{described}");
        assert!(described.contains("checking a node proof"), "{described}");
    }

    #[test]
    fn every_session_error_has_its_code() {
        use crate::ws::control::ControlError;
        let control = serde_json::from_str::<u64>("x").unwrap_err();
        let cases: Vec<(SessionError, Code)> = vec![
            (ParseError::MissingField("id").into(), Code::BAD_REQUEST),
            (
                ControlError::Body {
                    kind: "ack",
                    source: control,
                }
                .into(),
                Code::BAD_REQUEST,
            ),
            (AuthError::AnonymousRefused.into(), Code::UNAUTHORIZED),
            (Denied::RateLimited.into(), Code::TOO_MANY_REQUESTS),
            (
                Denied::TooManyRecipients {
                    count: 101,
                    max: 100,
                }
                .into(),
                Code::TOO_LARGE,
            ),
            (RouteError::NotFound("x".into()).into(), Code::NOT_FOUND),
            (SessionError::Binary, Code::BAD_REQUEST),
            (
                SessionError::FrameTooLarge { size: 2, max: 1 },
                Code::TOO_LARGE,
            ),
            (SessionError::NoSession, Code::UNAUTHORIZED),
            (SessionError::NotAHandshake, Code::BAD_REQUEST),
            (SessionError::AlreadyOpen, Code::CONFLICT),
            (SessionError::UnknownRuntimeToken, Code::NOT_FOUND),
            (SessionError::OtherRuntime, Code::FORBIDDEN),
            (SessionError::OtherIdentity, Code::UNAUTHORIZED),
            (SessionError::CredentialExpired, Code::UNAUTHORIZED),
            (
                SessionError::Internal(ParseError::NotAnObject),
                Code::INTERNAL,
            ),
        ];
        for (error, code) in &cases {
            assert_eq!(session_code(error), *code, "{error}");
        }
    }

    #[test]
    fn internal_errors_are_not_described() {
        let secret = ParseError::Invalid("secret detail at line 3".into());
        let e = SessionError::Internal(secret);
        assert_eq!(session_description(&e), "internal error");
        let reply = refusal("1", "mn:/session", "runtime://d/x", &e);
        let body = reply.response_body().unwrap();
        assert_eq!(body.code, Code::INTERNAL);
        assert!(!reply.json().contains("secret"), "{}", reply.json());
        // Other errors say what is wrong.
        let e = SessionError::FrameTooLarge { size: 9, max: 5 };
        assert_eq!(
            session_description(&e),
            "frame of 9 bytes exceeds the limit of 5 bytes"
        );
    }

    fn failure(to: &str, error: RouteError) -> RouteFailure {
        RouteFailure {
            recipient: to.to_owned(),
            error,
        }
    }

    #[test]
    fn one_recipient_failures_keep_the_plain_refusal() {
        let env = Envelope::parse(
            r#"{"id":7,"type":"x","from":"hyperty://d/a","to":"hyperty://d/ghost"}"#,
        )
        .unwrap();
        let none = failures_response(&env, &[]);
        assert!(none.is_none());
        let one = failures_response(
            &env,
            &[failure(
                "hyperty://d/ghost",
                RouteError::NotFound("hyperty://d/ghost".into()),
            )],
        )
        .unwrap();
        assert_eq!(
            one.json(),
            r#"{"id":7,"type":"response","from":"hyperty://d/ghost","to":"hyperty://d/a","body":{"code":404,"description":"no such address: hyperty://d/ghost"}}"#
        );
    }

    #[test]
    fn multi_recipient_failures_get_one_response_listing_them() {
        let env = Envelope::parse(
            r#"{"id":"m","type":"x","from":"hyperty://d/a","to":["hyperty://d/b","hyperty://d/g1","hyperty://o.org/g2"]}"#,
        )
        .unwrap();
        let failures = [
            failure(
                "hyperty://d/g1",
                RouteError::NotFound("hyperty://d/g1".into()),
            ),
            failure(
                "hyperty://o.org/g2",
                RouteError::Denied(Denied::Policy {
                    policies: vec!["p1".into()],
                }),
            ),
        ];
        let reply = failures_response(&env, &failures).unwrap();
        let v: serde_json::Value = serde_json::from_str(reply.json()).unwrap();
        assert_eq!(v["id"], "m");
        assert_eq!(v["from"], "hyperty://d/g1");
        assert_eq!(v["to"], "hyperty://d/a");
        assert_eq!(v["body"]["code"], 404, "the first failure's code");
        assert_eq!(v["body"]["description"], "2 of 3 recipients failed");
        assert_eq!(
            v["body"]["value"]["failed"],
            json!([
                {"to": "hyperty://d/g1", "code": 404, "description": "no such address: hyperty://d/g1"},
                {"to": "hyperty://o.org/g2", "code": 403, "description": "denied by policy p1"},
            ])
        );
    }

    #[test]
    fn error_response_survives_a_bad_salvaged_id() {
        let e = error_response(
            "{",
            "mn:/session",
            "runtime://d/x",
            Code::BAD_REQUEST,
            "bad",
        );
        assert_eq!(e.id_json(), "null");
        assert_eq!(
            e.response_body().unwrap().description.as_deref(),
            Some("bad")
        );
    }
}
