//! A registration ([`Record`]): a hyperty instance or a data object, as the registry keeps it
//! (persisted as JSON under `reg/<url>`), how it is read from a `create` / `update` body, and
//! the search criteria ([`Criteria`]) it is matched against.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What is registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum Kind {
    Hyperty,
    DataObject,
}

/// One registration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Record {
    pub(crate) kind: Kind,
    /// The hyperty URL or the data object URL: the registration's key.
    pub(crate) url: String,
    /// The user the hyperty acts for (`user://idp/name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) user: Option<String>,
    /// The catalogue URL of the hyperty's descriptor, or the data object's schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) descriptor: Option<String>,
    /// A data object's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) name: Option<String>,
    /// The hyperty reporting a data object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) reporter: Option<String>,
    #[serde(default)]
    pub(crate) resources: Vec<String>,
    #[serde(default)]
    pub(crate) data_schemes: Vec<String>,
    /// The runtime the registration lives in (`hyperty-runtime://<domain>/<id>`): its status
    /// (`live`, `disconnected`, `expired`) becomes the registration's.
    pub(crate) runtime: String,
    /// Seconds the registration lives without a keep-alive.
    pub(crate) expires: u64,
    /// Unix milliseconds of the registration and of the last create, update or keep-alive.
    pub(crate) started_ms: u64,
    pub(crate) last_modified_ms: u64,
    /// `live` or `disconnected`.
    pub(crate) status: String,
}

impl Record {
    /// When it expires, in Unix milliseconds.
    pub(crate) fn expires_at_ms(&self) -> u64 {
        self.last_modified_ms
            .saturating_add(self.expires.saturating_mul(1000))
    }

    /// The record as the registry answers it (the reTHINK field names).
    pub(crate) fn to_value(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut v {
            let key = match self.kind {
                Kind::Hyperty => "hypertyURL",
                Kind::DataObject => "url",
            };
            if let Some(url) = m.remove("url") {
                m.insert(key.to_owned(), url);
            }
        }
        v
    }
}

/// Why a registration body is refused (a 400 with this text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Invalid(pub(crate) String);

/// The limits a registration is read with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) default_expires: u64,
    pub(crate) max_expires: u64,
    /// Entries in `resources` / `dataSchemes`, and bytes of any string.
    pub(crate) max_list: usize,
    pub(crate) max_text: usize,
}

/// An address: `scheme://authority[/path]`, within the size limit.
pub(crate) fn is_address(s: &str, limits: &Limits) -> bool {
    s.len() <= limits.max_text
        && s.split_once("://")
            .is_some_and(|(scheme, rest)| !scheme.is_empty() && !rest.is_empty())
}

fn text(m: &Map<String, Value>, key: &str, limits: &Limits) -> Result<Option<String>, Invalid> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() <= limits.max_text => Ok(Some(s.clone())),
        Some(_) => Err(Invalid(format!(
            "body.value.{key} must be a string of at most {} bytes",
            limits.max_text
        ))),
    }
}

fn list(m: &Map<String, Value>, key: &str, limits: &Limits) -> Result<Vec<String>, Invalid> {
    let bad = || {
        Invalid(format!(
            "body.value.{key} must be a list of at most {} strings",
            limits.max_list
        ))
    };
    match m.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) if items.len() <= limits.max_list => items
            .iter()
            .map(|i| match i {
                Value::String(s) if s.len() <= limits.max_text => Ok(s.clone()),
                _ => Err(bad()),
            })
            .collect(),
        Some(_) => Err(bad()),
    }
}

/// Reads a registration from `body.value` of a `create` or `update`; `runtime` is the sender's
/// runtime. The registration is `live`, modified at `now_ms`.
pub(crate) fn parse(
    value: &Value,
    runtime: &str,
    now_ms: u64,
    limits: &Limits,
) -> Result<Record, Invalid> {
    let Value::Object(m) = value else {
        return Err(Invalid("body.value must be an object".into()));
    };
    let (kind, url) = match (text(m, "hypertyURL", limits)?, text(m, "url", limits)?) {
        (Some(url), _) => (Kind::Hyperty, url),
        (None, Some(url)) => (Kind::DataObject, url),
        (None, None) => {
            return Err(Invalid(
                "body.value needs `hypertyURL` (a hyperty) or `url` (a data object)".into(),
            ));
        }
    };
    if !is_address(&url, limits) {
        return Err(Invalid(format!("{url:?} is not an address")));
    }
    let expires = match m.get("expires") {
        None | Some(Value::Null) => limits.default_expires,
        Some(v) => match v.as_u64() {
            Some(e) if (1..=limits.max_expires).contains(&e) => e,
            _ => {
                return Err(Invalid(format!(
                    "body.value.expires must be a whole number of seconds from 1 to {}",
                    limits.max_expires
                )));
            }
        },
    };
    let descriptor = match text(m, "descriptor", limits)? {
        Some(d) => Some(d),
        None => match text(m, "hypertyDescriptorURL", limits)? {
            Some(d) => Some(d),
            None => text(m, "schema", limits)?,
        },
    };
    Ok(Record {
        kind,
        url,
        user: text(m, "user", limits)?,
        descriptor,
        name: text(m, "name", limits)?,
        reporter: text(m, "reporter", limits)?,
        resources: list(m, "resources", limits)?,
        data_schemes: list(m, "dataSchemes", limits)?,
        runtime: runtime.to_owned(),
        expires,
        started_ms: now_ms,
        last_modified_ms: now_ms,
        status: "live".into(),
    })
}

