//! The node's own addresses in its domain `D`: address allocation (current and phase-1 names),
//! the subscription manager, the domain registry and identity endpoints, and session control.

/// A node-owned endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `domain://msg-node.D/address-allocation` and `.../hyperty-address-allocation`.
    Allocation,
    /// `domain://msg-node.D/object-address-allocation` (phase 1: default scheme `comm`).
    ObjectAllocation,
    /// `domain://msg-node.D/sm`.
    Subscriptions,
    /// `domain://registry.D`.
    Registry,
    /// `domain://idm.D`.
    Identity,
    /// `mn:/session`.
    Session,
    /// Any other `domain://msg-node.D/...` address.
    OtherNode,
}

/// The node-owned addresses of one domain, precomputed.
#[derive(Debug, Clone)]
pub struct Endpoints {
    msg_node: String,
    allocation: String,
    hyperty_allocation: String,
    object_allocation: String,
    sm: String,
    registry: String,
    identity: String,
}

/// The session control address.
pub const SESSION: &str = "mn:/session";

impl Endpoints {
    pub fn new(domain: &str) -> Self {
        let msg_node = format!("domain://msg-node.{domain}");
        Self {
            allocation: format!("{msg_node}/address-allocation"),
            hyperty_allocation: format!("{msg_node}/hyperty-address-allocation"),
            object_allocation: format!("{msg_node}/object-address-allocation"),
            sm: format!("{msg_node}/sm"),
            registry: format!("domain://registry.{domain}"),
            identity: format!("domain://idm.{domain}"),
            msg_node,
        }
    }

    /// The endpoint `address` names, if it is one of the node's.
    pub fn classify(&self, address: &str) -> Option<Endpoint> {
        if address == SESSION {
            return Some(Endpoint::Session);
        }
        if !address.starts_with("domain://") {
            return None;
        }
        if address == self.allocation || address == self.hyperty_allocation {
            Some(Endpoint::Allocation)
        } else if address == self.object_allocation {
            Some(Endpoint::ObjectAllocation)
        } else if address == self.sm {
            Some(Endpoint::Subscriptions)
        } else if crate::address::is_at_or_below(address, &self.registry) {
            Some(Endpoint::Registry)
        } else if crate::address::is_at_or_below(address, &self.identity) {
            Some(Endpoint::Identity)
        } else if crate::address::is_at_or_below(address, &self.msg_node) {
            Some(Endpoint::OtherNode)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_current_and_legacy_names() {
        let e = Endpoints::new("example.com");
        let c = |a| e.classify(a);
        assert_eq!(
            c("domain://msg-node.example.com/address-allocation"),
            Some(Endpoint::Allocation)
        );
        assert_eq!(
            c("domain://msg-node.example.com/hyperty-address-allocation"),
            Some(Endpoint::Allocation)
        );
        assert_eq!(
            c("domain://msg-node.example.com/object-address-allocation"),
            Some(Endpoint::ObjectAllocation)
        );
        assert_eq!(
            c("domain://msg-node.example.com/sm"),
            Some(Endpoint::Subscriptions)
        );
        assert_eq!(c("domain://registry.example.com"), Some(Endpoint::Registry));
        assert_eq!(
            c("domain://msg-node.example.com/other"),
            Some(Endpoint::OtherNode)
        );
        assert_eq!(c("mn:/session"), Some(Endpoint::Session));
        assert_eq!(c("hyperty://example.com/x"), None);
        assert_eq!(c("domain://msg-node.other.org/sm"), None);
    }
}
