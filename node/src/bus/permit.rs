//! The enforcement point: no message is routed without a [`Permit`], and only
//! [`Bus::authorize`] makes one (the linkerd2-proxy `Permitted<T>` pattern).
//!
//! The decision applies, in order, the built-in checks that are never left to policy
//! (anti-spoofing: a session sends only from its runtime URL or its allocated addresses and
//! paths below them, in canonical form, which `rethink-proto` guarantees; the per-session
//! message rate; the number of distinct recipients, `session.max_recipients`), then the operator's Cedar policies
//! (`rethink-policy`), once per recipient (and, for a subscription, once per subscribed
//! resource). A permit may carry per-recipient refusals: those recipients get a 403, the others
//! the message.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rethink_proto::{Envelope, MessageType};

use super::Bus;
use super::Endpoint;
use super::session::Session;
use crate::policy::facts::{Message, Sender, Target};

/// Where a message entered the node.
#[derive(Debug, Clone)]
pub enum Origin {
    /// A hyperty runtime's WebSocket session.
    Session(Arc<Session>),
    /// A Matrix user's event in a room bridged to a data object (`crate::bridge`), published
    /// by the node from the object's address.
    Matrix(ruma::OwnedUserId),
    /// A protocol stub the node runs (`crate::stubhost`), through its session.
    Stub(Arc<Session>),
    /// Another domain's node (`crate::crossdomain`): a session speaking for `domain`, either
    /// that node's authenticated session here or our gateway session to it. It may send only
    /// from addresses of `domain`, and only to addresses of this domain.
    Node {
        session: Arc<Session>,
        domain: Arc<str>,
    },
    /// An application service (`crate::appservice`, `POST /_rethink/app/v1/send`), through its
    /// session (`bus::claims`). It may send only from its runtime URL or addresses its
    /// `rethink_namespaces` claim.
    AppService(Arc<Session>),
}

impl Origin {
    /// The session the message came from, if it came from one.
    pub fn session(&self) -> Option<&Arc<Session>> {
        match self {
            Origin::Session(s)
            | Origin::Stub(s)
            | Origin::AppService(s)
            | Origin::Node { session: s, .. } => Some(s),
            Origin::Matrix(_) => None,
        }
    }

    /// The transport name policies see in `context.transport`.
    pub fn transport(&self) -> &'static str {
        match self {
            Origin::Session(_) => "ws",
            Origin::Matrix(_) => "matrix",
            Origin::Stub(_) => "stub",
            Origin::Node { .. } => "node",
            Origin::AppService(_) => "appservice",
        }
    }
}

/// Why a message (or one recipient of it) is refused before routing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("sender {from} is not an address of this runtime")]
    Spoofed { from: String },
    #[error("sender {from} is not in domain {domain}, the domain this node session proved")]
    OutsideDomain { from: String, domain: String },
    #[error("message rate limit exceeded")]
    RateLimited,
    #[error("the message names {count} recipients; at most {max} are accepted")]
    TooManyRecipients { count: usize, max: usize },
    #[error("{}", policy_reason(.policies))]
    Policy { policies: Vec<String> },
}

impl Denied {
    /// The reTHINK code a refusal is answered with, on every edge that answers in reTHINK
    /// messages (the WebSocket edge, stubs, the bridge, the application services' send, the
    /// cluster's refusals on arrival).
    pub fn code(&self) -> rethink_proto::Code {
        use rethink_proto::Code;
        match self {
            Denied::Spoofed { .. } | Denied::OutsideDomain { .. } => Code::FORBIDDEN,
            Denied::RateLimited => Code::TOO_MANY_REQUESTS,
            Denied::TooManyRecipients { .. } => Code::TOO_LARGE,
            Denied::Policy { .. } => Code::FORBIDDEN,
        }
    }
}

fn policy_reason(policies: &[String]) -> String {
    if policies.is_empty() {
        "denied by policy: no policy permits this message".to_owned()
    } else {
        format!("denied by policy {}", policies.join(", "))
    }
}

