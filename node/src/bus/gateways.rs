//! Routes to other domains (issue 13, `crate::crossdomain`). A *node session* is a session that
//! speaks for another domain D, recognised by its identity `node://D` together with its runtime
//! URL:
//!
//! - `hyperty-runtime://<us>/node/<D>`: D's node connected to us and proved it is D (a node
//!   token, `crossdomain::proof`);
//! - `hyperty-runtime://<us>/gateway/<D>`: our own way out to D, drained into D's protocol stub
//!   that `crate::crossdomain` runs.
//!
//! Each is D's *gateway*: a message for an address of D is put in its outbox (persisted and
//! bounded like any). The latest node session of D opened is its gateway. With cross-domain
//! routing on ([`Bus::set_gateway_starter`]), a message for a domain without a gateway opens
//! the gateway session at once, so the message waits in its outbox while the starter loads
//! the domain's stub. What a node session sends enters with [`Origin::Node`]: from addresses of
//! D only, to addresses of this domain only (a node does not relay), except D's own
//! publications to addresses of D that sessions here subscribed to.
//!
//! Subscriptions across domains: a `subscribe` / `unsubscribe` a session here sends to D's
//! subscription manager (`domain://msg-node.D/sm`) goes to D, and its resources of D are
//! recorded here too (in the session and the address book, persisted like a local
//! subscription), so that D's node publishing to them through its node session reaches the
//! subscribers here.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use rethink_proto::{AddressRef, Envelope, MessageType};
use tokio::sync::mpsc;

use super::remote::{RemoteHolders, RemoteSession, RemoteTarget};
use super::{Bus, Origin, Pending, RouteError, Session};
use crate::auth::Identity;
use crate::locks::{read, write};
use crate::store::StoreOp;

/// The other domains of a route whose gateway is another node's (`Bus::open_gateways`): by
/// domain, that gateway and the runtime URL it was found by (`None`: none anywhere), or the
/// error of its lookup or of opening it here.
pub(super) type Elsewhere = Vec<(String, Result<Option<(RemoteSession, String)>, RouteError>)>;

/// At most this many domains have a gateway opened on first use (a message naming yet another
/// domain is answered 404, no route).
const MAX_GATEWAYS: usize = 1024;

/// The gateway of each domain, and where new ones are announced.
#[derive(Debug, Default)]
pub(super) struct Gateways {
    by_domain: RwLock<HashMap<String, Arc<Session>>>,
    starter: OnceLock<mpsc::UnboundedSender<String>>,
}

/// The domain of an address authority: `msg-node.D` and `registry.D` are D's node.
pub fn remote_domain(authority: &str) -> &str {
    authority
        .strip_prefix("msg-node.")
        .or_else(|| authority.strip_prefix("registry."))
        .unwrap_or(authority)
}

impl Bus {
    /// The runtime URL of domain `domain`'s node session here.
    pub fn node_runtime_url(&self, domain: &str) -> String {
        format!("hyperty-runtime://{}/node/{domain}", self.inner.domain)
    }

    /// The runtime URL of our gateway session to `domain`.
    pub fn gateway_runtime_url(&self, domain: &str) -> String {
        format!("hyperty-runtime://{}/gateway/{domain}", self.inner.domain)
    }

    /// The identity of a session speaking for `domain`, bound to `runtime`.
    pub fn node_identity(domain: &str, runtime: String) -> Identity {
        Identity {
            subject: Some(format!("node://{domain}")),
            runtime: Some(runtime),
            expires_at: None,
        }
    }

