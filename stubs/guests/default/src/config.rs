//! The stub's configuration (WIT `host.config`), read once in `init`.

use std::collections::BTreeMap;

/// Why the configuration is unusable (`init` fails with its text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ConfigError {
    Missing(&'static str),
    Invalid(&'static str, String),
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Missing(key) => write!(f, "configuration `{key}` is missing"),
            Self::Invalid(key, why) => write!(f, "configuration `{key}`: {why}"),
        }
    }
}

/// The settings (keys in the crate docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Config {
    pub(crate) url: String,
    pub(crate) runtime: String,
    pub(crate) token: Option<String>,
    pub(crate) stub: String,
    pub(crate) listen: Vec<String>,
    pub(crate) queue_max: usize,
    /// The bytes (JSON text) of the queued and unconfirmed messages, at most: the instance
    /// holds each in memory about twice over.
    pub(crate) queue_max_bytes: usize,
    pub(crate) ack_every: u64,
    pub(crate) ack_delay_ms: u64,
    pub(crate) backoff_min_ms: u64,
    pub(crate) backoff_max_ms: u64,
    pub(crate) handshake_timeout_ms: u64,
    /// A message not written to the node within this time is answered 504 (0: never).
    pub(crate) deliver_timeout_ms: u64,
    /// How answers name the node: its `domain` entry, else `url`.
    pub(crate) peer: String,
    /// Whether the host's `gseq` is followed (`store.rs`); `report_held` = `false` ignores it,
    /// as a stub that does not know the gateway's contract would.
    pub(crate) report_held: bool,
}

impl Config {
    /// Reads the settings from the host's configuration entries.
    pub(crate) fn from_entries(entries: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let get = |key: &str| {
            entries
                .get(key)
                .map(String::as_str)
                .filter(|v| !v.is_empty())
        };
        let url = get("url").ok_or(ConfigError::Missing("url"))?.to_owned();
        if !(url.starts_with("ws://") || url.starts_with("wss://")) {
            return Err(ConfigError::Invalid(
                "url",
                "must be a ws: or wss: URL".into(),
            ));
        }
        let runtime = get("runtime")
            .ok_or(ConfigError::Missing("runtime"))?
            .to_owned();
        if !runtime.contains("://") {
            return Err(ConfigError::Invalid("runtime", "must be an address".into()));
        }
        let number = |key: &'static str, default: u64, min: u64| -> Result<u64, ConfigError> {
            match get(key) {
                None => Ok(default),
                Some(v) => match v.parse::<u64>() {
                    Ok(n) if n >= min => Ok(n),
                    _ => Err(ConfigError::Invalid(
                        key,
                        format!("must be an integer >= {min}"),
                    )),
                },
            }
        };
        let backoff_min_ms = number("backoff_min_ms", 100, 1)?;
        let backoff_max_ms = number("backoff_max_ms", 30_000, backoff_min_ms)?;
        Ok(Self {
            stub: get("stub").map_or_else(|| format!("{runtime}/protostub/default"), str::to_owned),
            listen: get("listen")
                .map(|l| {
                    l.split(',')
                        .map(str::trim)
                        .filter(|a| !a.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            token: get("token").map(str::to_owned),
            queue_max: usize::try_from(number("queue_max", 1024, 1)?).unwrap_or(usize::MAX),
            queue_max_bytes: usize::try_from(number("queue_max_bytes", 4 << 20, 1)?)
                .unwrap_or(usize::MAX),
            ack_every: number("ack_every", 32, 1)?,
            ack_delay_ms: number("ack_delay_ms", 20, 0)?,
            backoff_min_ms,
            backoff_max_ms,
            handshake_timeout_ms: number("handshake_timeout_ms", 10_000, 1)?,
            deliver_timeout_ms: number("deliver_timeout_ms", 0, 0)?,
            peer: get("domain").map_or_else(|| url.clone(), str::to_owned),
            report_held: match get("report_held") {
                None | Some("true") => true,
                Some("false") => false,
                Some(_) => {
                    return Err(ConfigError::Invalid(
                        "report_held",
                        "must be true or false".into(),
                    ));
                }
            },
            url,
            runtime,
        })
    }
}
