//! Object addresses: the base object a derived address (`/changes`, `/subscription`,
//! `/children/<name>`) belongs to.

/// The base object address: `address` without a trailing `/changes`, `/subscription` or
/// `/children/<name>`. Other addresses are returned unchanged.
pub fn object_base(address: &str) -> &str {
    if let Some(base) = address
        .strip_suffix("/changes")
        .or_else(|| address.strip_suffix("/subscription"))
    {
        return base;
    }
    if let Some((base, name)) = address.rsplit_once("/children/")
        && !name.is_empty()
        && !name.contains('/')
    {
        return base;
    }
    address
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_derived_suffixes() {
        let base = "comm://example.com/chat-1";
        assert_eq!(object_base(base), base);
        assert_eq!(object_base("comm://example.com/chat-1/changes"), base);
        assert_eq!(object_base("comm://example.com/chat-1/subscription"), base);
        assert_eq!(object_base("comm://example.com/chat-1/children/msgs"), base);
        // Only one trailing part, and only a whole one.
        assert_eq!(
            object_base("comm://example.com/chat-1/children/msgs/x"),
            "comm://example.com/chat-1/children/msgs/x"
        );
        assert_eq!(
            object_base("comm://example.com/chat-1/children/"),
            "comm://example.com/chat-1/children/"
        );
        assert_eq!(
            object_base("comm://example.com/exchanges"),
            "comm://example.com/exchanges"
        );
    }
}
