//! Registration files: Synapse's YAML format for application services, plus our
//! `rethink_namespaces` extension. [`Registration::parse`] reads one file's text and validates
//! every field, so that a bad file is refused naming the file and the field.

use std::path::Path;

use regex::Regex;
use serde::Deserialize;

use crate::namespaces::{Namespace, Namespaces, RethinkNamespace};

/// Why a registration file was refused: the file, the field (a dotted path such as
/// `namespaces.users[0].regex`) and the reason.
#[derive(Debug, thiserror::Error)]
#[error("application service registration {file}: field `{field}`: {reason}")]
pub struct RegistrationError {
    pub file: String,
    pub field: String,
    pub reason: String,
}

impl RegistrationError {
    fn new(file: &str, field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            file: file.to_owned(),
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// The file as written (every field Synapse reads; unknown fields are ignored, as Synapse does).
#[derive(Debug, Deserialize)]
struct RawRegistration {
    id: Option<String>,
    #[serde(default)]
    url: Option<String>,
    as_token: Option<String>,
    hs_token: Option<String>,
    sender_localpart: Option<String>,
    #[serde(default)]
    namespaces: RawNamespaces,
    #[serde(default)]
    rate_limited: Option<bool>,
    #[serde(default)]
    protocols: Option<Vec<String>>,
    #[serde(default)]
    receive_ephemeral: Option<bool>,
    #[serde(default, alias = "de.sorunome.msc2409.push_ephemeral")]
    push_ephemeral: Option<bool>,
    #[serde(default)]
    rethink_namespaces: Option<Vec<RawRethinkNamespace>>,
}

#[derive(Debug, Default, Deserialize)]
struct RawNamespaces {
    #[serde(default)]
    users: Option<Vec<RawNamespace>>,
    #[serde(default)]
    aliases: Option<Vec<RawNamespace>>,
    #[serde(default)]
    rooms: Option<Vec<RawNamespace>>,
}

#[derive(Debug, Deserialize)]
struct RawNamespace {
    regex: Option<String>,
    #[serde(default)]
    exclusive: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct RawRethinkNamespace {
    pattern: Option<String>,
    #[serde(default)]
    exclusive: Option<bool>,
}

/// A validated registration.
#[derive(Debug, Clone)]
pub struct Registration {
    /// Unique among the node's registrations.
    pub id: String,
    /// Where transactions and queries go; `None` for a service that only acts.
    pub url: Option<String>,
    /// The token the service presents to the node.
    pub as_token: String,
    /// The token the node presents to the service.
    pub hs_token: String,
    /// The localpart of the service's own user.
    pub sender_localpart: String,
    pub namespaces: Namespaces,
    /// `false`: the service's requests are not rate limited. Default `true`.
    pub rate_limited: bool,
    pub protocols: Vec<String>,
    /// Typing, receipts and presence in transactions (MSC2409, `receive_ephemeral`).
    pub receive_ephemeral: bool,
}

impl Registration {
    /// Parses and validates the text of the file `file` (named in errors).
    pub fn parse(file: &str, text: &str) -> Result<Self, RegistrationError> {
        let raw: RawRegistration = serde_yaml_ng::from_str(text).map_err(|e| {
            let field = yaml_field(&e.to_string());
            RegistrationError::new(file, field, e.to_string())
        })?;
        let err = |field: &str, reason: &str| RegistrationError::new(file, field, reason);
        let token = |v: Option<String>, field: &str| match v {
            None => Err(err(field, "missing")),
            Some(t) if t.is_empty() => Err(err(field, "must not be empty")),
            Some(t) if t.chars().any(|c| c.is_whitespace() || c.is_control()) => {
                Err(err(field, "must not contain spaces or control characters"))
            }
            Some(t) => Ok(t),
        };
        let id = token(raw.id, "id")?;
        let as_token = token(raw.as_token, "as_token")?;
        let hs_token = token(raw.hs_token, "hs_token")?;
        let sender_localpart = token(raw.sender_localpart, "sender_localpart")?;
        if !sender_localpart.bytes().all(
            |b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'=' | b'-' | b'/' | b'+'),
        ) {
            return Err(err(
                "sender_localpart",
                "only a-z, 0-9 and . _ = - / + are allowed",
            ));
        }
        let url = match raw.url {
            None => None,
            Some(u) if u.is_empty() => None,
            Some(u) => {
                crate::client::Endpoint::parse(&u).map_err(|e| err("url", &e.to_string()))?;
                Some(u)
            }
        };
        let users = compile(file, "namespaces.users", raw.namespaces.users)?;
        let aliases = compile(file, "namespaces.aliases", raw.namespaces.aliases)?;
        let rooms = compile(file, "namespaces.rooms", raw.namespaces.rooms)?;
        let mut rethink = Vec::new();
        for (i, ns) in raw.rethink_namespaces.into_iter().flatten().enumerate() {
            let field = format!("rethink_namespaces[{i}].pattern");
            let pattern = ns
                .pattern
                .ok_or_else(|| RegistrationError::new(file, &field, "missing"))?;
            let compiled = RethinkNamespace::new(&pattern, ns.exclusive.unwrap_or(false))
                .map_err(|e| RegistrationError::new(file, &field, e.to_string()))?;
            rethink.push(compiled);
        }
        Ok(Registration {
            id,
            url,
            as_token,
            hs_token,
            sender_localpart,
            namespaces: Namespaces {
                users,
                aliases,
                rooms,
                rethink,
            },
            rate_limited: raw.rate_limited.unwrap_or(true),
            protocols: raw.protocols.unwrap_or_default(),
            receive_ephemeral: raw
                .receive_ephemeral
                .or(raw.push_ephemeral)
                .unwrap_or(false),
        })
    }

    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<Self, RegistrationError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| RegistrationError::new(&name, "(file)", e.to_string()))?;
        Self::parse(&name, &text)
    }
}

