//! Namespaces: which Matrix users, aliases and rooms (regexes) and which reTHINK addresses
//! (patterns with `*`) an application service claims, and whether exclusively.

use regex::Regex;
use rethink_proto::{AddressPattern, PatternError};

/// One `{regex, exclusive}` entry of `namespaces.users`, `.aliases` or `.rooms`.
#[derive(Debug, Clone)]
pub struct Namespace {
    pub regex: Regex,
    pub exclusive: bool,
}

/// One `{pattern, exclusive}` entry of `rethink_namespaces`: a reTHINK address pattern where
/// `*` stands for any run of characters (`slack://*`, `hyperty://legacy.example/*`), matched by
/// `rethink_proto`'s [`AddressPattern`] (the matcher WebAssembly connectors' namespaces use too).
#[derive(Debug, Clone)]
pub struct RethinkNamespace {
    pattern: AddressPattern,
    pub exclusive: bool,
}

/// Why a `rethink_namespaces` pattern is refused.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NamespaceError(#[from] PatternError);

impl RethinkNamespace {
    /// A pattern must be an address (`scheme://...`).
    pub fn new(pattern: &str, exclusive: bool) -> Result<Self, NamespaceError> {
        Ok(Self {
            pattern: AddressPattern::parse(pattern)?,
            exclusive,
        })
    }

    /// A namespace of a pattern already checked (a WebAssembly connector's).
    pub fn from_pattern(pattern: AddressPattern, exclusive: bool) -> Self {
        Self { pattern, exclusive }
    }

    /// The pattern as written.
    pub fn pattern(&self) -> &str {
        self.pattern.as_str()
    }

    /// Whether `address` matches (a glob over the whole address).
    pub fn matches(&self, address: &str) -> bool {
        self.pattern.matches(address)
    }
}

/// Everything a service claims.
#[derive(Debug, Clone, Default)]
pub struct Namespaces {
    pub users: Vec<Namespace>,
    pub aliases: Vec<Namespace>,
    pub rooms: Vec<Namespace>,
    pub rethink: Vec<RethinkNamespace>,
}

/// Which list of [`Namespaces`] an ID is matched against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    User,
    Alias,
    Room,
}

impl Namespaces {
    fn list(&self, kind: Kind) -> &[Namespace] {
        match kind {
            Kind::User => &self.users,
            Kind::Alias => &self.aliases,
            Kind::Room => &self.rooms,
        }
    }

    /// Whether `id` is in one of the namespaces of `kind`.
    pub fn matches(&self, kind: Kind, id: &str) -> bool {
        self.list(kind).iter().any(|ns| ns.regex.is_match(id))
    }

    /// Whether `id` is in an exclusive namespace of `kind`.
    pub fn exclusive(&self, kind: Kind, id: &str) -> bool {
        self.list(kind)
            .iter()
            .any(|ns| ns.exclusive && ns.regex.is_match(id))
    }

    /// Whether the reTHINK `address` is in one of the service's reTHINK namespaces.
    pub fn matches_address(&self, address: &str) -> bool {
        self.rethink.iter().any(|ns| ns.matches(address))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_whole_addresses() {
        let ns = RethinkNamespace::new("hyperty://legacy.example/*", true).expect("valid");
        assert!(ns.matches("hyperty://legacy.example/abc"));
        assert!(ns.matches("hyperty://legacy.example/"));
        assert!(!ns.matches("hyperty://other.example/abc"));
        let mid = RethinkNamespace::new("slack://*/user/*", false).expect("valid");
        assert!(mid.matches("slack://team/user/alice"));
        assert!(!mid.matches("slack://team/channel/x"));
        let exact = RethinkNamespace::new("domain://registry.example", false).expect("valid");
        assert!(exact.matches("domain://registry.example"));
        assert!(!exact.matches("domain://registry.example/x"));
        for bad in ["", "slack", "://x", "slack://", "sl ack://x"] {
            assert!(RethinkNamespace::new(bad, false).is_err(), "{bad:?}");
        }
    }
}
