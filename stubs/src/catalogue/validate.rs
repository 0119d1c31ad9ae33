//! The check a component passes before the catalogue serves it: the narrow [`Validator`] handle
//! (the node can plug the wasmtime host's full check in), and [`Structural`], the check made with
//! wasmparser alone: a valid component whose imports are the `rethink:stub` interfaces of one
//! known version (or `wasi:*`) and whose exports include the `protocol-stub` world's functions.

use std::fmt::Debug;

use wasmparser::{Encoding, Parser, Payload, Validator as WasmValidator, WasmFeatures};

/// The versions of the `rethink:stub` package this node knows.
pub const KNOWN_VERSIONS: &[&str] = &["0.1.0"];

/// The interfaces of the `rethink:stub` package a component may import.
const INTERFACES: &[&str] = &["types", "bus", "host", "net", "net-events", "appservice"];

/// The functions the `protocol-stub` world exports.
const EXPORTS: &[&str] = &["init", "on-message", "on-network", "on-timer"];

/// Which world a checked component implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    ProtocolStub,
    Connector,
}

impl World {
    /// The world's name in the WIT package.
    pub fn name(self) -> &'static str {
        match self {
            World::ProtocolStub => "protocol-stub",
            World::Connector => "connector",
        }
    }
}

/// What a check learnt about an accepted component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The version of the `rethink:stub` package it was built against (`0.1.0`).
    pub package_version: String,
    pub world: World,
}

/// Why a component was refused.
#[derive(Debug, thiserror::Error)]
pub enum ValidationError {
    #[error("not a WebAssembly component (a core module or other bytes)")]
    NotComponent,
    #[error("invalid component: {0}")]
    Invalid(#[source] wasmparser::BinaryReaderError),
    #[error("it imports nothing from rethink:stub, so its interface version is unknown")]
    NoStubImport,
    #[error("it imports `{0}`, which the host does not provide")]
    ForeignImport(String),
    #[error("it was built against rethink:stub@{found}, this node knows {known:?}")]
    UnknownVersion {
        found: String,
        known: &'static [&'static str],
    },
    #[error("it imports rethink:stub in two versions ({0} and {1})")]
    MixedVersions(String, String),
    #[error("it does not export `{0}` (world protocol-stub)")]
    MissingExport(&'static str),
    /// Refused by a validator other than [`Structural`] (the wasmtime host's check).
    #[error("{0}")]
    Host(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The check every component passes before it is served. The node wires the wasmtime host's
/// check here once it has one; [`Structural`] is the check without wasmtime.
pub trait Validator: Send + Sync + Debug {
    fn check(&self, bytes: &[u8]) -> Result<Checked, ValidationError>;
}

/// The structural check with wasmparser: a valid component, imports only from `rethink:stub`
/// (one known version) and `wasi:*`, the world's exports present. It does not compare function
/// types with the WIT (the wasmtime host does).
#[derive(Debug, Clone, Copy, Default)]
pub struct Structural;

impl Validator for Structural {
    fn check(&self, bytes: &[u8]) -> Result<Checked, ValidationError> {
        if !Parser::is_component(bytes) {
            return Err(ValidationError::NotComponent);
        }
        WasmValidator::new_with_features(WasmFeatures::default())
            .validate_all(bytes)
            .map_err(ValidationError::Invalid)?;
        let (imports, exports) = top_level_names(bytes)?;
        let mut version: Option<String> = None;
        let mut connector = false;
        for import in &imports {
            if import.starts_with("wasi:") {
                continue;
            }
            let (interface, found) = import
                .strip_prefix("rethink:stub/")
                .and_then(|rest| rest.split_once('@'))
                .filter(|(interface, _)| INTERFACES.contains(interface))
                .ok_or_else(|| ValidationError::ForeignImport(import.clone()))?;
            connector |= interface == "appservice";
            match &version {
                Some(v) if v != found => {
                    return Err(ValidationError::MixedVersions(v.clone(), found.to_owned()));
                }
                Some(_) => {}
                None => version = Some(found.to_owned()),
            }
        }
        let package_version = version.ok_or(ValidationError::NoStubImport)?;
        if !KNOWN_VERSIONS.contains(&package_version.as_str()) {
            return Err(ValidationError::UnknownVersion {
                found: package_version,
                known: KNOWN_VERSIONS,
            });
        }
        if let Some(missing) = EXPORTS.iter().find(|e| !exports.iter().any(|x| x == *e)) {
            return Err(ValidationError::MissingExport(missing));
        }
        connector |= exports.iter().any(|e| e == "on-event");
        Ok(Checked {
            package_version,
            world: if connector {
                World::Connector
            } else {
                World::ProtocolStub
            },
        })
    }
}

/// The import and export names of the outermost component (not of components or modules nested
/// in it).
fn top_level_names(bytes: &[u8]) -> Result<(Vec<String>, Vec<String>), ValidationError> {
    let mut imports = Vec::new();
    let mut exports = Vec::new();
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(ValidationError::Invalid)? {
            Payload::Version { encoding, .. } => {
                if depth == 0 && encoding != Encoding::Component {
                    return Err(ValidationError::NotComponent);
                }
                depth += 1;
            }
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 1 => {
                for import in reader {
                    let import = import.map_err(ValidationError::Invalid)?;
                    // A type the world `use`s (the default stub's `envelope`, from
                    // `use types.{envelope}`) is imported by name too: not a capability.
                    if matches!(import.ty, wasmparser::ComponentTypeRef::Type(_)) {
                        continue;
                    }
                    imports.push(import.name.name.to_owned());
                }
            }
            Payload::ComponentExportSection(reader) if depth == 1 => {
                for export in reader {
                    let export = export.map_err(ValidationError::Invalid)?;
                    exports.push(export.name.name.to_owned());
                }
            }
            _ => {}
        }
    }
    Ok((imports, exports))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_default_passes() {
        let checked = Structural
            .check(super::super::DEFAULT_STUB)
            .expect("default passes");
        assert_eq!(checked.package_version, "0.1.0");
        assert_eq!(checked.world, World::ProtocolStub);
    }

    #[test]
    fn a_core_module_is_not_a_component() {
        // The 8-byte header of an empty core module.
        let module = b"\0asm\x01\0\0\0";
        assert!(matches!(
            Structural.check(module),
            Err(ValidationError::NotComponent)
        ));
        assert!(matches!(
            Structural.check(b"hello"),
            Err(ValidationError::NotComponent)
        ));
    }

    #[test]
    fn a_truncated_component_is_invalid() {
        let bytes = super::super::DEFAULT_STUB;
        let cut = &bytes[..bytes.len() - 3];
        assert!(matches!(
            Structural.check(cut),
            Err(ValidationError::Invalid(_))
        ));
    }
}
