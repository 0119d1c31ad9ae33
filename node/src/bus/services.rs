//! The node's own services on the bus: address allocation and the subscription manager.
//! Each takes a request already permitted by the enforcement point and returns the response
//! (or the error the edge turns into one).

use std::sync::Arc;

use rethink_proto::{AddressRef, Code, Envelope, MessageType, ResponseBuilder};
use serde::Deserialize;
use serde_json::json;

use super::Endpoint;
use super::bridge::{self, BridgeEvent};
use super::error::RouteError;
use super::session::{Allocation, Session};
use super::{Bus, Origin, Pending};
use crate::locks::lock;
use crate::store::StoreOp;

/// Schemes that name the node, identities or runtimes, never allocated to a hyperty.
const RESERVED_SCHEMES: &[&str] = &[
    "domain",
    "user",
    "hyperty-runtime",
    "runtime",
    "mn",
    "global",
    "hyperty-catalogue",
];

#[derive(Deserialize, Default)]
#[serde(default)]
struct AllocationBody {
    scheme: Option<String>,
    value: Option<AllocationValue>,
    resource: Option<String>,
    #[serde(rename = "childrenResources")]
    children_resources: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AllocationValue {
    number: Option<u32>,
    #[serde(rename = "allocationKey")]
    allocation_key: Option<String>,
    scheme: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SubscriptionBody {
    resources: Option<Vec<String>>,
    subscribe: Option<Vec<String>>,
    unsubscribe: Option<Vec<String>>,
    source: Option<String>,
}

impl Bus {
    /// The addresses a subscription request names (`body.resources`, or the older
    /// `body.subscribe` / `body.unsubscribe`), if its body reads.
    pub(super) fn subscription_resources(env: &Envelope) -> Option<Vec<String>> {
        let body: SubscriptionBody = env.body().ok()?;
        let legacy = match env.kind() {
            MessageType::Unsubscribe => body.unsubscribe,
            _ => body.subscribe,
        };
        body.resources.or(legacy)
    }
}

fn ok(env: &Envelope, at: &str, value: serde_json::Value) -> Envelope {
    let built = ResponseBuilder::new(env.id_json(), at, env.from(), Code::OK)
        .value(value)
        .build();
    match built {
        Ok(reply) => reply,
        // The request parsed, so its id and addresses serialize again.
        Err(e) => unreachable!("a response to a parsed request is valid: {e}"),
    }
}

fn bad(msg: impl Into<String>) -> RouteError {
    RouteError::BadRequest(msg.into())
}

impl Bus {
    /// Serves a request addressed to the node endpoint `ep` at address `at`.
    pub(super) fn serve(
        &self,
        ep: Endpoint,
        env: &Envelope,
        at: &str,
        origin: &Origin,
        pending: &mut Pending,
    ) -> Result<Option<Envelope>, RouteError> {
        let session = origin.session();
        match ep {
            Endpoint::Allocation | Endpoint::ObjectAllocation => {
                let session = session.ok_or_else(|| {
                    RouteError::Forbidden("only runtime sessions allocate addresses".into())
                })?;
                let default_scheme = if ep == Endpoint::ObjectAllocation {
                    "comm"
                } else {
                    "hyperty"
                };
                self.allocation(env, at, session, default_scheme, pending)
                    .map(Some)
            }
            Endpoint::Subscriptions => {
                let session = session.ok_or_else(|| {
                    RouteError::Forbidden("only runtime sessions subscribe".into())
                })?;
                // Another domain's node session holds what its runtimes subscribed to, each
                // runtime within the bound on its own node (`gateways.rs`): no bound of its own.
                let max = match origin {
                    Origin::Node { .. } => usize::MAX,
                    _ => self.inner.session_cfg.max_subscriptions,
                };
                self.subscriptions(env, at, session, max, pending).map(Some)
            }
            // A registry connector (`[connectors.registry]`) owns the address when it runs;
            // what a runtime registers must have been allocated to it (`registry_owner.rs`).
            Endpoint::Registry => match self.inner.book.owner_of(at) {
                Some(owner) => self
                    .check_registration_owner(env, session)
                    .and_then(|()| self.deliver(&owner, at, env.shared_json(), pending))
                    .map(|()| None),
                None => Err(RouteError::NotServed(format!(
                    "{at} (no domain registry is attached to this node)"
                ))),
            },
            Endpoint::Identity => Err(RouteError::NotServed(format!(
                "{at} (no identity service is attached to this node)"
            ))),
            Endpoint::Session => Err(bad(
                "session control messages must be sent alone to mn:/session",
            )),
            Endpoint::OtherNode => Err(RouteError::NotFound(at.to_owned())),
        }
    }

    fn allocation(
        &self,
        env: &Envelope,
        at: &str,
        session: &Arc<Session>,
        default_scheme: &str,
        pending: &mut Pending,
    ) -> Result<Envelope, RouteError> {
        let body: AllocationBody = env
            .body()
            .map_err(|e| bad(format!("allocation body: {e}")))?;
        match env.kind() {
            MessageType::Create => {
                let value = body.value.unwrap_or_default();
                let number = value.number.unwrap_or(1);
                let max = self.inner.alloc_cfg.max_number;
                if number == 0 || number > max {
                    return Err(bad(format!(
                        "value.number must be between 1 and {max}, not {number}"
                    )));
                }
                let scheme = body
                    .scheme
                    .or(value.scheme)
                    .unwrap_or_else(|| default_scheme.to_owned());
                let scheme_ok =
                    AddressRef::parse(&format!("{scheme}://x")).is_ok_and(|a| a.scheme() == scheme);
                if !scheme_ok || RESERVED_SCHEMES.contains(&scheme.as_str()) {
                    return Err(bad(format!("scheme {scheme:?} cannot be allocated")));
                }
                let allocated =
                    self.allocate(session, &scheme, number, value.allocation_key, pending)?;
                Ok(ok(env, at, json!({ "allocated": allocated })))
            }
            MessageType::Delete => {
                let released = if let Some(key) = body.resource {
                    self.deallocate(session, pending, |a| a.key.as_deref() == Some(&key))
                } else if let Some(children) = body.children_resources {
                    self.deallocate(session, pending, |a| {
                        children.iter().any(|c| **c == *a.address)
                    })
                } else {
                    return Err(bad(
                        "delete needs body.resource (an allocationKey) or body.childrenResources",
                    ));
                };
                if released.is_empty() {
                    return Err(RouteError::NotFound(
                        "none of these addresses is allocated to this runtime".into(),
                    ));
                }
                Ok(ok(env, at, json!({ "deallocated": released })))
            }
            other => Err(bad(format!(
                "address allocation accepts create and delete, not {other}"
            ))),
        }
    }

    fn allocate(
        &self,
        session: &Arc<Session>,
        scheme: &str,
        number: u32,
        key: Option<String>,
        pending: &mut Pending,
    ) -> Result<Vec<Arc<str>>, RouteError> {
        let max_total = self.inner.alloc_cfg.max_per_session;
        {
            let st = lock(&session.state);
            if let Some(key) = &key {
                let existing: Vec<Arc<str>> = st
                    .allocations
                    .iter()
                    .filter(|a| a.key.as_ref() == Some(key))
                    .map(|a| Arc::clone(&a.address))
                    .collect();
                if !existing.is_empty() {
                    return Ok(existing);
                }
            }
            if st.allocations.len() + number as usize > max_total {
                return Err(RouteError::Forbidden(format!(
                    "a runtime holds at most {max_total} addresses"
                )));
            }
        }
        let mut fresh = Vec::with_capacity(number as usize);
        while fresh.len() < number as usize {
            let address: Arc<str> = Arc::from(format!(
                "{scheme}://{}/{}",
                self.inner.domain,
                uuid::Uuid::new_v4()
            ));
            if let Some(claim) = self.exclusive_claim(&address) {
                return Err(RouteError::Forbidden(format!(
                    "{scheme} addresses of {} are claimed exclusively by application service {}",
                    self.inner.domain, claim.service
                )));
            }
            if self.inner.book.claim(Arc::clone(&address), session) {
                fresh.push(address);
            }
        }
        lock(&session.state)
            .allocations
            .extend(fresh.iter().map(|a| Allocation {
                address: Arc::clone(a),
                key: key.clone(),
            }));
        tracing::debug!(session = %session.key(), count = fresh.len(), "addresses allocated");
        pending.ops.push(StoreOp::AddAddresses {
            session: Arc::clone(session.key()),
            addresses: fresh.iter().map(|a| a.to_string()).collect(),
            key,
        });
        Ok(fresh)
    }

    fn deallocate(
        &self,
        session: &Arc<Session>,
        pending: &mut Pending,
        mut matches: impl FnMut(&Allocation) -> bool,
    ) -> Vec<Arc<str>> {
        let released: Vec<Arc<str>> = {
            let mut st = lock(&session.state);
            let mut out = Vec::new();
            st.allocations.retain(|a| {
                if matches(a) {
                    out.push(Arc::clone(&a.address));
                    false
                } else {
                    true
                }
            });
            out
        };
        for a in &released {
            self.inner.book.release(a, session);
        }
        if !released.is_empty() {
            pending.ops.push(StoreOp::RemoveAddresses {
                session: Arc::clone(session.key()),
                addresses: released.iter().map(|a| a.to_string()).collect(),
            });
        }
        released
    }

    fn subscriptions(
        &self,
        env: &Envelope,
        at: &str,
        session: &Arc<Session>,
        max: usize,
        pending: &mut Pending,
    ) -> Result<Envelope, RouteError> {
        let body: SubscriptionBody = env
            .body()
            .map_err(|e| bad(format!("subscription body: {e}")))?;
        if let Some(source) = &body.source {
            AddressRef::parse(source).map_err(|e| bad(format!("body.source: {e}")))?;
        }
        let subscribe = match env.kind() {
            MessageType::Subscribe => true,
            MessageType::Unsubscribe => false,
            other => {
                return Err(bad(format!(
                    "the subscription manager accepts subscribe and unsubscribe, not {other}"
                )));
            }
        };
        let legacy = if subscribe {
            body.subscribe
        } else {
            body.unsubscribe
        };
        let resources = body.resources.or(legacy).unwrap_or_default();
        if resources.is_empty() {
            return Err(bad("body.resources must list at least one address"));
        }
        for r in &resources {
            let addr = AddressRef::parse(r).map_err(|e| bad(format!("resource {r:?}: {e}")))?;
            if !addr.is_in_domain(&self.inner.domain) {
                return Err(RouteError::NoRouteToDomain(addr.authority().to_owned()));
            }
        }
        session.change_subscriptions(&resources, subscribe, max)?;
        for r in &resources {
            if subscribe {
                if let Some(object) = bridge::changes_of(r, &self.inner.domain) {
                    pending.bridge.push(BridgeEvent::Subscribed {
                        hyperty: body.source.clone().unwrap_or_else(|| env.from().to_owned()),
                        object: object.to_owned(),
                    });
                }
                self.inner.book.subscribe(Arc::from(r.as_str()), session);
            } else {
                self.inner.book.unsubscribe(r, session);
            }
        }
        let key = Arc::clone(session.key());
        pending.ops.push(if subscribe {
            StoreOp::AddSubscriptions {
                session: key,
                addresses: resources.clone(),
            }
        } else {
            StoreOp::RemoveSubscriptions {
                session: key,
                addresses: resources.clone(),
            }
        });
        let mut value = json!({ "resources": resources });
        if subscribe && let Some(status) = self.current_status(&resources, &pending.statuses) {
            value["status"] = status;
        }
        Ok(ok(env, at, value))
    }
}