/// What a search asks for; every given criterion must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Criteria {
    pub(crate) kind: Option<Kind>,
    pub(crate) url: Option<String>,
    pub(crate) user: Option<String>,
    pub(crate) reporter: Option<String>,
    pub(crate) name: Option<String>,
    /// The URL schemes one of which the registration's URL must have (`hyperty`, `comm`).
    pub(crate) schemes: Vec<String>,
    /// All must be among the registration's.
    pub(crate) resources: Vec<String>,
    pub(crate) data_schemes: Vec<String>,
}

impl Criteria {
    pub(crate) fn matches(&self, r: &Record) -> bool {
        let eq = |want: &Option<String>, have: &Option<String>| {
            want.as_ref().is_none_or(|w| have.as_ref() == Some(w))
        };
        let scheme = r.url.split_once("://").map_or("", |(s, _)| s);
        self.kind.is_none_or(|k| k == r.kind)
            && self.url.as_ref().is_none_or(|u| *u == r.url)
            && eq(&self.user, &r.user)
            && eq(&self.reporter, &r.reporter)
            && eq(&self.name, &r.name)
            && (self.schemes.is_empty() || self.schemes.iter().any(|s| s == scheme))
            && self.resources.iter().all(|x| r.resources.contains(x))
            && self.data_schemes.iter().all(|x| r.data_schemes.contains(x))
    }
}

/// Reads the criteria of a `read`: `body.search` names the kind of search (the reTHINK
/// registry connector's `hypertyResourcesDataSchemes`, `dataObjectPerURL`,
/// `dataObjectPerReporter`, `dataObjectPerName`; absent: `body.resource` is a user whose
/// hyperties are listed, or a registered URL), `body.resource` its subject, and `body.criteria`
/// (or an object `body.resource`) holds `user`, `schemes`, `resources`, `dataSchemes`.
pub(crate) fn criteria(body: &Value, limits: &Limits) -> Result<Criteria, Invalid> {
    let search = body.get("search").and_then(Value::as_str);
    let resource = body.get("resource");
    let subject = || match resource {
        Some(Value::String(s)) if s.len() <= limits.max_text => Ok(s.clone()),
        _ => Err(Invalid("body.resource must be a string".into())),
    };
    let mut c = Criteria::default();
    match search {
        Some("hypertyResourcesDataSchemes") | Some("hyperties") => {
            c.kind = Some(Kind::Hyperty);
            let fields = match (body.get("criteria"), resource) {
                (Some(v @ Value::Object(_)), _) | (None, Some(v @ Value::Object(_))) => v,
                (None, Some(Value::String(user))) => {
                    c.user = Some(user.clone());
                    &Value::Null
                }
                _ => {
                    return Err(Invalid(
                        "body.criteria (or body.resource) must be an object".into(),
                    ));
                }
            };
            if let Value::Object(m) = fields {
                if let Some(u) = text(m, "user", limits)? {
                    c.user = Some(u);
                }
                c.schemes = list(m, "schemes", limits)?;
                c.resources = list(m, "resources", limits)?;
                c.data_schemes = list(m, "dataSchemes", limits)?;
            }
        }
        Some("dataObjectPerURL") => {
            c.kind = Some(Kind::DataObject);
            c.url = Some(subject()?);
        }
        Some("dataObjectPerReporter") => {
            c.kind = Some(Kind::DataObject);
            c.reporter = Some(subject()?);
        }
        Some("dataObjectPerName") => {
            c.kind = Some(Kind::DataObject);
            c.name = Some(subject()?);
        }
        Some(other) => return Err(Invalid(format!("unknown body.search {other:?}"))),
        None => {
            let s = subject()?;
            if s.starts_with("user://") {
                c.kind = Some(Kind::Hyperty);
                c.user = Some(s);
            } else {
                c.url = Some(s);
            }
        }
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LIMITS: Limits = Limits {
        default_expires: 3600,
        max_expires: 86400,
        max_list: 4,
        max_text: 64,
    };

    #[test]
    fn a_hyperty_body_reads_with_the_rethink_names() {
        let r = parse(
            &json!({"user": "user://idp/alice", "hypertyURL": "hyperty://d/1",
                    "hypertyDescriptorURL": "hyperty-catalogue://d/chat", "expires": 30,
                    "resources": ["chat"], "dataSchemes": ["comm"]}),
            "hyperty-runtime://d/rt",
            1000,
            &LIMITS,
        )
        .expect("parses");
        assert_eq!(r.kind, Kind::Hyperty);
        assert_eq!(r.expires_at_ms(), 31_000);
        assert_eq!(r.to_value()["hypertyURL"], "hyperty://d/1");
        let c = criteria(
            &json!({"search": "hypertyResourcesDataSchemes",
                    "resource": {"user": "user://idp/alice", "resources": ["chat"], "schemes": ["hyperty"]}}),
            &LIMITS,
        )
        .expect("criteria");
        assert!(c.matches(&r));
        let c = criteria(
            &json!({"search": "hyperties", "criteria": {"dataSchemes": ["connection"]}}),
            &LIMITS,
        )
        .expect("criteria");
        assert!(!c.matches(&r));
    }

    #[test]
    fn bad_bodies_are_refused_with_the_field() {
        for (v, says) in [
            (json!([1]), "must be an object"),
            (json!({"user": "u"}), "needs `hypertyURL`"),
            (json!({"hypertyURL": "nope"}), "not an address"),
            (json!({"url": "comm://d/x", "expires": 0}), "expires"),
            (json!({"url": "comm://d/x", "resources": [1]}), "resources"),
            (
                json!({"url": "comm://d/x", "resources": ["a", "b", "c", "d", "e"]}),
                "resources",
            ),
        ] {
            let e = parse(&v, "hyperty-runtime://d/rt", 0, &LIMITS).expect_err(says);
            assert!(e.0.contains(says), "{} / {says}", e.0);
        }
    }
}
