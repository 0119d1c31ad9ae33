//! What the bus hands to the Matrix bridge: the creation of a data
//! object, a hyperty subscribing to its `changes`, and an `update` published there. The bus only
//! recognises these messages (objects `comm://<this domain>/<id>`) and passes them on, after the
//! enforcement point and routing, through a bounded channel whose back-pressure reaches the
//! sender; the bridge (`crate::bridge`) turns them into rooms and room events.
//!
//! A `create` creates the object when it is one of the two shapes reTHINK runtimes send through
//! a node (reTHINK specs, `messages/data-sync-messages.md`):
//! - the reporter's sync manager inviting observers: `from` `<object>/subscription`, the reporter
//!   hyperty in `body.source`, the object in `body.value`;
//! - a reporter addressing the object itself: `to` `<object>` or `<object>/subscription`, the
//!   reporter in `body.source` or else `from`.
//!
//! Both the object and the reporter must belong to the sending session (allocated to it, or its
//! runtime URL and paths below), so a runtime cannot create another runtime's object or make
//! another runtime's hyperty its creator; other `create`s are routed and nothing more.
//!
//! An `update` that cannot become a room event is refused before it is routed at all
//! ([`Unbridgeable`]: a body over [`MAX_UPDATE_BODY`] bytes, since a room event holds at most
//! 65,536; a string that is not Unicode), so that the object's subscribers and its room never
//! disagree and the sender learns why. What fails later, in the bridge, is answered to the
//! sender too (`crate::bridge`), with the update's `id`.

use rethink_proto::{Envelope, MessageType};
use serde::Deserialize;

/// The suffix of a data object's change feed.
const CHANGES: &str = "/changes";
/// The suffix of a data object's subscription handler (its reporter's sync manager).
const SUBSCRIPTION: &str = "/subscription";

/// The largest `update` body that can become a room event: Matrix's 65,536-byte event limit, less
/// what the event adds around the content (IDs, hashes, signature: well under 4 KiB).
pub const MAX_UPDATE_BODY: usize = 65_536 - 4_096;

/// Why an `update` to an object's change feed cannot become a room event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unbridgeable {
    #[error(
        "the update's body is {size} bytes: an update of a data object becomes a room event, \
         which holds at most {limit} bytes of it (Matrix's 65,536-byte event limit)"
    )]
    TooLarge { size: usize, limit: usize },
    #[error(
        "the update's body holds a string that is not Unicode (a lone surrogate escape): it \
         cannot become a room event"
    )]
    NotUnicode,
}

/// A bus message the Matrix bridge acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BridgeEvent {
    /// `reporter` created `object`; `body` is the `create` message's body (JSON).
    Created {
        reporter: String,
        object: String,
        body: Option<String>,
    },
    /// `hyperty` subscribed to `object`'s changes.
    Subscribed { hyperty: String, object: String },
    /// `from` published an update of `object`; `body` is the message body (JSON); `id` the
    /// message's `id` as JSON (for an answer to the sender if the room does not take it).
    Update {
        from: String,
        object: String,
        body: Option<String>,
        id: String,
    },
}

/// Whether `address` is a data object `comm://<domain>/<id>` of `domain`.
fn is_object(address: &str, domain: &str) -> bool {
    address
        .strip_prefix("comm://")
        .and_then(|rest| rest.split_once('/'))
        .is_some_and(|(authority, id)| authority == domain && !id.is_empty() && !id.contains('/'))
}

/// The data object `comm://<domain>/<id>` whose change feed `address` is, if it is one.
pub(crate) fn changes_of<'a>(address: &'a str, domain: &str) -> Option<&'a str> {
    let object = address.strip_suffix(CHANGES)?;
    is_object(object, domain).then_some(object)
}

/// The data object of `domain` that `address` is, or whose subscription handler it is.
fn object_or_handler<'a>(address: &'a str, domain: &str) -> Option<&'a str> {
    let object = address.strip_suffix(SUBSCRIPTION).unwrap_or(address);
    is_object(object, domain).then_some(object)
}

/// The part of a `create` body that names the reporter.
#[derive(Deserialize)]
struct CreateBody {
    source: Option<String>,
}

/// The bridge event of a `create` routed to `to`, if it creates a data object of `domain`.
/// `owned` tells whether an address belongs to the sending session (false for every address when
/// the message did not come from a session).
pub(crate) fn creation_of(
    env: &Envelope,
    to: &str,
    domain: &str,
    owned: impl Fn(&str) -> bool,
) -> Option<BridgeEvent> {
    if *env.kind() != MessageType::Create {
        return None;
    }
    let source = || {
        env.body::<CreateBody>()
            .ok()
            .and_then(|b| b.source)
            .filter(|s| !s.is_empty())
    };
    let (object, reporter) = match env
        .from()
        .strip_suffix(SUBSCRIPTION)
        .filter(|o| is_object(o, domain))
    {
        Some(object) => (object, source()?),
        None => {
            let object = object_or_handler(to, domain)?;
            (object, source().unwrap_or_else(|| env.from().to_owned()))
        }
    };
    if !owned(object) || !owned(&reporter) {
        tracing::debug!(%object, %reporter, "create of an object or by a reporter not of the sender: not bridged");
        return None;
    }
    Some(BridgeEvent::Created {
        reporter,
        object: object.to_owned(),
        body: env.body_json().map(str::to_owned),
    })
}

