//! A served stub ([`Stub`]: its bytes, their sha256, what the check learnt, the operator's
//! metadata from `<name>.toml`) and its reTHINK catalogue descriptor ([`Stub::descriptor`]),
//! unsigned: the node signs it with its server key.
//!
//! The descriptor is the reTHINK `ProtocolStub` catalogue object (`objectName`, `version`,
//! `sourcePackageURL`, `sourcePackage`, `configuration`, `constraints`, `interworking`, ...) with
//! our additions `sha256`, `size` and `interface`; README.md ("The stub catalogue") documents
//! every field.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::validate::Checked;

/// The largest integer canonical JSON (and so a signed descriptor) may hold: 2^53 - 1.
const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// The operator's metadata for a stub (`<name>.toml` beside `<name>.wasm`); every key is
/// optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StubMeta {
    /// The stub's own version (default: the `rethink:stub` version it was built against).
    pub version: Option<String>,
    pub description: Option<String>,
    /// reTHINK's `interworking`: whether the stub talks to a non-reTHINK system (default false).
    pub interworking: Option<bool>,
    /// reTHINK's `constraints` (default `{"browser": true, "node": true}`).
    pub constraints: Option<Map<String, Value>>,
    /// Entries added to `configuration` (the node's own `url` and `domain` win).
    #[serde(default)]
    pub configuration: Map<String, Value>,
    /// Entries added to `sourcePackage` (the node's own keys win).
    #[serde(default)]
    pub source_package: Map<String, Value>,
}

/// Why a metadata file was refused.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("{0}")]
    Toml(#[from] toml::de::Error),
    #[error(
        "`{0}` holds a value a signed descriptor cannot carry (a float, a date or an integer beyond 2^53)"
    )]
    NotCanonical(String),
}

impl StubMeta {
    /// Parses `<name>.toml`. Floats, dates and integers beyond 2^53 are refused: the descriptor
    /// is signed as canonical JSON, which has none of them.
    pub fn parse(text: &str) -> Result<Self, MetaError> {
        let meta: StubMeta = toml::from_str(text)?;
        let tables = [
            ("constraints", meta.constraints.as_ref()),
            ("configuration", Some(&meta.configuration)),
            ("source_package", Some(&meta.source_package)),
        ];
        for (name, table) in tables {
            if let Some(table) = table {
                for (key, value) in table {
                    if !canonical(value) {
                        return Err(MetaError::NotCanonical(format!("{name}.{key}")));
                    }
                }
            }
        }
        Ok(meta)
    }
}

fn canonical(value: &Value) -> bool {
    match value {
        Value::Number(n) => n
            .as_i64()
            .is_some_and(|i| (-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(&i)),
        Value::Array(items) => items.iter().all(canonical),
        // toml's dates deserialize as an object with one private key.
        Value::Object(map) => {
            !map.contains_key("$__toml_private_datetime") && map.values().all(canonical)
        }
        Value::Null | Value::Bool(_) | Value::String(_) => true,
    }
}

/// A stub runs in browsers (after `jco transpile`) and in the node (wasmtime).
fn default_constraints() -> Map<String, Value> {
    let mut c = Map::new();
    c.insert("browser".into(), Value::Bool(true));
    c.insert("node".into(), Value::Bool(true));
    c
}

/// Where a served stub comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Built into the node (`default`).
    BuiltIn,
    /// `<stubs.dir>/<name>.wasm`.
    File(std::path::PathBuf),
}

/// A stub the catalogue serves.
#[derive(Debug)]
pub struct Stub {
    name: String,
    bytes: Bytes,
    sha256: String,
    checked: Checked,
    meta: StubMeta,
    origin: Origin,
}

/// What the node adds to every descriptor.
#[derive(Debug, Clone, Copy)]
pub struct Site<'a> {
    /// The node's public base URL, without a trailing slash (`https://node.example.com`).
    pub base_url: &'a str,
    /// The node's WebSocket URL (`wss://node.example.com/ws`).
    pub ws_url: &'a str,
    /// The node's reTHINK domain.
    pub domain: &'a str,
}

/// The path of the descriptor of stub `name`.
pub fn descriptor_path(name: &str) -> String {
    format!("/.well-known/protocolstub/{name}")
}

/// The path the bytes of stub `name` with hash `sha256` are served at (content-addressed).
pub fn package_path(name: &str, sha256: &str) -> String {
    format!("/.well-known/protocolstub/{name}/sha256/{sha256}.wasm")
}

/// The lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

