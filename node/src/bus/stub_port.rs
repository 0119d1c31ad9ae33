//! Sessions of the protocol stubs the node runs (`crate::stubhost`): a stub is a participant of
//! the bus like a runtime. Its session has the runtime URL `hyperty-runtime://<domain>/stub/<name>`
//! (in a cluster `.../stub/<name>/<node id>`: every node runs its own instance of each stub, a
//! session each, and a message for a stub's address goes to the instance of the node it
//! reaches, which holds the address in its own address book; the runtime URL, unique in the
//! cluster, would otherwise be one node's and keep the others from starting) and the addresses
//! the operator gave it, claimed like allocations; messages for them land in
//! its outbox (persisted, bounded: a full outbox answers 503), which an in-process connection
//! drains into the stub. A session restored at start (the node was stopped) is taken over with
//! the messages still in its outbox.

use std::sync::Arc;

use rethink_proto::AddressRef;

use super::session::{Allocation, Session};
use super::{Bus, RouteError};
use crate::auth::Identity;
use crate::locks::{lock, read};
use crate::store::StoreOp;

impl Bus {
    /// The runtime URL of the stub `name`'s session.
    pub fn stub_runtime_url(&self, name: &str) -> String {
        match &self.inner.node_id {
            Some(node) => format!("hyperty-runtime://{}/stub/{name}/{node}", self.inner.domain),
            None => format!("hyperty-runtime://{}/stub/{name}", self.inner.domain),
        }
    }

    /// The session of the stub `name`, with `addresses` claimed for it: the session restored
    /// from the store if there is one (its outbox kept), or a new one. An address of another
    /// domain, or owned by another session, is refused (`Forbidden`, `Conflict`).
    pub async fn open_stub(
        &self,
        name: &str,
        addresses: &[String],
    ) -> Result<Arc<Session>, RouteError> {
        let runtime_url = self.stub_runtime_url(name);
        let existing = read(&self.inner.sessions)
            .values()
            .find(|s| **s.runtime_url() == *runtime_url)
            .cloned();
        let session = match existing {
            Some(s) => s,
            None => self.open(&runtime_url, Identity::anonymous()).await?.0,
        };
        let mut fresh = Vec::new();
        for a in addresses {
            let parsed = AddressRef::parse(a).map_err(|source| RouteError::BadAddress {
                what: "stub address",
                source,
            })?;
            if !parsed.is_in_domain(&self.inner.domain) {
                return Err(RouteError::Forbidden(format!(
                    "stub address {a} is not in domain {}",
                    self.inner.domain
                )));
            }
            let address: Arc<str> = Arc::from(a.as_str());
            let mine = lock(&session.state)
                .allocations
                .iter()
                .any(|x| x.address == address);
            if mine {
                continue;
            }
            if !self.inner.book.claim(Arc::clone(&address), &session) {
                return Err(RouteError::Conflict(format!(
                    "stub address {a} belongs to another session"
                )));
            }
            fresh.push(address);
        }
        if !fresh.is_empty() {
            lock(&session.state)
                .allocations
                .extend(fresh.iter().map(|a| Allocation {
                    address: Arc::clone(a),
                    key: None,
                }));
            self.submit(StoreOp::AddAddresses {
                session: Arc::clone(session.key()),
                addresses: fresh.iter().map(|a| a.to_string()).collect(),
                key: None,
            })
            .await;
        }
        Ok(session)
    }
}
