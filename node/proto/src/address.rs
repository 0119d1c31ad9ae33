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
    /// A path segment that a URL normaliser (JavaScript's `new URL()`, RFC 3986 section 5.2.4)
    /// would remove or resolve: `.`, `..`, or either spelled with percent-encoded dots
    /// (`%2e`, `.%2E`, ...). Such an address names another address than the one it spells.
    #[error(
        "address is not canonical: path segment {0:?} is a dot segment; send the address without `.` or `..` segments"
    )]
    DotSegment(String),
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
            check_canonical_path(path)?;
            Ok(Self {
                raw: text,
                scheme,
                authority,
                path,
            })
        } else if rest.starts_with('/') && rest.len() > 1 {
            check_canonical_path(rest)?;
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

/// Refuses a path holding a dot segment, in any spelling a URL parser reads as one.
///
/// The WHATWG URL standard (what `new URL()` implements) reads a segment as `.` when it is `.`
/// or `%2e`, and as `..` when it is `..`, `.%2e`, `%2e.` or `%2e%2e`, case-insensitively; for
/// the special schemes (`http`, `ws`, ...) a `\` also separates segments. The path ends at `?`
/// or `#`. Allocation-free: this runs for every address of every message.
fn check_canonical_path(path: &str) -> Result<(), AddressError> {
    let end = path.find(['?', '#']).unwrap_or(path.len());
    for segment in path[..end].split(['/', '\\']) {
        if is_dot_segment(segment) {
            return Err(AddressError::DotSegment(segment.to_owned()));
        }
    }
    Ok(())
}

/// Whether `segment` is `.` or `..`, each dot possibly written `%2e` / `%2E`.
fn is_dot_segment(segment: &str) -> bool {
    let mut rest = segment.as_bytes();
    let mut dots = 0;
    while !rest.is_empty() {
        if rest[0] == b'.' {
            rest = &rest[1..];
        } else if rest.len() >= 3 && rest[0] == b'%' && rest[1] == b'2' && (rest[2] | 0x20) == b'e'
        {
            rest = &rest[3..];
        } else {
            return false;
        }
        dots += 1;
        if dots > 2 {
            return false;
        }
    }
    dots > 0
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
    fn refuses_dot_segments_in_every_spelling() {
        for text in [
            "hyperty-runtime://example.com/rA/../rB",
            "hyperty-runtime://example.com/rA/%2e%2e/rB",
            "hyperty-runtime://example.com/rA/%2E%2E/rB",
            "hyperty-runtime://example.com/rA/.%2e/rB",
            "hyperty-runtime://example.com/rA/%2E./rB",
            "hyperty://example.com/mine/../other",
            "hyperty://example.com/mine/./x",
            "hyperty://example.com/mine/%2e/x",
            "hyperty://example.com/mine/..",
            "hyperty://example.com/mine/%2e%2E",
            "hyperty://example.com/..",
            "hyperty://example.com/a/..?q=1",
            "hyperty://example.com/a/..#frag",
            "http://example.com/a\\..\\b",
            "mn:/a/../session",
        ] {
            assert!(
                matches!(AddressRef::parse(text), Err(AddressError::DotSegment(_))),
                "{text}: {:?}",
                AddressRef::parse(text)
            );
        }
        assert_eq!(
            AddressRef::parse("hyperty://d/a/%2e%2e/b"),
            Err(AddressError::DotSegment("%2e%2e".into()))
        );
    }

    #[test]
    fn accepts_dots_that_are_not_whole_segments() {
        for text in [
            "hyperty://example.com/a.b",
            "hyperty://example.com/...",
            "hyperty://example.com/.hidden",
            "hyperty://example.com/a../b",
            "hyperty://example.com/%2e%2e%2e",
            "hyperty://example.com/%2ex",
            "hyperty://example.com/a?x=../b",
            "hyperty://example.com/a#../b",
            "hyperty://example.com//double",
            "domain://msg-node.example.com",
            "comm://example.com/obj/children/chat",
        ] {
            assert!(AddressRef::parse(text).is_ok(), "{text}");
        }
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