/// Proof that a message passed the enforcement point. Only [`Bus::authorize`] creates one, and
/// [`Bus::route`] requires one.
#[derive(Debug)]
pub struct Permit<'a> {
    pub(super) envelope: &'a Envelope,
    pub(super) origin: &'a Origin,
    /// Recipients (by index in `to`) refused by policy.
    pub(super) refused: Vec<(usize, Denied)>,
    /// The owners of recipients' addresses that the decision looked up (by index in `to`), so
    /// that routing does not look them up again.
    pub(super) owners: Vec<(usize, Option<Arc<Session>>)>,
}

impl Permit<'_> {
    /// The owner of recipient `i`'s address, if the decision looked it up.
    pub(super) fn take_owner(&mut self, i: usize) -> Option<Option<Arc<Session>>> {
        let at = self.owners.iter().position(|(r, _)| *r == i)?;
        Some(self.owners.swap_remove(at).1)
    }
}

/// What the decision of one message found out.
#[derive(Debug, Default)]
struct Decided {
    refused: Vec<(usize, Denied)>,
    owners: Vec<(usize, Option<Arc<Session>>)>,
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Bus {
    /// Decides whether `envelope`, arriving from `origin`, may be routed.
    pub fn authorize<'a>(
        &self,
        envelope: &'a Envelope,
        origin: &'a Origin,
    ) -> Result<Permit<'a>, Denied> {
        match origin {
            Origin::Session(session) | Origin::Stub(session) => {
                let owner = self.inner.book.owner_of(envelope.from());
                let allocated = owner.is_some_and(|o| Arc::ptr_eq(&o, session));
                // A connector also speaks for its namespace patterns, as a service does.
                let claimed =
                    matches!(origin, Origin::Stub(_)) && self.may_send_as(session, envelope.from());
                if !(allocated || claimed) || self.reserved_for_service(origin, envelope.from()) {
                    return Err(Denied::Spoofed {
                        from: envelope.from().to_owned(),
                    });
                }
                if !session.take_rate() {
                    return Err(Denied::RateLimited);
                }
            }
            // A service speaks only for its namespace (its own rate is its registration's
            // business: `rate_limited` applies to its Matrix requests).
            Origin::AppService(session) => {
                if !self.may_send_as(session, envelope.from()) {
                    return Err(Denied::Spoofed {
                        from: envelope.from().to_owned(),
                    });
                }
            }
            // Another domain's node speaks only for its own domain.
            Origin::Node { domain, .. } => {
                let inside = rethink_proto::AddressRef::parse(envelope.from())
                    .is_ok_and(|a| a.is_in_domain(domain));
                if !inside {
                    return Err(Denied::OutsideDomain {
                        from: envelope.from().to_owned(),
                        domain: domain.to_string(),
                    });
                }
            }
            // The node speaks for a bridged room only from a data object of its domain.
            Origin::Matrix(_) => {
                let object = envelope.from();
                let ours = object
                    .strip_prefix("comm://")
                    .and_then(|rest| rest.split_once('/'))
                    .is_some_and(|(domain, _)| domain == self.inner.domain);
                if !ours {
                    return Err(Denied::Spoofed {
                        from: object.to_owned(),
                    });
                }
            }
        }
        let count = envelope.to().len();
        let max = self.inner.session_cfg.max_recipients;
        if count > max {
            return Err(Denied::TooManyRecipients { count, max });
        }
        let Decided {
            mut refused,
            owners,
        } = self.decide(envelope, origin);
        if !refused.is_empty() && refused.len() == envelope.to().len() {
            return Err(refused.swap_remove(0).1);
        }
        Ok(Permit {
            envelope,
            origin,
            refused,
            owners,
        })
    }

    /// Asks the operator's policies about every recipient; returns the refused ones, and the
    /// owners it looked up.
    fn decide(&self, env: &Envelope, origin: &Origin) -> Decided {
        let Some(engine) = self.inner.policy.engine() else {
            return Decided::default();
        };
        let session = origin.session();
        let now = self.inner.policy.clock().now();
        let sender = Sender {
            address: env.from(),
            runtime: session.map(|s| &**s.runtime_url()),
            user: match origin {
                Origin::Matrix(user) => Some(user.as_str()),
                Origin::Session(s)
                | Origin::Stub(s)
                | Origin::AppService(s)
                | Origin::Node { session: s, .. } => s.identity().subject.as_deref(),
            },
            transport: origin.transport(),
            rate_per_minute: session.map_or(0, |s| s.count_message(unix_ms()) as i64),
            allocations: session.map_or(0, |s| s.allocation_count() as i64),
        };
        let message = Message::new(env.kind().as_str(), env.json().len(), &sender, now);
        let mut decided = Decided::default();
        for (i, to) in env.to().enumerate() {
            let endpoint = self.inner.endpoints.classify(to);
            // A subscription is decided on the resources subscribed to, not on the manager.
            let resources = match (endpoint, env.kind()) {
                (
                    Some(Endpoint::Subscriptions),
                    MessageType::Subscribe | MessageType::Unsubscribe,
                ) => Self::subscription_resources(env),
                _ => None,
            };
            let targets: Vec<&str> = match &resources {
                Some(list) => list.iter().map(String::as_str).collect(),
                None => vec![to],
            };
            for target in targets {
                let node_endpoint = resources.is_none() && endpoint.is_some();
                let owner = if node_endpoint {
                    None
                } else {
                    self.owner_or_claimant(target)
                };
                let query = message.query(&Target {
                    address: target,
                    node_endpoint,
                    owner_user: owner.as_ref().and_then(|o| o.identity().subject.as_deref()),
                    owner_runtime: owner.as_ref().map(|o| &**o.runtime_url()),
                });
                let decision = engine.decide(&query);
                if resources.is_none() && !node_endpoint {
                    decided.owners.push((i, owner.clone()));
                }
                for e in &decision.errors {
                    tracing::warn!(error = %e, "policy evaluation error");
                }
                if !decision.allowed {
                    let first = decision
                        .policies
                        .first()
                        .map_or("default-deny", String::as_str);
                    self.inner.metrics.policy_denial(first);
                    decided.refused.push((
                        i,
                        Denied::Policy {
                            policies: decision.policies,
                        },
                    ));
                    break;
                }
            }
        }
        decided
    }
}

