//! Matrix names of bus things: the virtual user of a hyperty (`@_hyperty_<id>:<server>`) and the
//! alias of a data object's room (`#_hyperty_comm.<id>:<server>`), both in the namespace the node
//! reserves ([`RESERVED_PREFIX`]).
//!
//! The address path is mapped to a valid localpart reversibly, as the spec's mapping from other
//! systems' identifiers suggests: `a-z 0-9 . - /` stay, `_` becomes `__`, an upper-case letter
//! `_` and its lower case, any other byte `=` and two hex digits.

use std::fmt::Write as _;

use rethink_proto::{AddressError, AddressRef};
use ruma::{OwnedRoomAliasId, OwnedUserId, RoomAliasId, ServerName, UserId};

/// Localparts with this prefix are the node's virtual users of hyperties (`M_EXCLUSIVE`).
pub const RESERVED_PREFIX: &str = "_hyperty_";

/// Why a bus address has no Matrix name.
#[derive(Debug, thiserror::Error)]
pub enum NameError {
    #[error("{address}: {source}")]
    Address {
        address: String,
        #[source]
        source: AddressError,
    },
    #[error("{0} has no path")]
    NoPath(String),
    #[error("{address}: {source}")]
    Identifier {
        address: String,
        #[source]
        source: ruma::IdParseError,
    },
}

fn encode(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        match b {
            b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'/' => out.push(char::from(b)),
            b'_' => out.push_str("__"),
            b'A'..=b'Z' => {
                out.push('_');
                out.push(char::from(b.to_ascii_lowercase()));
            }
            other => {
                let _ = write!(out, "={other:02x}");
            }
        }
    }
    out
}

/// The path of a bus address after its authority, without the leading `/`.
fn path_of(address: &str) -> Result<&str, NameError> {
    let parsed = AddressRef::parse(address).map_err(|source| NameError::Address {
        address: address.to_owned(),
        source,
    })?;
    let rest = address
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let path = rest
        .strip_prefix(parsed.authority())
        .unwrap_or_default()
        .trim_start_matches('/');
    if path.is_empty() {
        return Err(NameError::NoPath(address.to_owned()));
    }
    Ok(path)
}

/// The virtual user of a hyperty.
pub fn virtual_user(hyperty: &str, server: &ServerName) -> Result<OwnedUserId, NameError> {
    let localpart = format!("{RESERVED_PREFIX}{}", encode(path_of(hyperty)?));
    UserId::parse_with_server_name(localpart, server).map_err(|source| NameError::Identifier {
        address: hyperty.to_owned(),
        source,
    })
}

/// The alias of a data object's room.
pub fn object_alias(object: &str, server: &ServerName) -> Result<OwnedRoomAliasId, NameError> {
    RoomAliasId::parse(format!(
        "#{RESERVED_PREFIX}comm.{}:{server}",
        encode(path_of(object)?)
    ))
    .map_err(|source| NameError::Identifier {
        address: object.to_owned(),
        source,
    })
}

/// Whether `user` is one of the node's virtual users.
pub(super) fn is_virtual(user: &UserId) -> bool {
    user.localpart().starts_with(RESERVED_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyperty_addresses_map_to_reserved_localparts() {
        let server = <&ServerName>::try_from("example.com").unwrap();
        let user = virtual_user("hyperty://example.com/Chat_1+x", server).unwrap();
        assert_eq!(user.as_str(), "@_hyperty__chat__1=2bx:example.com");
        assert!(is_virtual(&user));
        assert!(virtual_user("hyperty://example.com", server).is_err());
        let alias = object_alias("comm://example.com/room-7", server).unwrap();
        assert_eq!(alias.as_str(), "#_hyperty_comm.room-7:example.com");
    }

    #[test]
    fn distinct_paths_stay_distinct() {
        assert_ne!(encode("A"), encode("_a"));
        assert_ne!(encode("a_"), encode("a__"));
        assert_eq!(encode("_a"), "__a");
        assert_eq!(encode("A"), "_a");
    }
}
