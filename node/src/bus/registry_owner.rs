//! The node's check of what a runtime registers at the domain registry
//! (`domain://registry.<domain>`, a connector): a `create` or `update` whose `body.value`
//! names a hyperty (`hypertyURL`) or a data object (`url`) passes only if that address (or the
//! closest address above it) was allocated to the sending session, as the address book knows.
//! Otherwise it is refused with 403 before the registry sees it. The registry itself does not
//! know who owns what; the bus does, so the check is made here, on the way in.

use std::sync::Arc;

use rethink_proto::{Envelope, MessageType};
use serde::Deserialize;
use serde_json::Value;

use super::Bus;
use super::error::RouteError;
use super::session::Session;

#[derive(Deserialize, Default)]
#[serde(default)]
struct RegistryBody {
    value: Option<RegisteredValue>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RegisteredValue {
    #[serde(rename = "hypertyURL")]
    hyperty_url: Option<Value>,
    url: Option<Value>,
}

impl Bus {
    /// 403 unless the address `env` registers is owned by `session` (nothing to check for other
    /// message types, or a body without such an address: the registry answers those).
    pub(super) fn check_registration_owner(
        &self,
        env: &Envelope,
        session: Option<&Arc<Session>>,
    ) -> Result<(), RouteError> {
        if !matches!(env.kind(), MessageType::Create | MessageType::Update) {
            return Ok(());
        }
        // A body that does not read is the registry's to refuse (400, naming the field).
        let Ok(body) = env.body::<RegistryBody>() else {
            return Ok(());
        };
        let Some(value) = body.value else {
            return Ok(());
        };
        // As the registry reads it: a hyperty if `hypertyURL` is present, else a data object.
        let Some(url) = value.hyperty_url.or(value.url) else {
            return Ok(());
        };
        let Some(url) = url.as_str() else {
            return Ok(());
        };
        let owner = self.inner.book.owner_of(url);
        match (owner, session) {
            (Some(owner), Some(sender)) if Arc::ptr_eq(&owner, sender) => Ok(()),
            (_, Some(sender)) => Err(RouteError::Forbidden(format!(
                "{url} was not allocated to {}",
                sender.runtime_url()
            ))),
            (_, None) => Err(RouteError::Forbidden(format!(
                "{url} can be registered only by the runtime it was allocated to"
            ))),
        }
    }
}