#[cfg(test)]
mod tests {
    //! The built-in checks of [`Bus::authorize`] for messages the node publishes for Matrix
    //! users (no public path reaches the refusal: the bridge always sends from the room's object).

    use rethink_proto::Envelope;
    use serde_json::json;

    use super::{Denied, Origin};
    use crate::bus::Bus;

    /// A bus of `example.com` without policies (only the built-in checks decide).
    fn bus() -> Bus {
        crate::bus::testing::bus(None)
    }

    /// A bridged Matrix event published on the bus from `from`.
    fn from_matrix(from: &str) -> Envelope {
        let message = json!({"id": "matrix-1", "type": "update", "from": from,
            "to": "comm://example.com/chat-1/changes",
            "body": {"value": {"msgtype": "m.text", "body": "hi"}, "source": "@alice:example.com"}});
        Envelope::parse(&message.to_string()).unwrap()
    }

    fn alice() -> Origin {
        Origin::Matrix(ruma::OwnedUserId::try_from("@alice:example.com").unwrap())
    }

    #[tokio::test]
    async fn matrix_origins_may_not_send_from_a_hyperty_or_another_domains_object() {
        let bus = bus();
        let origin = alice();
        for from in [
            "hyperty://example.com/h-1",
            "comm://other.org/chat-1",
            "comm://example.com.evil.org/chat-1",
        ] {
            let env = from_matrix(from);
            let refused = bus.authorize(&env, &origin).unwrap_err();
            assert_eq!(
                refused,
                Denied::Spoofed {
                    from: from.to_owned()
                },
                "{from}"
            );
            assert_eq!(
                refused.to_string(),
                format!("sender {from} is not an address of this runtime")
            );
            assert_eq!(refused.code(), rethink_proto::Code::FORBIDDEN);
        }
    }

    #[tokio::test]
    async fn matrix_origins_may_send_from_this_domains_objects() {
        let bus = bus();
        let origin = alice();
        let env = from_matrix("comm://example.com/chat-1");
        let permit = bus.authorize(&env, &origin).unwrap();
        assert!(permit.refused.is_empty());
        assert_eq!(permit.envelope.from(), "comm://example.com/chat-1");
    }
}