/// Synapse matches a namespace regex anywhere in the ID unless anchored; it anchors nothing,
/// and neither do we: operators write `@irc_.*:example\.org` and expect a whole-ID match in
/// practice, which a search also gives. Each entry must have a valid `regex`.
fn compile(
    file: &str,
    field: &str,
    entries: Option<Vec<RawNamespace>>,
) -> Result<Vec<Namespace>, RegistrationError> {
    let mut out = Vec::new();
    for (i, entry) in entries.into_iter().flatten().enumerate() {
        let field = format!("{field}[{i}].regex");
        let text = entry
            .regex
            .ok_or_else(|| RegistrationError::new(file, &field, "missing"))?;
        let regex = Regex::new(&text)
            .map_err(|e| RegistrationError::new(file, &field, format!("invalid regex: {e}")))?;
        out.push(Namespace {
            regex,
            exclusive: entry.exclusive.unwrap_or(false),
        });
    }
    Ok(out)
}

/// The field a serde_yaml error names (`missing field `id``, `x: invalid type ...`), or
/// `(file)` when it names none.
fn yaml_field(message: &str) -> String {
    if let Some(rest) = message.split("field `").nth(1)
        && let Some(name) = rest.split('`').next()
    {
        return name.to_owned();
    }
    if let Some((path, _)) = message.split_once(": ")
        && !path.contains(' ')
        && !path.is_empty()
    {
        return path.to_owned();
    }
    "(file)".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r##"
id: irc
url: "http://127.0.0.1:9000"
as_token: as-secret
hs_token: hs-secret
sender_localpart: ircbot
namespaces:
  users:
    - exclusive: true
      regex: "@irc_.*:example\\.org"
  aliases:
    - exclusive: false
      regex: "#irc_.*:example\\.org"
  rooms: []
rate_limited: false
protocols: ["irc"]
receive_ephemeral: true
rethink_namespaces:
  - pattern: "slack://*"
    exclusive: true
"##;

    #[test]
    fn a_synapse_registration_parses() {
        let r = Registration::parse("irc.yaml", GOOD).expect("valid");
        assert_eq!(r.id, "irc");
        assert_eq!(r.url.as_deref(), Some("http://127.0.0.1:9000"));
        assert!(!r.rate_limited);
        assert!(r.receive_ephemeral);
        assert_eq!(r.protocols, ["irc"]);
        assert!(r.namespaces.users[0].exclusive);
        assert!(r.namespaces.users[0].regex.is_match("@irc_bob:example.org"));
        assert!(r.namespaces.rethink[0].matches("slack://team/alice"));
        assert!(!r.namespaces.rethink[0].matches("hyperty://x/y"));
    }

    #[test]
    fn url_may_be_absent_or_null() {
        let absent = GOOD.replace("url: \"http://127.0.0.1:9000\"\n", "");
        assert_eq!(Registration::parse("f", &absent).expect("ok").url, None);
        let null = GOOD.replace("\"http://127.0.0.1:9000\"", "null");
        assert_eq!(Registration::parse("f", &null).expect("ok").url, None);
    }

    #[test]
    fn errors_name_the_file_and_the_field() {
        let cases = [
            (GOOD.replace("as_token: as-secret\n", ""), "as_token"),
            (
                GOOD.replace("\"@irc_.*", "\"@irc_(.*"),
                "namespaces.users[0].regex",
            ),
            (GOOD.replace("http://127.0.0.1:9000", "ftp://x"), "url"),
            (
                GOOD.replace("pattern: \"slack://*\"", "pattern: \"\""),
                "rethink_namespaces[0].pattern",
            ),
            (
                GOOD.replace("rate_limited: false", "rate_limited: maybe"),
                "rate_limited",
            ),
            (
                GOOD.replace("sender_localpart: ircbot", "sender_localpart: Irc Bot"),
                "sender_localpart",
            ),
        ];
        for (text, field) in cases {
            let e = Registration::parse("bad.yaml", &text).expect_err(field);
            assert_eq!(e.file, "bad.yaml");
            assert_eq!(e.field, field, "{e}");
            assert!(e.to_string().contains("bad.yaml"), "{e}");
        }
    }
}
