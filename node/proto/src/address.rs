//! reTHINK addresses: `scheme://authority/path` and the authority-less `scheme:/path` form used by
//! node-internal endpoints such as `mn:/session`.
//!
//! Parsing borrows from the input and allocates nothing; it checks only what routing relies on
//! (a scheme, an authority or an absolute path, no whitespace or control characters).

use std::fmt;

/// Longest address accepted, in bytes. Longer strings are refused rather than stored as keys.
pub const MAX_ADDRESS_LEN: usize = 2048;

/// A syntactically valid address, borrowed from the text it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressRef<'a> {
    raw: &'a str,
    scheme: &'a str,
    authority: &'a str,
    path: &'a str,
}

/// Why a string is not an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("address is empty")]
    Empty,
    #[error("address is longer than {MAX_ADDRESS_LEN} bytes")]
    TooLong,
    #[error("address has no scheme (expected scheme://authority/path)")]
    NoScheme,
    #[error("address scheme {0:?} is not valid")]
    BadScheme(String),
    #[error("address has an empty authority")]
    EmptyAuthority,
    #[error("address contains whitespace or a control character")]
    BadCharacter,
}

impl<'a> AddressRef<'a> {
    /// Parses `text` as an address.
    pub fn parse(text: &'a str) -> Result<Self, AddressError> {
        if text.is_empty() {
            return Err(AddressError::Empty);
        }
        if text.len() > MAX_ADDRESS_LEN {
            return Err(AddressError::TooLong);
        }
        if text.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(AddressError::BadCharacter);
        }
        let colon = text.find(':').ok_or(AddressError::NoScheme)?;
        let scheme = &text[..colon];
        let valid_scheme = scheme
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic())
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
        if !valid_scheme {
            return Err(if scheme.is_empty() {
                AddressError::NoScheme
            } else {
                AddressError::BadScheme(scheme.to_owned())
            });
        }
        let rest = &text[colon + 1..];
        if let Some(hier) = rest.strip_prefix("//") {
            let (authority, path) = match hier.find('/') {
                Some(slash) => (&hier[..slash], &hier[slash..]),
                None => (hier, ""),
            };
            if authority.is_empty() {
                return Err(AddressError::EmptyAuthority);
            }
            Ok(Self {
                raw: text,
                scheme,
                authority,
                path,
            })
        } else if rest.starts_with('/') && rest.len() > 1 {
            Ok(Self {
                raw: text,
                scheme,
                authority: "",
                path: rest,
            })
        } else {
            Err(AddressError::NoScheme)
        }
    }

    /// The whole address as given.
    pub fn as_str(&self) -> &'a str {
        self.raw
    }

    /// The scheme, without `://`.
    pub fn scheme(&self) -> &'a str {
        self.scheme
    }

    /// The authority (usually a domain, `msg-node.D`, or an identity provider); empty for
    /// `scheme:/path` addresses.
    pub fn authority(&self) -> &'a str {
        self.authority
    }

    /// The path, starting with `/`, or empty.
    pub fn path(&self) -> &'a str {
        self.path
    }

    /// Whether this address belongs to `domain`: its authority is the domain or a subdomain of it
    /// (`msg-node.D`, `registry.D`), or it has no authority (node-internal addresses).
    pub fn is_in_domain(&self, domain: &str) -> bool {
        let auth = self.authority;
        auth.is_empty()
            || auth == domain
            || (auth.len() > domain.len()
                && auth.ends_with(domain)
                && auth.as_bytes()[auth.len() - domain.len() - 1] == b'.')
    }

    /// Whether `self` is `prefix` or lies below it (`prefix/...`).
    pub fn is_at_or_below(&self, prefix: &str) -> bool {
        is_at_or_below(self.raw, prefix)
    }
}

/// Whether `addr` equals `prefix` or continues it with a `/` (so `hyperty://d/a/b` is below
/// `hyperty://d/a`, but `hyperty://d/ab` is not).
pub fn is_at_or_below(addr: &str, prefix: &str) -> bool {
    match addr.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || prefix.ends_with('/'),
        None => false,
    }
}

impl fmt::Display for AddressRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hierarchical_addresses() {
        let a = AddressRef::parse("hyperty://example.com/aaa-1").unwrap();
        assert_eq!(a.scheme(), "hyperty");
        assert_eq!(a.authority(), "example.com");
        assert_eq!(a.path(), "/aaa-1");
        let b = AddressRef::parse("domain://registry.example.com").unwrap();
        assert_eq!(b.authority(), "registry.example.com");
        assert_eq!(b.path(), "");
    }

    #[test]
    fn parses_authority_less_addresses() {
        let a = AddressRef::parse("mn:/session").unwrap();
        assert_eq!(a.scheme(), "mn");
        assert_eq!(a.authority(), "");
        assert_eq!(a.path(), "/session");
    }

    #[test]
    fn refuses_malformed_addresses() {
        assert_eq!(AddressRef::parse(""), Err(AddressError::Empty));
        assert_eq!(
            AddressRef::parse("not an address"),
            Err(AddressError::BadCharacter)
        );
        assert_eq!(AddressRef::parse("plainword"), Err(AddressError::NoScheme));
        assert_eq!(
            AddressRef::parse("hyperty:///x"),
            Err(AddressError::EmptyAuthority)
        );
        assert_eq!(
            AddressRef::parse("1abc://x"),
            Err(AddressError::BadScheme("1abc".into()))
        );
        assert_eq!(AddressRef::parse("mn:"), Err(AddressError::NoScheme));
        let long = format!("hyperty://d/{}", "x".repeat(MAX_ADDRESS_LEN));
        assert_eq!(AddressRef::parse(&long), Err(AddressError::TooLong));
    }

    #[test]
    fn domain_membership_includes_subdomains_only_on_a_dot() {
        let a = AddressRef::parse("domain://msg-node.example.com/sm").unwrap();
        assert!(a.is_in_domain("example.com"));
        let b = AddressRef::parse("hyperty://badexample.com/x").unwrap();
        assert!(!b.is_in_domain("example.com"));
        let c = AddressRef::parse("hyperty://other.org/x").unwrap();
        assert!(!c.is_in_domain("example.com"));
    }

    #[test]
    fn below_means_a_path_segment_boundary() {
        assert!(is_at_or_below("hyperty://d/a/b", "hyperty://d/a"));
        assert!(is_at_or_below("hyperty://d/a", "hyperty://d/a"));
        assert!(!is_at_or_below("hyperty://d/ab", "hyperty://d/a"));
    }
}
