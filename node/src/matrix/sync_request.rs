//! [`SyncRequest`], the extractor of `GET /sync`: the caller, authenticated as for every
//! endpoint that takes an access token (see [`super::extract`]), and the query parameters read
//! straight into their own types. The `filter` parameter stays text: `/sync` repeats it on every
//! request, and [`crate::userdata::Filters::for_sync`] turns it into a filter from memory after
//! the first time (keyed by the text still form-encoded), instead of decoding and parsing a JSON
//! filter per request as the generic ruma extractor does.
//!
//! Parameters and errors are those of ruma's `sync_events::v3::Request`: `filter`, `since`,
//! `full_state`, `set_presence` (default `online`), `timeout` (milliseconds); a parameter of the
//! wrong type is 400 `M_INVALID_PARAM`; an empty value counts as absent. Other parameters
//! (`access_token`, `use_state_after`) are ignored here. The pairs are read one by one with
//! `form_urlencoded` (no allocation for a value without escapes) rather than through serde:
//! this runs for every `/sync`.

use std::time::Duration;

use axum::extract::{FromRequest, Request};
use ruma::api::auth_scheme::AccessToken;
use ruma::presence::PresenceState;

use super::accounts::Caller;
use super::error::MatrixError;
use super::extract::authenticate;
use crate::node::Node;

/// A parsed, authenticated `GET /sync`.
#[derive(Debug)]
pub(crate) struct SyncRequest {
    pub(crate) caller: Caller,
    pub(crate) query: SyncQuery,
}

/// The query parameters of `GET /sync`.
#[derive(Debug, Default)]
pub(crate) struct SyncQuery {
    /// A filter definition as JSON, or a stored filter's ID, form-encoded as sent.
    pub(crate) filter: Option<String>,
    pub(crate) since: Option<String>,
    pub(crate) full_state: bool,
    pub(crate) set_presence: PresenceState,
    /// Milliseconds.
    timeout: Option<u64>,
}

impl SyncQuery {
    /// The long-poll timeout asked for.
    pub(crate) fn timeout(&self) -> Option<Duration> {
        self.timeout.map(Duration::from_millis)
    }

    fn parse(query: &str) -> Result<Self, MatrixError> {
        let mut parsed = SyncQuery::default();
        for pair in query.split('&') {
            // The filter's value stays form-encoded: the filter cache is keyed by it, so a known
            // filter is neither decoded nor parsed again.
            if let Some(value) = pair.strip_prefix("filter=") {
                parsed.filter = (!value.is_empty()).then(|| value.to_owned());
                continue;
            }
            let Some((key, value)) = form_urlencoded::parse(pair.as_bytes()).next() else {
                continue;
            };
            if value.is_empty() {
                continue;
            }
            match &*key {
                "since" => parsed.since = Some(value.into_owned()),
                "timeout" => parsed.timeout = Some(typed(&key, &value)?),
                "full_state" => parsed.full_state = typed(&key, &value)?,
                "set_presence" => parsed.set_presence = PresenceState::from(&*value),
                _ => {}
            }
        }
        Ok(parsed)
    }
}

/// `value` of parameter `key` as a `T`, or 400 `M_INVALID_PARAM`.
fn typed<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, MatrixError> {
    value
        .parse()
        .map_err(|_| MatrixError::InvalidParam(format!("invalid value {value:?} for `{key}`")))
}

impl FromRequest<Node> for SyncRequest {
    type Rejection = MatrixError;

    async fn from_request(req: Request, node: &Node) -> Result<Self, MatrixError> {
        let request = req.map(|_body| ());
        let caller = authenticate::<AccessToken, _>(&request, node).await?;
        let query = SyncQuery::parse(request.uri().query().unwrap_or(""))?;
        Ok(SyncRequest { caller, query })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_read_as_ruma_reads_them() {
        let q = SyncQuery::parse(
            "since=s5_1&timeout=30000&full_state=true&set_presence=unavailable\
             &filter=%7B%22room%22%3A%7B%7D%7D&access_token=x&use_state_after=true",
        )
        .unwrap();
        assert_eq!(q.since.as_deref(), Some("s5_1"));
        assert_eq!(q.timeout(), Some(Duration::from_secs(30)));
        assert!(q.full_state);
        assert_eq!(q.set_presence, PresenceState::Unavailable);
        assert_eq!(q.filter.as_deref(), Some("%7B%22room%22%3A%7B%7D%7D"));

        let q = SyncQuery::parse("").unwrap();
        assert_eq!(
            (q.timeout(), q.since, q.full_state, q.set_presence),
            (None, None, false, PresenceState::Online)
        );

        let q = SyncQuery::parse("since=s1%5F2+x&set_presence=offline&timeout=&filter=").unwrap();
        assert_eq!(q.since.as_deref(), Some("s1_2 x"), "decoded as a form");
        assert_eq!(q.set_presence, PresenceState::Offline);
        assert_eq!((q.timeout(), q.filter), (None, None), "empty is absent");
    }

    #[test]
    fn a_parameter_of_the_wrong_type_is_an_invalid_param() {
        for query in ["timeout=soon", "full_state=maybe", "timeout=-1"] {
            assert!(
                matches!(SyncQuery::parse(query), Err(MatrixError::InvalidParam(_))),
                "{query}"
            );
        }
    }
}
