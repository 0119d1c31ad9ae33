//! `[connectors.<name>]`: WebAssembly connectors the node runs. A connector is run exactly like a
//! `[stubs.run.<name>]` instance (`crate::stubhost`: its own bus session, supervision, limits,
//! metrics), so validation turns each one into a [`StubRunConfig`] that joins `stubs.run`.
//!
//! - `component`: the `.wasm` file to run; absent, the built-in connector of the same name
//!   (`[connectors.registry]` alone runs the domain registry).
//! - `namespaces`: the reTHINK addresses of this domain it owns (it gets their messages, and
//!   sends only from them and the addresses below them: the host refuses anything else with 403
//!   before the bus's enforcement point sees it), and address patterns with `*`
//!   (`domain://archive.<domain>/*`, `slack://*`), claimed exclusively on the bus exactly as an
//!   application service's `rethink_namespaces` (`crate::bus::claims`); for a built-in, by default
//!   `domain://<name>.<domain>` (`domain://registry.<domain>`; the archive also gets
//!   `domain://archive.<domain>/log`).
//! - `config` (what `host.config` answers; `domain` is always added), `memory_mb`,
//!   `call_timeout_ms`, `mailbox`: as for stubs.
//! - `[connectors.<name>.matrix]`: its Matrix namespaces, in the terms of an application
//!   service registration: `users`, `aliases`, `rooms` (lists of regexes), `exclusive`
//!   (default `true`: ordinary users cannot register or take aliases there, `M_EXCLUSIVE`),
//!   `sender_localpart` (default the connector's name). It becomes a registration with id
//!   `connector.<name>` and no `url` ([`ConnectorMatrix`]), checked as a registration file is;
//!   the node gives it a fresh random `as_token` at every start, which only the host holds.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rethink_connectors::Registration;
use serde::{Deserialize, Serialize};

use super::stub_run::{RawStubRun, StubRunConfig, StubSource, validate_run};
use super::{ConfigError, invalid};

/// `[connectors.<name>]` as written.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConnector {
    pub component: Option<PathBuf>,
    pub namespaces: Option<Vec<String>>,
    pub config: BTreeMap<String, String>,
    pub memory_mb: Option<u32>,
    pub call_timeout_ms: Option<u64>,
    pub mailbox: Option<usize>,
    pub matrix: Option<RawConnectorMatrix>,
}

/// `[connectors.<name>.matrix]` as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConnectorMatrix {
    pub users: Vec<String>,
    pub aliases: Vec<String>,
    pub rooms: Vec<String>,
    pub exclusive: bool,
    pub sender_localpart: Option<String>,
}

impl PartialEq for ConnectorMatrix {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && format!("{:?}", self.registration) == format!("{:?}", other.registration)
    }
}

impl Eq for ConnectorMatrix {}

impl Default for RawConnectorMatrix {
    fn default() -> Self {
        Self {
            users: Vec::new(),
            aliases: Vec::new(),
            rooms: Vec::new(),
            exclusive: true,
            sender_localpart: None,
        }
    }
}

/// A connector's Matrix side: the connector (a `stubs.run` instance of that name) and its
/// registration (id `connector.<name>`, no `url`; `as_token` and `hs_token` are placeholders
/// the node replaces with random ones at start).
#[derive(Debug, Clone)]
pub struct ConnectorMatrix {
    pub name: String,
    pub registration: Registration,
}

/// The registration id of connector `name`'s Matrix side.
pub fn registration_id(name: &str) -> String {
    format!("connector.{name}")
}

