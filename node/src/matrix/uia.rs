//! [`UiaSessions`]: user-interactive authentication sessions, each for one flow of one stage:
//! `m.login.dummy` for registration ([`UiaSessions::check`]), `m.login.password` for deleting
//! devices ([`UiaSessions::challenge`], the password itself checked by `Accounts`).
//!
//! Sessions live in memory only (a restart makes clients start the flow again), each for
//! [`UIA_TTL`], at most [`UIA_MAX_SESSIONS`] at once. A session stays usable until it expires,
//! so a client may retry its final request.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ruma::api::client::uiaa::{AuthData, AuthFlow, AuthType, UiaaInfo};
use ruma::api::error::StandardErrorBody;

use super::credentials::random_bytes;
use super::error::{MatrixError, uia_forbidden};

/// How long a session stays usable.
const UIA_TTL: Duration = Duration::from_secs(15 * 60);
/// Most sessions alive at once (429 beyond).
const UIA_MAX_SESSIONS: usize = 10_000;

/// Live sessions and when they were issued.
#[derive(Debug, Default)]
pub(crate) struct UiaSessions {
    issued: Mutex<HashMap<String, Instant>>,
}

impl UiaSessions {
    /// Checks the authentication a request carries: `m.login.dummy` with a session this node
    /// issued (or none). Without any, or with another stage, the answer is 401 with the flows
    /// and a new session.
    pub(crate) fn check(&self, auth: Option<&AuthData>) -> Result<(), MatrixError> {
        match auth {
            None => Err(MatrixError::UiaRequired(Box::new(self.start(None)?))),
            Some(AuthData::Dummy(dummy)) => match &dummy.session {
                None => Ok(()),
                Some(session) => {
                    let mut issued = self.lock();
                    match issued.get(session) {
                        Some(at) if at.elapsed() < UIA_TTL => Ok(()),
                        _ => {
                            issued.remove(session);
                            Err(MatrixError::Unsupported(
                                "unknown or expired user-interactive authentication session".into(),
                            ))
                        }
                    }
                }
            },
            Some(other) => {
                let stage = other
                    .auth_type()
                    .map_or_else(|| "a fallback".to_owned(), |t| t.to_string());
                let error = uia_forbidden(format!("{stage} is not offered: use m.login.dummy"));
                Err(MatrixError::UiaRequired(Box::new(self.start(Some(error))?)))
            }
        }
    }

    /// The 401 answer asking for the one-stage flow `stage`: in session `session` if it is
    /// live, else in a new one, with the stage's error, if any.
    pub(crate) fn challenge(
        &self,
        stage: AuthType,
        session: Option<&str>,
        error: Option<StandardErrorBody>,
    ) -> MatrixError {
        let info = match session.filter(|s| self.is_live(s)) {
            Some(id) => Ok(info(stage, id.to_owned(), error)),
            None => self.start_flow(stage, error),
        };
        match info {
            Ok(info) => MatrixError::UiaRequired(Box::new(info)),
            Err(e) => e,
        }
    }

    /// Whether `session` was issued by this node and has not expired.
    pub(crate) fn is_live(&self, session: &str) -> bool {
        self.lock()
            .get(session)
            .is_some_and(|at| at.elapsed() < UIA_TTL)
    }

    /// A new session: the flows, empty `params`, the session ID and the stage's error, if any.
    fn start(&self, error: Option<StandardErrorBody>) -> Result<UiaaInfo, MatrixError> {
        self.start_flow(AuthType::Dummy, error)
    }

    /// A new session for the one-stage flow `stage`.
    fn start_flow(
        &self,
        stage: AuthType,
        error: Option<StandardErrorBody>,
    ) -> Result<UiaaInfo, MatrixError> {
        let id = URL_SAFE_NO_PAD.encode(random_bytes::<18>()?);
        {
            let mut issued = self.lock();
            if issued.len() >= UIA_MAX_SESSIONS {
                issued.retain(|_, at| at.elapsed() < UIA_TTL);
            }
            if issued.len() >= UIA_MAX_SESSIONS {
                return Err(MatrixError::LimitExceeded(
                    "too many registrations in progress",
                ));
            }
            issued.insert(id.clone(), Instant::now());
        }
        Ok(info(stage, id, error))
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Instant>> {
        // A panic while holding this lock leaves a plain map behind: keep using it.
        self.issued.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The flows (one, of the one stage), empty `params`, the session and the stage's error.
fn info(stage: AuthType, session: String, error: Option<StandardErrorBody>) -> UiaaInfo {
    let mut info = UiaaInfo::new(vec![AuthFlow::new(vec![stage])]);
    info.session = Some(session);
    info.params = serde_json::value::RawValue::from_string("{}".to_owned()).ok();
    info.auth_error = error.map(Box::new);
    info
}

#[cfg(test)]
mod tests {
    use ruma::api::error::ErrorKind;

    use super::*;

    fn dummy(session: Option<&str>) -> AuthData {
        AuthData::new(
            "m.login.dummy",
            session.map(str::to_owned),
            serde_json::Map::new(),
        )
        .unwrap()
    }

    #[test]
    fn a_dummy_stage_with_an_issued_session_passes() {
        let uia = UiaSessions::default();
        let Err(MatrixError::UiaRequired(info)) = uia.check(None) else {
            panic!("expected the flows");
        };
        assert_eq!(info.flows[0].stages, vec![AuthType::Dummy]);
        assert_eq!(info.params.as_ref().map(|p| p.get()), Some("{}"));
        let session = info.session.unwrap();
        uia.check(Some(&dummy(Some(&session)))).unwrap();
        uia.check(Some(&dummy(Some(&session)))).unwrap();
        uia.check(Some(&dummy(None))).unwrap();
        assert!(matches!(
            uia.check(Some(&dummy(Some("forged")))),
            Err(MatrixError::Unsupported(_))
        ));
    }

    #[test]
    fn another_stage_gets_the_flows_and_an_error() {
        let uia = UiaSessions::default();
        let other = AuthData::new("org.example.stage", None, serde_json::Map::new()).unwrap();
        let Err(MatrixError::UiaRequired(info)) = uia.check(Some(&other)) else {
            panic!("expected the flows");
        };
        assert!(info.session.is_some());
        assert_eq!(info.auth_error.map(|e| e.kind), Some(ErrorKind::Forbidden));
    }
}
