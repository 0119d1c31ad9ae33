//! `[store]`: where the node keeps its data. `store.url` chooses the backend of the bus's store
//! (sessions, outboxes, address book, subscriptions, the start counter) and of the stubs'
//! key-value store: absent, SQLite files in `data_dir`; `postgres://user@host:port/db`,
//! PostgreSQL (`postgresql://` too), which then also holds the whole Matrix store (accounts,
//! devices, tokens, profiles, filters, the server key, rooms, events, the stream, the
//! application-service queues and the user data).

use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::postgres::PgConnectOptions;

use super::{ConfigError, invalid};

/// `[store]` as written by the operator.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStore {
    pub commit_delay_ms: u64,
    /// `postgres://user[:password]@host[:port]/db[?sslmode=...]`; absent: SQLite in `data_dir`.
    pub url: Option<String>,
}

impl Default for RawStore {
    fn default() -> Self {
        Self {
            commit_delay_ms: 5,
            url: None,
        }
    }
}

/// The validated `[store]`.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub commit_delay: Duration,
    pub backend: StoreBackend,
}

/// The database of the bus's store and the stubs' key-value store.
#[derive(Clone)]
pub enum StoreBackend {
    /// SQLite files in `data_dir` (the embedded default).
    Sqlite,
    /// A PostgreSQL database.
    Postgres(Box<PgConnectOptions>),
}

/// Shows where the database is, never its password.
impl std::fmt::Debug for StoreBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite => f.write_str("Sqlite"),
            Self::Postgres(options) => write!(f, "Postgres({})", describe(options)),
        }
    }
}

/// `user@host:port/db` (or `user@socket/db`), without the password: for logs.
pub fn describe(options: &PgConnectOptions) -> String {
    let place = match options.get_socket() {
        Some(socket) => socket.display().to_string(),
        None => format!("{}:{}", options.get_host(), options.get_port()),
    };
    format!(
        "{}@{place}/{}",
        options.get_username(),
        options.get_database().unwrap_or("")
    )
}

impl RawStore {
    /// Checks `store.*` and builds the runtime settings.
    pub fn validate(&self) -> Result<StoreConfig, ConfigError> {
        let backend = match self.url.as_deref().map(str::trim) {
            None | Some("") => StoreBackend::Sqlite,
            Some(url) => StoreBackend::Postgres(Box::new(parse_url(url)?)),
        };
        Ok(StoreConfig {
            commit_delay: Duration::from_millis(self.commit_delay_ms),
            backend,
        })
    }
}

fn parse_url(url: &str) -> Result<PgConnectOptions, ConfigError> {
    let scheme = url.split_once("://").map(|(scheme, _)| scheme);
    if !matches!(scheme, Some("postgres" | "postgresql")) {
        return Err(invalid(
            "store.url",
            "must be a postgres://user@host:port/db URL (leave it out for SQLite in data_dir)",
        ));
    }
    // The error of the parser is not shown: it may quote the URL, password included.
    let options = PgConnectOptions::from_str(url)
        .map_err(|_| invalid("store.url", "is not a valid postgres:// URL"))?;
    if options.get_database().is_none_or(str::is_empty) {
        return Err(invalid(
            "store.url",
            "names no database (postgres://user@host:port/DB)",
        ));
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(url: &str) -> Result<StoreConfig, ConfigError> {
        RawStore {
            url: Some(url.to_owned()),
            ..RawStore::default()
        }
        .validate()
    }

    #[test]
    fn absent_url_is_sqlite() {
        let cfg = RawStore::default().validate().map_err(|e| e.to_string());
        assert!(matches!(
            cfg,
            Ok(StoreConfig {
                backend: StoreBackend::Sqlite,
                ..
            })
        ));
    }

    #[test]
    fn postgres_url_is_parsed_and_its_password_never_shown() {
        let cfg = url("postgres://bus:s3cret@db.example:6543/rethink").map_err(|e| e.to_string());
        let Ok(StoreConfig {
            backend: StoreBackend::Postgres(options),
            ..
        }) = &cfg
        else {
            panic!("not a postgres backend: {cfg:?}");
        };
        assert_eq!(options.get_host(), "db.example");
        assert_eq!(options.get_port(), 6543);
        assert_eq!(options.get_database(), Some("rethink"));
        let shown = format!("{cfg:?}");
        assert!(shown.contains("bus@db.example:6543/rethink"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail returns its own large error type.
    fn url_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.set_env(
                "RETHINK_STORE__URL",
                "postgres://rethink@127.0.0.1:5432/bus",
            );
            let cfg = super::super::RawConfig::load(None)
                .map_err(|e| e.to_string())?
                .validate()
                .map_err(|e| e.to_string())?;
            let shown = format!("{:?}", cfg.store.backend);
            assert_eq!(shown, "Postgres(rethink@127.0.0.1:5432/bus)");
            Ok(())
        });
    }

    #[test]
    fn bad_urls_name_the_setting() {
        for bad in [
            "mysql://u@h/db",
            "sqlite://data/bus.db",
            "db.example:5432",
            "postgres://u@h:notaport/db",
            "postgres://u@h:5432",
        ] {
            match url(bad) {
                Err(e) => assert!(
                    e.to_string().starts_with("setting `store.url`: "),
                    "{bad}: {e}"
                ),
                Ok(cfg) => panic!("{bad} accepted: {cfg:?}"),
            }
        }
    }
}
