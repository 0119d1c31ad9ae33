//! Matching room events against a ruma `RoomEventFilter` (`types`, `not_types`, `senders`,
//! `not_senders`, `rooms`, `not_rooms`), as `/messages`, `/context` and `/sync` apply it. Type
//! patterns may end in `*`.

use ruma::api::client::filter::RoomEventFilter;

use crate::rooms::Pdu;

fn type_matches(pattern: &str, kind: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => kind.starts_with(prefix),
        None => pattern == kind,
    }
}

/// Whether `pdu` passes `filter`.
pub(crate) fn matches(filter: &RoomEventFilter, pdu: &Pdu) -> bool {
    let kind = pdu.kind().to_string();
    let room = &pdu.fields.room_id;
    filter
        .types
        .as_ref()
        .is_none_or(|types| types.iter().any(|t| type_matches(t, &kind)))
        && !filter.not_types.iter().any(|t| type_matches(t, &kind))
        && filter
            .senders
            .as_ref()
            .is_none_or(|senders| senders.iter().any(|s| s == pdu.sender()))
        && !filter.not_senders.iter().any(|s| s == pdu.sender())
        && filter
            .rooms
            .as_ref()
            .is_none_or(|rooms| rooms.contains(room))
        && !filter.not_rooms.contains(room)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_patterns_match_prefixes_with_a_star_only() {
        assert!(type_matches("m.room.*", "m.room.message"));
        assert!(type_matches("m.room.message", "m.room.message"));
        assert!(!type_matches("m.room.message", "m.room.messages"));
        assert!(!type_matches("m.call.*", "m.room.message"));
    }
}
