//! The WebSocket edge's one mapping from errors to the wire: every refusal becomes a reTHINK
//! `response` with a precise code and a description. Internal details are logged, not sent.

use rethink_proto::{Code, Envelope, ParseError, ResponseBuilder};

use crate::auth::AuthError;
use crate::bus::bridge::Unbridgeable;
use crate::bus::{Denied, RouteError};

/// The code for a routing failure.
pub fn route_code(e: &RouteError) -> Code {
    match e {
        RouteError::NotFound(_) | RouteError::NoRouteToDomain(_) | RouteError::NotServed(_) => {
            Code::NOT_FOUND
        }
        RouteError::OutboxFull { .. } => Code::UNAVAILABLE,
        RouteError::BadRequest(_) => Code::BAD_REQUEST,
        RouteError::Forbidden(_) => Code::FORBIDDEN,
        RouteError::Conflict(_) => Code::CONFLICT,
        RouteError::Denied(d) => denied_code(d),
        RouteError::Unbridgeable(Unbridgeable::TooLarge { .. }) => Code::TOO_LARGE,
        RouteError::Unbridgeable(Unbridgeable::NotUnicode) => Code::BAD_REQUEST,
    }
}

/// The code for a refusal by the enforcement point.
pub fn denied_code(d: &Denied) -> Code {
    match d {
        Denied::Spoofed { .. } => Code::FORBIDDEN,
        Denied::RateLimited => Code::TOO_MANY_REQUESTS,
        Denied::Policy { .. } => Code::FORBIDDEN,
    }
}

/// The code for a message that did not parse.
pub fn parse_code(_: &ParseError) -> Code {
    Code::BAD_REQUEST
}

/// The code for a failed authentication.
pub fn auth_code(_: &AuthError) -> Code {
    Code::UNAUTHORIZED
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
    use crate::bus::outbox::OutboxFull;

    #[test]
    fn every_error_has_its_code() {
        assert_eq!(
            route_code(&RouteError::NotFound("x".into())),
            Code::NOT_FOUND
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
        assert_eq!(denied_code(&Denied::RateLimited), Code::TOO_MANY_REQUESTS);
        assert_eq!(
            denied_code(&Denied::Spoofed { from: "f".into() }),
            Code::FORBIDDEN
        );
        assert_eq!(auth_code(&AuthError::InvalidToken), Code::UNAUTHORIZED);
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