/// The `[connectors.<name>.matrix]` blocks, as registrations.
pub(super) fn validate_connector_matrix(
    raw: &BTreeMap<String, RawConnector>,
) -> Result<Vec<ConnectorMatrix>, ConfigError> {
    let mut out = Vec::new();
    for (name, c) in raw {
        let Some(m) = &c.matrix else { continue };
        let field = format!("connectors.{name}.matrix");
        let list = |regexes: &[String]| {
            regexes
                .iter()
                .map(|r| serde_json::json!({"regex": r, "exclusive": m.exclusive}))
                .collect::<Vec<_>>()
        };
        // JSON is YAML: the registration parser checks it as it checks a file.
        let text = serde_json::json!({
            "id": registration_id(name),
            "as_token": "placeholder",
            "hs_token": "placeholder",
            "sender_localpart": m.sender_localpart.clone().unwrap_or_else(|| name.clone()),
            "rate_limited": false,
            "namespaces": {
                "users": list(&m.users),
                "aliases": list(&m.aliases),
                "rooms": list(&m.rooms),
            },
        })
        .to_string();
        let registration =
            Registration::parse(&field, &text).map_err(|e| invalid("connectors", e.to_string()))?;
        out.push(ConnectorMatrix {
            name: name.clone(),
            registration,
        });
    }
    Ok(out)
}