/// The bridge event of a routed message, if it is an update of a data object of `domain`; an
/// error if it is one that cannot become a room event.
pub(crate) fn update_of(
    env: &Envelope,
    to: &str,
    domain: &str,
) -> Result<Option<BridgeEvent>, Unbridgeable> {
    if *env.kind() != MessageType::Update {
        return Ok(None);
    }
    let Some(object) = changes_of(to, domain) else {
        return Ok(None);
    };
    let body = env.body_json();
    if let Some(body) = body {
        if body.len() > MAX_UPDATE_BODY {
            return Err(Unbridgeable::TooLarge {
                size: body.len(),
                limit: MAX_UPDATE_BODY,
            });
        }
        if crate::strict_json::check(body.as_bytes()).is_err() {
            return Err(Unbridgeable::NotUnicode);
        }
    }
    Ok(Some(BridgeEvent::Update {
        from: env.from().to_owned(),
        object: object.to_owned(),
        body: body.map(str::to_owned),
        id: env.id_json().to_owned(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "example.com";
    const OBJECT: &str = "comm://example.com/chat-1";
    const REPORTER: &str = "hyperty://example.com/h-1";

    fn envelope(v: serde_json::Value) -> Envelope {
        Envelope::parse(&v.to_string()).unwrap()
    }

    fn mine(address: &str) -> bool {
        address == OBJECT || address == REPORTER
    }

    fn created(body: serde_json::Value) -> BridgeEvent {
        BridgeEvent::Created {
            reporter: REPORTER.to_owned(),
            object: OBJECT.to_owned(),
            body: Some(body.to_string()),
        }
    }

    #[test]
    fn an_invitation_from_the_objects_subscription_handler_creates_it() {
        let body = serde_json::json!({"source": REPORTER, "value": {"name": "n"}});
        let env = envelope(serde_json::json!({"id": 1, "type": "create",
            "from": format!("{OBJECT}/subscription"), "to": "hyperty://example.com/obs", "body": body}));
        assert_eq!(
            creation_of(&env, "hyperty://example.com/obs", D, mine),
            Some(created(body))
        );
        // Without body.source there is no reporter to name.
        let env = envelope(serde_json::json!({"id": 1, "type": "create",
            "from": format!("{OBJECT}/subscription"), "to": "hyperty://example.com/obs", "body": {}}));
        assert_eq!(
            creation_of(&env, "hyperty://example.com/obs", D, mine),
            None
        );
    }

    #[test]
    fn a_create_addressed_to_the_object_creates_it_with_the_sender_as_reporter() {
        let body = serde_json::json!({"value": {"name": "n"}});
        for to in [OBJECT.to_owned(), format!("{OBJECT}/subscription")] {
            let env = envelope(
                serde_json::json!({"id": 1, "type": "create", "from": REPORTER, "to": to, "body": body}),
            );
            assert_eq!(
                creation_of(&env, &to, D, mine),
                Some(created(body.clone())),
                "{to}"
            );
        }
    }

    #[test]
    fn other_creates_and_foreign_objects_or_reporters_are_not_creations() {
        let check = |from: &str, to: &str, kind: &str, owned: &dyn Fn(&str) -> bool| {
            let env = envelope(
                serde_json::json!({"id": 1, "type": kind, "from": from, "to": to,
                "body": {"value": {}}}),
            );
            creation_of(&env, to, D, owned)
        };
        assert!(check(REPORTER, OBJECT, "create", &mine).is_some());
        assert_eq!(check(REPORTER, OBJECT, "update", &mine), None);
        assert_eq!(
            check(REPORTER, "comm://other.org/chat-1", "create", &|_| true),
            None
        );
        assert_eq!(
            check(REPORTER, &format!("{OBJECT}/children/x"), "create", &mine),
            None
        );
        assert_eq!(
            check(REPORTER, "hyperty://example.com/h-2", "create", &mine),
            None
        );
        // The object, or the reporter, belongs to another session.
        assert_eq!(check(REPORTER, OBJECT, "create", &|a| a == REPORTER), None);
        assert_eq!(check(REPORTER, OBJECT, "create", &|a| a == OBJECT), None);
    }

    #[test]
    fn updates_that_cannot_become_room_events_are_refused() {
        let changes = format!("{OBJECT}/changes");
        let update = |body: &str| {
            let text = format!(
                r#"{{"id":7,"type":"update","from":"{REPORTER}","to":"{changes}","body":{body}}}"#
            );
            update_of(&Envelope::parse(&text).unwrap(), &changes, D)
        };
        let fits = format!(r#"{{"value":"{}"}}"#, "x".repeat(MAX_UPDATE_BODY - 12));
        assert!(matches!(
            update(&fits),
            Ok(Some(BridgeEvent::Update { .. }))
        ));
        let over = format!(r#"{{"value":"{}"}}"#, "x".repeat(MAX_UPDATE_BODY));
        assert!(matches!(update(&over), Err(Unbridgeable::TooLarge { .. })));
        assert_eq!(
            update(r#"{"value":"\ud800"}"#),
            Err(Unbridgeable::NotUnicode)
        );
    }

    #[test]
    fn only_change_feeds_of_this_domains_objects_are_bridged() {
        assert_eq!(
            changes_of("comm://example.com/chat-1/changes", "example.com"),
            Some("comm://example.com/chat-1")
        );
        assert_eq!(
            changes_of("comm://other.org/chat-1/changes", "example.com"),
            None
        );
        assert_eq!(changes_of("comm://example.com/chat-1", "example.com"), None);
        assert_eq!(
            changes_of("hyperty://example.com/h/changes", "example.com"),
            None
        );
        assert_eq!(
            changes_of("comm://example.com/a/b/changes", "example.com"),
            None
        );
        assert_eq!(
            changes_of("comm://example.com//changes", "example.com"),
            None
        );
    }
}