impl Stub {
    /// A stub from bytes that passed the check.
    pub fn new(
        name: String,
        bytes: Bytes,
        checked: Checked,
        meta: StubMeta,
        origin: Origin,
    ) -> Self {
        let sha256 = sha256_hex(&bytes);
        Self {
            name,
            bytes,
            sha256,
            checked,
            meta,
            origin,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The component's bytes (a cheap clone).
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The lowercase hex sha256 of the bytes.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    pub fn checked(&self) -> &Checked {
        &self.checked
    }

    pub fn meta(&self) -> &StubMeta {
        &self.meta
    }

    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// The stub's version: the operator's, else the `rethink:stub` version it was built against.
    pub fn version(&self) -> &str {
        self.meta
            .version
            .as_deref()
            .unwrap_or(&self.checked.package_version)
    }

    /// The unsigned reTHINK descriptor of this stub as served by the node `site`.
    pub fn descriptor(&self, site: &Site<'_>) -> Map<String, Value> {
        let mut configuration = self.meta.configuration.clone();
        configuration.insert("url".into(), Value::String(site.ws_url.to_owned()));
        configuration.insert("domain".into(), Value::String(site.domain.to_owned()));
        let mut source_package = self.meta.source_package.clone();
        source_package.insert("sourceCodeClassname".into(), json!(self.name));
        source_package.insert("encoding".into(), json!("wasm-component"));
        source_package.insert("sha256".into(), json!(self.sha256));
        let constraints = self
            .meta
            .constraints
            .clone()
            .unwrap_or_else(default_constraints);
        let interface = format!(
            "rethink:stub/{}@{}",
            self.checked.world.name(),
            self.checked.package_version
        );
        let description =
            self.meta.description.clone().unwrap_or_else(|| {
                format!("reTHINK protocol stub `{}` of {}", self.name, site.domain)
            });
        let mut d = Map::new();
        d.insert("type".into(), json!("ProtocolStub"));
        d.insert("objectName".into(), json!(self.name));
        d.insert("description".into(), json!(description));
        d.insert("language".into(), json!("wasm-component"));
        d.insert("version".into(), json!(self.version()));
        d.insert("interface".into(), json!(interface));
        d.insert(
            "sourcePackageURL".into(),
            json!(format!(
                "{}{}",
                site.base_url,
                package_path(&self.name, &self.sha256)
            )),
        );
        d.insert("sourcePackage".into(), Value::Object(source_package));
        d.insert("sha256".into(), json!(self.sha256));
        d.insert("size".into(), json!(self.bytes.len()));
        d.insert("configuration".into(), Value::Object(configuration));
        d.insert("constraints".into(), Value::Object(constraints));
        d.insert(
            "interworking".into(),
            json!(self.meta.interworking.unwrap_or(false)),
        );
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::validate::World;

    const SITE: Site<'static> = Site {
        base_url: "https://node.example.com",
        ws_url: "wss://node.example.com/ws",
        domain: "example.com",
    };

    fn stub(meta: StubMeta) -> Stub {
        Stub::new(
            "chat".into(),
            Bytes::from_static(b"component bytes"),
            Checked {
                package_version: "0.1.0".into(),
                world: World::ProtocolStub,
            },
            meta,
            Origin::BuiltIn,
        )
    }

    #[test]
    fn the_descriptor_has_the_fields_of_a_rethink_protocol_stub() {
        let d = Value::Object(stub(StubMeta::default()).descriptor(&SITE));
        let sha = sha256_hex(b"component bytes");
        assert_eq!(sha.len(), 64);
        let expected = json!({
            "type": "ProtocolStub",
            "objectName": "chat",
            "description": "reTHINK protocol stub `chat` of example.com",
            "language": "wasm-component",
            "version": "0.1.0",
            "interface": "rethink:stub/protocol-stub@0.1.0",
            "sourcePackageURL": format!("https://node.example.com/.well-known/protocolstub/chat/sha256/{sha}.wasm"),
            "sourcePackage": {"sourceCodeClassname": "chat", "encoding": "wasm-component", "sha256": sha},
            "sha256": sha,
            "size": 15,
            "configuration": {"url": "wss://node.example.com/ws", "domain": "example.com"},
            "constraints": {"browser": true, "node": true},
            "interworking": false,
        });
        assert_eq!(d, expected);
    }

    #[test]
    fn metadata_adds_to_the_descriptor_but_cannot_replace_the_nodes_own_entries() {
        let meta = StubMeta::parse(
            r#"
            version = "2.1.0"
            description = "Chat with example.org"
            interworking = true
            [constraints]
            browser = false
            [configuration]
            url = "wss://evil.example/ws"
            room = "lobby"
            retries = 5
            [source_package]
            sha256 = "forged"
            author = "ops@example.com"
            "#,
        )
        .expect("valid metadata");
        let d = stub(meta).descriptor(&SITE);
        assert_eq!(d["version"], "2.1.0");
        assert_eq!(d["description"], "Chat with example.org");
        assert_eq!(d["interworking"], true);
        assert_eq!(d["constraints"], json!({"browser": false}));
        assert_eq!(
            d["configuration"],
            json!({"url": "wss://node.example.com/ws", "domain": "example.com", "room": "lobby", "retries": 5})
        );
        assert_eq!(d["sourcePackage"]["sha256"], d["sha256"]);
        assert_eq!(d["sourcePackage"]["author"], "ops@example.com");
    }

    #[test]
    fn metadata_a_signed_descriptor_cannot_carry_is_refused() {
        for (text, key) in [
            ("[configuration]\nratio = 0.5", "configuration.ratio"),
            (
                "[configuration]\nbig = 9007199254740993",
                "configuration.big",
            ),
            ("[constraints]\nsince = 2026-01-01", "constraints.since"),
        ] {
            match StubMeta::parse(text) {
                Err(MetaError::NotCanonical(k)) => assert_eq!(k, key),
                other => panic!("{text}: {other:?}"),
            }
        }
        assert!(matches!(
            StubMeta::parse("colour = \"blue\""),
            Err(MetaError::Toml(_))
        ));
    }
}
