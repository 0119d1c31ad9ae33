//! The connectors built into this crate (their components are committed beside their source
//! in `guests/`, with their sha256): [`builtin_connector`] gives one by name.

/// The domain registry (`guests/registry`): see its crate documentation for its messages.
pub const REGISTRY_CONNECTOR: &[u8] = include_bytes!("../guests/registry/registry.wasm");

/// The archive (`guests/archive`): logs its namespace and followed addresses, answers history
/// queries.
pub const ARCHIVE_CONNECTOR: &[u8] = include_bytes!("../guests/archive/archive.wasm");

/// The names of the built-in connectors.
pub const BUILTIN_CONNECTORS: &[&str] = &["registry", "archive"];

/// The component of the built-in connector `name`, if there is one.
pub fn builtin_connector(name: &str) -> Option<&'static [u8]> {
    match name {
        "registry" => Some(REGISTRY_CONNECTOR),
        "archive" => Some(ARCHIVE_CONNECTOR),
        _ => None,
    }
}