/// Checks `[connectors.*]`; `stubs` are the names `[stubs.run.*]` already uses.
pub(super) fn validate_connectors(
    raw: &BTreeMap<String, RawConnector>,
    domain: &str,
    stubs: &[StubRunConfig],
) -> Result<Vec<StubRunConfig>, ConfigError> {
    let mut out = Vec::new();
    for (name, c) in raw {
        let bad = |problem: String| invalid("connectors", format!("{name:?}: {problem}"));
        if stubs.iter().any(|s| s.name == *name) {
            return Err(bad("a [stubs.run] instance has the same name".into()));
        }
        let builtin = c.component.is_none();
        if builtin && rethink_stubs::builtin_connector(name).is_none() {
            return Err(bad(format!(
                "`component` (a .wasm file) is required: there is no built-in connector of this name (built in: {})",
                rethink_stubs::BUILTIN_CONNECTORS.join(", ")
            )));
        }
        // A built-in's address: `domain://<name>.<domain>` (the registry's is the reTHINK one).
        let namespaces = match (&c.namespaces, builtin) {
            (Some(n), _) => n.clone(),
            // The bus routes to an address's owner only from the first path segment down: the
            // archive's logs live below `/log`.
            (None, true) if name == "archive" => vec![
                format!("domain://archive.{domain}"),
                format!("domain://archive.{domain}/log"),
            ],
            (None, true) => vec![format!("domain://{name}.{domain}")],
            (None, false) => return Err(bad("`namespaces` is required".into())),
        };
        if namespaces.is_empty() {
            return Err(bad("`namespaces` must name at least one address".into()));
        }
        // Entries with `*` are patterns (claimed exclusively, anywhere, as a service's
        // `rethink_namespaces`); the others are addresses of the domain, owned with those below.
        let (pattern_texts, addresses): (Vec<String>, Vec<String>) = namespaces
            .into_iter()
            .partition(|n| rethink_proto::AddressPattern::is_pattern(n));
        let patterns = pattern_texts
            .iter()
            .map(|p| {
                rethink_proto::AddressPattern::parse(p)
                    .map_err(|e| bad(format!("namespace pattern {p:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut config = c.config.clone();
        config.insert("domain".into(), domain.to_owned());
        let defaults = RawStubRun::default();
        let run = RawStubRun {
            component: c.component.clone(),
            // A built-in is checked here as a catalogue name, then given its own source.
            stub: builtin.then(|| name.clone()),
            addresses,
            allow: Vec::new(),
            config,
            memory_mb: c.memory_mb.unwrap_or(defaults.memory_mb),
            call_timeout_ms: c.call_timeout_ms.unwrap_or(defaults.call_timeout_ms),
            mailbox: c.mailbox.unwrap_or(defaults.mailbox),
        };
        let one = BTreeMap::from([(name.clone(), run)]);
        let mut checked = validate_run(&one, domain).map_err(|e| match e {
            ConfigError::Invalid { problem, .. } => invalid("connectors", problem),
            other => other,
        })?;
        for mut r in checked.drain(..) {
            r.connector = true;
            r.patterns = patterns.clone();
            if builtin {
                r.source = StubSource::Builtin(name.clone());
            }
            out.push(r);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_matrix_block_is_a_registration_without_url() {
        let raw = BTreeMap::from([(
            "echo".to_owned(),
            RawConnector {
                matrix: Some(RawConnectorMatrix {
                    users: vec!["@echo.*:example.com".into()],
                    ..RawConnectorMatrix::default()
                }),
                ..RawConnector::default()
            },
        )]);
        let m = validate_connector_matrix(&raw).expect("valid");
        let r = &m[0].registration;
        assert_eq!(
            (m[0].name.as_str(), r.id.as_str()),
            ("echo", "connector.echo")
        );
        assert_eq!(r.sender_localpart, "echo");
        assert!(r.url.is_none());
        assert!(
            r.namespaces
                .exclusive(rethink_connectors::Kind::User, "@echo-1:example.com")
        );
        let bad = BTreeMap::from([(
            "echo".to_owned(),
            RawConnector {
                matrix: Some(RawConnectorMatrix {
                    users: vec!["@echo(".into()],
                    ..RawConnectorMatrix::default()
                }),
                ..RawConnector::default()
            },
        )]);
        let e = validate_connector_matrix(&bad).expect_err("bad regex");
        assert!(e.to_string().contains("connectors.echo.matrix"), "{e}");
    }

    fn check(name: &str, c: RawConnector) -> Result<Vec<StubRunConfig>, ConfigError> {
        validate_connectors(&BTreeMap::from([(name.to_owned(), c)]), "example.com", &[])
    }

    #[test]
    fn the_registry_needs_one_line() {
        let r = check("registry", RawConnector::default()).expect("built in");
        assert_eq!(r[0].source, StubSource::Builtin("registry".into()));
        assert_eq!(r[0].addresses, ["domain://registry.example.com"]);
        assert!(
            r[0].config
                .contains(&("domain".into(), "example.com".into()))
        );
    }

    #[test]
    fn others_need_a_component_and_namespaces_in_the_domain() {
        let r = check("archive", RawConnector::default()).expect("built in");
        assert_eq!(
            r[0].addresses,
            [
                "domain://archive.example.com",
                "domain://archive.example.com/log"
            ]
        );
        let e = check("chat", RawConnector::default()).expect_err("no built-in");
        assert!(e.to_string().contains("`component`"), "{e}");
        let e = check(
            "x",
            RawConnector {
                component: Some("x.wasm".into()),
                ..RawConnector::default()
            },
        )
        .expect_err("namespaces");
        assert!(e.to_string().contains("`namespaces`"), "{e}");
        let e = check(
            "x",
            RawConnector {
                component: Some("x.wasm".into()),
                namespaces: Some(vec!["slack://other.org/a".into()]),
                ..RawConnector::default()
            },
        )
        .expect_err("domain");
        assert!(
            e.to_string().starts_with("setting `connectors`")
                && e.to_string().contains("not in domain"),
            "{e}"
        );
    }

    #[test]
    fn entries_with_a_star_are_patterns_anywhere() {
        let r = check(
            "slack",
            RawConnector {
                component: Some("x.wasm".into()),
                namespaces: Some(vec![
                    "slack://*".into(),
                    "domain://archive.example.com/*".into(),
                    "domain://slack.example.com".into(),
                ]),
                ..RawConnector::default()
            },
        )
        .expect("valid");
        assert_eq!(r[0].addresses, ["domain://slack.example.com"]);
        let patterns: Vec<&str> = r[0].patterns.iter().map(|p| p.as_str()).collect();
        assert_eq!(patterns, ["slack://*", "domain://archive.example.com/*"]);
        let e = check(
            "slack",
            RawConnector {
                component: Some("x.wasm".into()),
                namespaces: Some(vec!["sl ack://*".into()]),
                ..RawConnector::default()
            },
        )
        .expect_err("bad pattern");
        assert!(e.to_string().contains("namespace pattern"), "{e}");
    }
}