    /// The domain `session` speaks for, if it is a node session.
    pub fn node_domain<'a>(&self, session: &'a Session) -> Option<&'a str> {
        let domain = session
            .identity()
            .subject
            .as_deref()?
            .strip_prefix("node://")?;
        let url: &str = session.runtime_url();
        (url == self.node_runtime_url(domain) || url == self.gateway_runtime_url(domain))
            .then_some(domain)
    }

    /// Whether a session of runtime URL `runtime` and user `subject` (its identity's) is a
    /// node session that may send from `from`: an address of the domain it speaks for. For a
    /// message that another node of the cluster queued for a session here (its ownership of
    /// `from` is checked again on arrival, and a node session owns no addresses).
    pub fn node_sends_from(&self, runtime: &str, subject: Option<&str>, from: &str) -> bool {
        let Some(domain) = subject.and_then(|s| s.strip_prefix("node://")) else {
            return false;
        };
        (runtime == self.node_runtime_url(domain) || runtime == self.gateway_runtime_url(domain))
            && AddressRef::parse(from).is_ok_and(|a| a.is_in_domain(domain))
    }

    /// The origin of what `session` sends: [`Origin::Node`] for a node session.
    pub fn origin_of(&self, session: &Arc<Session>) -> Origin {
        match self.node_domain(session) {
            Some(domain) => Origin::Node {
                domain: Arc::from(domain),
                session: Arc::clone(session),
            },
            None => Origin::Session(Arc::clone(session)),
        }
    }

    /// Turns on routing to other domains: each domain whose gateway session is opened on first
    /// use (or was restored at start) is sent to `starter`, which makes its stub drain it.
    /// Returns the domains of the gateway sessions restored at start.
    pub fn set_gateway_starter(&self, starter: mpsc::UnboundedSender<String>) -> Vec<String> {
        let _ = self.inner.gateways.starter.set(starter);
        read(&self.inner.sessions)
            .values()
            .filter_map(|s| {
                let d = self.node_domain(s)?;
                (**s.runtime_url() == *self.gateway_runtime_url(d)).then(|| d.to_owned())
            })
            .collect()
    }

    /// Whether routing to other domains is on (gateways are started).
    pub fn routes_to_other_domains(&self) -> bool {
        self.inner.gateways.starter.get().is_some()
    }

    /// Has the stub of `domain` started on its gateway session here.
    pub(super) fn start_gateway(&self, domain: &str) {
        if let Some(starter) = self.inner.gateways.starter.get() {
            let _ = starter.send(domain.to_owned());
        }
    }

    /// The gateway of `domain`.
    pub fn gateway(&self, domain: &str) -> Option<Arc<Session>> {
        read(&self.inner.gateways.by_domain).get(domain).cloned()
    }

    pub(super) fn register_gateway(&self, session: &Arc<Session>) {
        if let Some(domain) = self.node_domain(session) {
            write(&self.inner.gateways.by_domain).insert(domain.to_owned(), Arc::clone(session));
        }
    }

    pub(super) fn forget_gateway(&self, session: &Arc<Session>) {
        if let Some(domain) = self.node_domain(session) {
            let mut map = write(&self.inner.gateways.by_domain);
            if map.get(domain).is_some_and(|s| Arc::ptr_eq(s, session)) {
                map.remove(domain);
            }
        }
    }

    /// Opens the gateway session of every other domain `env` names that has none yet (with
    /// cross-domain routing on). In a cluster, a domain whose gateway is another node's is not
    /// opened here: returned with that gateway (or the lookup's error), for the route to forward
    /// to it (`Bus::remote_holders`), so that it is looked up once per route; a domain whose
    /// gateway could not be opened here is returned with the error, which its recipients get.
    pub(super) async fn open_gateways(&self, env: &Envelope, origin: &Origin) -> Elsewhere {
        let mut elsewhere = Elsewhere::new();
        let Some(starter) = self.inner.gateways.starter.get() else {
            return elsewhere;
        };
        if matches!(origin, Origin::Node { .. }) {
            return elsewhere;
        }
        for to in env.to() {
            let Ok(addr) = AddressRef::parse(to) else {
                continue;
            };
            // An address an application service claims is routed to it, not to a domain.
            if addr.is_in_domain(&self.inner.domain) || self.claimed_route(to).is_some() {
                continue;
            }
            let domain = remote_domain(addr.authority());
            if domain.is_empty()
                || self.gateway(domain).is_some()
                || elsewhere.iter().any(|(d, _)| d == domain)
            {
                continue;
            }
            // In a cluster, another node's gateway (or node session) of the domain serves it.
            let remote = self.remote();
            if let Some(remote) = &remote {
                match self.gateway_elsewhere(&**remote, domain).await {
                    Ok(None) => {}
                    found => {
                        elsewhere.push((domain.to_owned(), found));
                        continue;
                    }
                }
            }
            if read(&self.inner.gateways.by_domain).len() >= MAX_GATEWAYS {
                tracing::warn!(domain, "too many remote domains: no gateway opened");
                continue;
            }
            let url = self.gateway_runtime_url(domain);
            match self
                .open(&url, Self::node_identity(domain, url.clone()))
                .await
            {
                Ok(_) => {
                    tracing::info!(domain, "gateway to another domain opened");
                    let _ = starter.send(domain.to_owned());
                }
                // Opened meanwhile by another message, or by another node: looked up there
                // afresh.
                Err(RouteError::Conflict(_)) => {
                    if let Some(remote) = &remote {
                        remote.forget_lookups();
                        let found = self.gateway_elsewhere(&**remote, domain).await;
                        elsewhere.push((domain.to_owned(), found));
                    }
                }
                // Not opened (the shared database failed: `RouteError::Cluster`): the domain's
                // recipients get this error (503, retry), not "no route to domain" (404).
                Err(e) => {
                    tracing::warn!(domain, error = %e, "no gateway to another domain");
                    elsewhere.push((domain.to_owned(), Err(e)));
                }
            }
        }
        elsewhere
    }

    /// In a cluster, the session of another node that is `domain`'s gateway (our way out to
    /// it, else its node's session), with the runtime URL it was found by.
    pub(super) async fn gateway_elsewhere(
        &self,
        remote: &dyn super::remote::Remote,
        domain: &str,
    ) -> Result<Option<(RemoteSession, String)>, RouteError> {
        for url in [
            self.gateway_runtime_url(domain),
            self.node_runtime_url(domain),
        ] {
            if let Some(owner) = remote.lookup(&url).await?.owner {
                return Ok(Some((owner, url)));
            }
        }
        Ok(None)
    }

    /// Routes to `to`, an address of another domain: into that domain's gateway session, here
    /// or (in a cluster, `remote`: [`Bus::remote_holders`]) on another node.
    pub(super) fn route_remote(
        &self,
        env: &Envelope,
        to: &str,
        addr: &AddressRef<'_>,
        origin: &Origin,
        remote: Option<&RemoteHolders>,
        pending: &mut Pending,
    ) -> Result<Option<Envelope>, RouteError> {
        if let Origin::Node { domain, .. } = origin {
            if addr.is_in_domain(domain) {
                return self.publish_remote(domain, env, to, remote, pending);
            }
            return Err(RouteError::Forbidden(format!(
                "a node session of {domain} may only reach addresses of {}",
                self.inner.domain
            )));
        }
        let domain = remote_domain(addr.authority());
        match self.gateway(domain) {
            Some(gateway) => {
                if let Some(session) = origin.session() {
                    self.mirror_subscription(env, to, domain, session, pending)?;
                }
                self.deliver(&gateway, to, env.shared_json(), pending)
                    .map(|()| None)
                    .map_err(|e| queue_full(domain, e))
            }
            None => match remote.and_then(|r| r.owner.clone().zip(r.via.clone())) {
                Some((target, via)) => {
                    if let Some(session) = origin.session() {
                        self.mirror_subscription(env, to, domain, session, pending)?;
                    }
                    pending.remote.push(RemoteTarget {
                        to: to.to_owned(),
                        target,
                        gateway: Some(via),
                    });
                    Ok(None)
                }
                None => Err(RouteError::NoRouteToDomain(domain.to_owned())),
            },
        }
    }

    /// A publication of domain `domain`'s node to `to`, one of its addresses: to the sessions
    /// that subscribed to it (through [`Self::mirror_subscription`]), here and (in a cluster,
    /// `remote`) on other nodes.
    fn publish_remote(
        &self,
        domain: &str,
        env: &Envelope,
        to: &str,
        remote: Option<&RemoteHolders>,
        pending: &mut Pending,
    ) -> Result<Option<Envelope>, RouteError> {
        let json = env.shared_json();
        let published = self.inner.book.with_subscribers(to, |subs| {
            subs.iter()
                .try_for_each(|s| self.deliver(s, to, json, pending))
        });
        let elsewhere = super::remote::share(to, remote, true, false, pending);
        match published {
            Some(outcome) => outcome.map(|()| None),
            None if elsewhere => Ok(None),
            None => Err(RouteError::Forbidden(format!(
                "a node session of {domain} may only reach addresses of {}, or addresses of {domain} subscribed to here",
                self.inner.domain
            ))),
        }
    }

    /// Records here what a `subscribe` / `unsubscribe` of `session` (the sending runtime's) to
    /// `domain`'s subscription manager asks for its resources in `domain`. A subscribe that
    /// would take the session past `session.max_subscriptions` (counting its subscriptions here
    /// and in other domains) is refused whole, before it leaves.
    fn mirror_subscription(
        &self,
        env: &Envelope,
        to: &str,
        domain: &str,
        session: &Arc<Session>,
        pending: &mut Pending,
    ) -> Result<(), RouteError> {
        let subscribe = match env.kind() {
            MessageType::Subscribe => true,
            MessageType::Unsubscribe => false,
            _ => return Ok(()),
        };
        if to != format!("domain://msg-node.{domain}/sm") {
            return Ok(());
        }
        let Some(resources) = Self::subscription_resources(env) else {
            return Ok(());
        };
        let resources: Vec<String> = resources
            .into_iter()
            .filter(|r| AddressRef::parse(r).is_ok_and(|a| a.is_in_domain(domain)))
            .collect();
        if resources.is_empty() {
            return Ok(());
        }
        session.change_subscriptions(
            &resources,
            subscribe,
            self.inner.session_cfg.max_subscriptions,
        )?;
        for r in &resources {
            if subscribe {
                self.inner.book.subscribe(Arc::from(r.as_str()), session);
            } else {
                self.inner.book.unsubscribe(r, session);
            }
        }
        let key = Arc::clone(session.key());
        pending.ops.push(if subscribe {
            StoreOp::AddSubscriptions {
                session: key,
                addresses: resources,
            }
        } else {
            StoreOp::RemoveSubscriptions {
                session: key,
                addresses: resources,
            }
        });
        Ok(())
    }
}

