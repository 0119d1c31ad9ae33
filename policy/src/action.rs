//! Which Cedar action a message type is.

/// The reTHINK message types that are Cedar actions of the same name.
pub const RETHINK_TYPES: [&str; 9] = [
    "create",
    "read",
    "update",
    "delete",
    "subscribe",
    "unsubscribe",
    "response",
    "forward",
    "execute",
];

/// The Matrix client actions (`Rethink::Action`s of the same name, in the group `matrix`).
pub const MATRIX_ACTIONS: [&str; 5] = [
    "matrix:send",
    "matrix:state",
    "matrix:invite",
    "matrix:join",
    "matrix:createRoom",
];

/// The action that stands for every custom message type.
pub(crate) const CUSTOM: &str = "message";

/// The id of the `Rethink::Action` a message type or Matrix action is decided as: the reTHINK
/// types and `matrix:*` actions keep their names; any other (custom) type is `"message"`, with
/// the real type in `context.message_type`.
pub fn action_name(message_type: &str) -> &str {
    if RETHINK_TYPES.contains(&message_type) || message_type.starts_with("matrix:") {
        message_type
    } else {
        CUSTOM
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_map_to_actions() {
        assert_eq!(action_name("update"), "update");
        assert_eq!(action_name("response"), "response");
        assert_eq!(action_name("matrix:send"), "matrix:send");
        assert_eq!(action_name("PING"), "message");
        // Groups are not reachable by naming them as a type.
        assert_eq!(action_name("any"), "message");
        assert_eq!(action_name("Create"), "message");
    }
}
