//! What the bus hands to the Matrix bridge (DESIGN.md section 5): a hyperty subscribing to a
//! data object's `changes`, and an `update` published there. The bus only recognises these
//! messages (`comm://<this domain>/<id>/changes`) and passes them on, after routing, through a
//! bounded channel whose back-pressure reaches the sender; the bridge (`crate::bridge`) turns
//! them into room events.

use rethink_proto::{Envelope, MessageType};

/// The suffix of a data object's change feed.
const CHANGES: &str = "/changes";

/// A bus message the Matrix bridge acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BridgeEvent {
    /// `hyperty` subscribed to `object`'s changes.
    Subscribed { hyperty: String, object: String },
    /// `from` published an update of `object`; `body` is the message body (JSON).
    Update {
        from: String,
        object: String,
        body: Option<String>,
    },
}

/// The data object `comm://<domain>/<id>` whose change feed `address` is, if it is one.
pub(crate) fn changes_of<'a>(address: &'a str, domain: &str) -> Option<&'a str> {
    let object = address.strip_suffix(CHANGES)?;
    let rest = object.strip_prefix("comm://")?;
    let (authority, id) = rest.split_once('/')?;
    (authority == domain && !id.is_empty() && !id.contains('/')).then_some(object)
}

/// The bridge event of a routed message, if it is an update of a data object of `domain`.
pub(crate) fn update_of(env: &Envelope, to: &str, domain: &str) -> Option<BridgeEvent> {
    if *env.kind() != MessageType::Update {
        return None;
    }
    let object = changes_of(to, domain)?;
    Some(BridgeEvent::Update {
        from: env.from().to_owned(),
        object: object.to_owned(),
        body: env.body_json().map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
