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
//! D only, to addresses of this domain only (a node does not relay).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use rethink_proto::{AddressRef, Envelope};
use tokio::sync::mpsc;

use super::{Bus, Origin, Pending, RouteError, Session};
use crate::auth::Identity;
use crate::locks::{read, write};

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
    /// cross-domain routing on).
    pub(super) async fn open_gateways(&self, env: &Envelope, origin: &Origin) {
        let Some(starter) = self.inner.gateways.starter.get() else {
            return;
        };
        if matches!(origin, Origin::Node { .. }) {
            return;
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
            if domain.is_empty() || self.gateway(domain).is_some() {
                continue;
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
                // Opened meanwhile by another message.
                Err(RouteError::Conflict(_)) => {}
                Err(e) => tracing::warn!(domain, error = %e, "no gateway to another domain"),
            }
        }
    }

    /// Routes to `to`, an address of another domain: into that domain's gateway session.
    pub(super) fn route_remote(
        &self,
        env: &Envelope,
        to: &str,
        addr: &AddressRef<'_>,
        origin: &Origin,
        pending: &mut Pending,
    ) -> Result<Option<Envelope>, RouteError> {
        if let Origin::Node { domain, .. } = origin {
            return Err(RouteError::Forbidden(format!(
                "a node session of {domain} may only reach addresses of {}",
                self.inner.domain
            )));
        }
        let domain = remote_domain(addr.authority());
        match self.gateway(domain) {
            Some(gateway) => self
                .deliver(&gateway, to, env.shared_json(), pending)
                .map(|()| None),
            None => Err(RouteError::NoRouteToDomain(domain.to_owned())),
        }
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
