//! Addresses claimed by application services (`rethink_namespaces` of their registrations,
//! `crate::appservice`). Each service with reTHINK namespaces has a session of its own, with the
//! runtime URL `hyperty-runtime://<domain>/appservice/<id>`; a message for an address matching
//! one of its patterns (`slack://*`, `hyperty://legacy.example/*`) is put in that session's
//! outbox (persisted and bounded like any), which the service's transaction queue drains.
//!
//! Who gets an address: a service claiming it *exclusively* first; else the session that
//! allocated it; else a service claiming it non-exclusively. An exclusive claim also keeps
//! runtimes from allocating or sending from such addresses. What a service sends enters with
//! [`Origin::AppService`]: from its runtime URL or an address its patterns claim only.
//!
//! WebAssembly connectors claim the same way: the patterns of their `namespaces` (entries with
//! `*`) are exclusive claims routed to their stub session ([`Bus::set_stub_claims`]), and what
//! they send from such an address passes the same [`Bus::may_send_as`] check.
//!
//! The services' claims in force are replaced as a whole ([`Bus::set_claims`]) when the
//! registrations are (re)loaded; a connector's when its stub starts.

use std::sync::Arc;

use rethink_connectors::namespaces::RethinkNamespace;

use super::{Bus, Origin, RouteError, Session};
use crate::auth::Identity;
use crate::locks::{lock, read, write};

/// One pattern of one service.
#[derive(Debug, Clone)]
pub struct Claim {
    /// The service's id (named in refusals).
    pub service: Arc<str>,
    pub namespace: RethinkNamespace,
    /// Where messages for matching addresses go.
    pub session: Arc<Session>,
}

/// The claims in force.
#[derive(Debug, Default)]
pub(super) struct Claims {
    /// Services' and connectors' claims together, as matched.
    list: std::sync::RwLock<Arc<Vec<Claim>>>,
    /// The two sources of claims.
    sources: std::sync::Mutex<Sources>,
}

/// Services' claims (replaced at each reload) and each connector's, by name.
#[derive(Debug, Default)]
struct Sources {
    services: Vec<Claim>,
    connectors: std::collections::BTreeMap<String, Vec<Claim>>,
}

impl Claims {
    /// Replaces the services' claims (`None`: kept) or connector `stub`'s, and the list in force.
    fn set(&self, services: Option<Vec<Claim>>, stub: Option<(&str, Vec<Claim>)>) {
        let mut sources = lock(&self.sources);
        if let Some(services) = services {
            sources.services = services;
        }
        if let Some((name, claims)) = stub {
            sources.connectors.insert(name.to_owned(), claims);
        }
        let all: Vec<Claim> = sources
            .services
            .iter()
            .chain(sources.connectors.values().flatten())
            .cloned()
            .collect();
        *write(&self.list) = Arc::new(all);
    }
}

impl Bus {
    /// The runtime URL of the session of application service `id`.
    pub fn appservice_runtime_url(&self, id: &str) -> String {
        format!("hyperty-runtime://{}/appservice/{id}", self.inner.domain)
    }

    /// The session of application service `id`: the one restored from the store if there is
    /// one (its outbox kept), or a new one whose identity is `subject` (the service's sender
    /// user, which policies see as the owner's user).
    pub async fn open_appservice(
        &self,
        id: &str,
        subject: String,
    ) -> Result<Arc<Session>, RouteError> {
        let url = self.appservice_runtime_url(id);
        if let Some(s) = self.session_by_runtime(&url) {
            return Ok(s);
        }
        let identity = Identity {
            subject: Some(subject),
            runtime: Some(url.clone()),
            expires_at: None,
        };
        Ok(self.open(&url, identity).await?.0)
    }

    /// Replaces the application services' claims in force.
    pub fn set_claims(&self, claims: Vec<Claim>) {
        self.inner.claims.set(Some(claims), None);
    }

    /// Replaces the claims of connector `name` (its namespace patterns, to its stub session).
    pub fn set_stub_claims(&self, name: &str, claims: Vec<Claim>) {
        self.inner.claims.set(None, Some((name, claims)));
    }

    fn claims(&self) -> Arc<Vec<Claim>> {
        Arc::clone(&read(&self.inner.claims.list))
    }

    /// The exclusive claim on `address`, if any.
    pub fn exclusive_claim(&self, address: &str) -> Option<Claim> {
        self.claims()
            .iter()
            .find(|c| c.namespace.exclusive && c.namespace.matches(address))
            .cloned()
    }

    /// The session a message for `address` goes to because of a claim: an exclusive claim, or
    /// a non-exclusive one when no session allocated the address.
    pub(super) fn claimed_route(&self, address: &str) -> Option<Arc<Session>> {
        let claims = self.claims();
        if claims.is_empty() {
            return None;
        }
        let matching = || claims.iter().filter(|c| c.namespace.matches(address));
        if let Some(c) = matching().find(|c| c.namespace.exclusive) {
            return Some(Arc::clone(&c.session));
        }
        if self.inner.book.owner_of(address).is_some() {
            return None;
        }
        matching().next().map(|c| Arc::clone(&c.session))
    }

    /// The owner of `address` as routing sees it (claims included).
    pub(super) fn owner_or_claimant(&self, address: &str) -> Option<Arc<Session>> {
        self.claimed_route(address)
            .or_else(|| self.inner.book.owner_of(address))
    }

    /// Whether `session` (a service's or a connector's) may send from `from`: its runtime URL,
    /// or an address one of its patterns claims and no other claims exclusively.
    pub(super) fn may_send_as(&self, session: &Arc<Session>, from: &str) -> bool {
        if **session.runtime_url() == *from {
            return true;
        }
        let claims = self.claims();
        let mine = claims
            .iter()
            .any(|c| Arc::ptr_eq(&c.session, session) && c.namespace.matches(from));
        let others_exclusive = claims.iter().any(|c| {
            !Arc::ptr_eq(&c.session, session) && c.namespace.exclusive && c.namespace.matches(from)
        });
        mine && !others_exclusive
    }

    /// An address a runtime may not use: claimed exclusively by a service or a connector
    /// (other than the one sending).
    pub(super) fn reserved_for_service(&self, origin: &Origin, address: &str) -> bool {
        if matches!(origin, Origin::AppService(_)) {
            return false;
        }
        self.exclusive_claim(address).is_some_and(|claim| {
            !origin
                .session()
                .is_some_and(|s| Arc::ptr_eq(s, &claim.session))
        })
    }
}
