//! reTHINK address patterns: an address where `*` stands for any run of characters
//! (`slack://*`, `hyperty://legacy.example/*`, `domain://archive.example.com/*`), matched against
//! the whole address. One matcher for every part of the node that claims addresses by pattern:
//! the `rethink_namespaces` of application services and the `namespaces` of WebAssembly
//! connectors (routing, anti-spoofing, and the stub host's own check of what a connector sends
//! and listens on).

use std::fmt;

/// A valid address pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressPattern {
    text: String,
    /// The text split at each `*`.
    parts: Vec<String>,
}

/// Why a string is not an address pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("must be a reTHINK address pattern such as `slack://*`")]
    NoScheme,
    #[error("the scheme must be letters, digits, + - or .")]
    BadScheme,
    #[error("nothing after `://`: use `*` to claim a whole scheme")]
    Empty,
    #[error("must not contain spaces or control characters")]
    BadCharacter,
}

impl AddressPattern {
    /// Checks `text`: `scheme://` followed by something, no whitespace.
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        let Some((scheme, rest)) = text.split_once("://") else {
            return Err(PatternError::NoScheme);
        };
        if scheme.is_empty()
            || !scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        {
            return Err(PatternError::BadScheme);
        }
        if rest.is_empty() {
            return Err(PatternError::Empty);
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(PatternError::BadCharacter);
        }
        Ok(Self {
            text: text.to_owned(),
            parts: text.split('*').map(str::to_owned).collect(),
        })
    }

    /// Whether `text` is written as a pattern (holds a `*`) rather than as one address.
    pub fn is_pattern(text: &str) -> bool {
        text.contains('*')
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `address` matches (a glob over the whole address).
    pub fn matches(&self, address: &str) -> bool {
        let Some((first, rest)) = self.parts.split_first() else {
            return false;
        };
        let Some(mut tail) = address.strip_prefix(first.as_str()) else {
            return false;
        };
        let Some((last, middle)) = rest.split_last() else {
            return tail.is_empty();
        };
        for part in middle {
            match tail.find(part.as_str()) {
                Some(i) => tail = &tail[i + part.len()..],
                None => return false,
            }
        }
        tail.len() >= last.len() && tail.ends_with(last.as_str())
    }
}

impl fmt::Display for AddressPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_whole_addresses() {
        let p = AddressPattern::parse("hyperty://legacy.example/*").expect("valid");
        assert!(p.matches("hyperty://legacy.example/abc"));
        assert!(p.matches("hyperty://legacy.example/"));
        assert!(!p.matches("hyperty://other.example/abc"));
        let mid = AddressPattern::parse("slack://*/user/*").expect("valid");
        assert!(mid.matches("slack://team/user/alice"));
        assert!(!mid.matches("slack://team/channel/x"));
        let exact = AddressPattern::parse("domain://registry.example").expect("valid");
        assert!(exact.matches("domain://registry.example"));
        assert!(!exact.matches("domain://registry.example/x"));
        assert!(!AddressPattern::is_pattern("domain://registry.example"));
        assert!(AddressPattern::is_pattern("slack://*"));
        for bad in ["", "slack", "://x", "slack://", "sl ack://x", "slack://a b"] {
            assert!(AddressPattern::parse(bad).is_err(), "{bad:?}");
        }
    }
}