/// A full gateway outbox is domain `domain`'s full queue (503 naming it).
pub(super) fn queue_full(domain: &str, e: RouteError) -> RouteError {
    match e {
        RouteError::OutboxFull { full, .. } => RouteError::QueueFull {
            domain: domain.to_owned(),
            messages: full.messages,
        },
        other => other,
    }
}

impl Bus {
    /// The live session of runtime URL `url`, if any.
    pub fn session_by_runtime(&self, url: &str) -> Option<Arc<Session>> {
        read(&self.inner.sessions)
            .values()
            .find(|s| **s.runtime_url() == *url)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    //! A gateway that cannot be opened because the shared database failed: its domain's
    //! recipients get the cluster's error (503), not "no route to domain" (404).

    use std::sync::Arc;

    use rethink_proto::{Code, Envelope};
    use serde_json::json;
    use tokio::sync::mpsc;

    use crate::bus::testing::{DownCluster, db_down};
    use crate::bus::{Bus, Origin};

    /// A bus of `example.com` routing to other domains, in a cluster whose shared database
    /// answers lookups (nobody holds anything) and then fails every claim of a runtime URL, as
    /// `cluster::Link` does when it cannot reach it.
    fn bus() -> (Bus, mpsc::UnboundedReceiver<String>) {
        let bus = crate::bus::testing::bus(Some("n1"));
        let (starter, started) = mpsc::unbounded_channel();
        bus.set_gateway_starter(starter);
        bus.set_remote(Arc::new(DownCluster {
            claims_fail: true,
            ..DownCluster::default()
        }));
        (bus, started)
    }

    #[tokio::test]
    async fn a_gateway_the_shared_database_did_not_let_open_is_a_503_not_no_route() {
        let (bus, mut started) = bus();
        let message = json!({"id": 1, "type": "update", "from": "comm://example.com/chat-1",
            "to": "hyperty://other.org/h-1", "body": {"value": {}}});
        let env = Envelope::parse(&message.to_string()).unwrap();
        let origin = Origin::Matrix(ruma::OwnedUserId::try_from("@alice:example.com").unwrap());
        let permit = bus.authorize(&env, &origin).unwrap();
        let report = bus.route(permit).await;

        assert!(bus.gateway("other.org").is_none());
        assert!(started.try_recv().is_err(), "no stub started");
        let [failure] = &report.failures[..] else {
            panic!("one failure expected: {:?}", report.failures);
        };
        assert_eq!(failure.recipient, "hyperty://other.org/h-1");
        assert_eq!(failure.error, db_down());
        assert_eq!(
            crate::ws::codec::route_code(&failure.error),
            Code::UNAVAILABLE
        );
    }
}
