//! The node's application services: every registration file of a directory (`*.yaml`, `*.yml`,
//! in name order), checked together (ids, `as_token`s and `hs_token`s unique), each with its
//! [`AsClient`] when it has a `url`. Lookups by token and namespace questions over all of them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use crate::client::{AsClient, Endpoint};
use crate::namespaces::Kind;
use crate::registration::{Registration, RegistrationError};

/// Why a directory of registrations was refused.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("application services directory {dir}: {source}")]
    Read {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Registration(#[from] RegistrationError),
}

/// One registered service.
#[derive(Debug)]
pub struct AppService {
    pub registration: Registration,
    /// Absent for a service without `url`: it only acts, it receives nothing.
    pub client: Option<AsClient>,
    /// The file it was read from.
    pub file: PathBuf,
}

impl AppService {
    /// `tls`: the client configuration for an `https://` url.
    pub fn new(registration: Registration, file: PathBuf, tls: &Arc<rustls::ClientConfig>) -> Self {
        let client = registration.url.as_deref().and_then(|url| {
            Endpoint::parse(url)
                .ok()
                .map(|e| AsClient::new(e, registration.hs_token.clone(), Arc::clone(tls)))
        });
        Self {
            registration,
            client,
            file,
        }
    }

    pub fn id(&self) -> &str {
        &self.registration.id
    }

    /// Whether `user_id` is the service's sender or in its user namespaces.
    pub fn owns_user(&self, user_id: &str, server_name: &str) -> bool {
        self.is_sender(user_id, server_name)
            || self.registration.namespaces.matches(Kind::User, user_id)
    }

    /// Whether `user_id` is `@<sender_localpart>:<server_name>`.
    pub fn is_sender(&self, user_id: &str, server_name: &str) -> bool {
        user_id
            .strip_prefix('@')
            .and_then(|rest| rest.split_once(':'))
            .is_some_and(|(local, server)| {
                local == self.registration.sender_localpart && server == server_name
            })
    }
}

/// The services in force.
#[derive(Debug, Default)]
pub struct Directory {
    services: Vec<Arc<AppService>>,
}

impl Directory {
    /// No service.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Loads every registration file of `dir`; the first bad file refuses the whole set. `tls`
    /// is the client configuration of services with an `https://` url.
    pub fn load(dir: &Path, tls: &Arc<rustls::ClientConfig>) -> Result<Self, DirectoryError> {
        let mut services: Vec<Arc<AppService>> = Vec::new();
        for file in registration_files(dir)? {
            let registration = Registration::load(&file)?;
            let name = file.display().to_string();
            let clash = |field: &str, other: &AppService| RegistrationError {
                file: name.clone(),
                field: field.to_owned(),
                reason: format!("also used by {}", other.file.display()),
            };
            for other in &services {
                let o = &other.registration;
                if o.id == registration.id {
                    return Err(clash("id", other).into());
                }
                if o.as_token == registration.as_token || o.hs_token == registration.as_token {
                    return Err(clash("as_token", other).into());
                }
                if o.hs_token == registration.hs_token || o.as_token == registration.hs_token {
                    return Err(clash("hs_token", other).into());
                }
                if o.sender_localpart == registration.sender_localpart {
                    return Err(clash("sender_localpart", other).into());
                }
            }
            if registration.as_token == registration.hs_token {
                return Err(RegistrationError {
                    file: name,
                    field: "hs_token".to_owned(),
                    reason: "must differ from as_token".to_owned(),
                }
                .into());
            }
            services.push(Arc::new(AppService::new(registration, file, tls)));
        }
        Ok(Self { services })
    }

    /// Builds a directory from services already made (tests, and a reload keeping clients).
    pub fn from_services(services: Vec<Arc<AppService>>) -> Self {
        Self { services }
    }

    pub fn services(&self) -> &[Arc<AppService>] {
        &self.services
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// The service whose `as_token` this is (compared in constant time per service).
    pub fn by_token(&self, token: &str) -> Option<&Arc<AppService>> {
        self.services
            .iter()
            .find(|s| constant_time_eq(s.registration.as_token.as_bytes(), token.as_bytes()))
    }

    pub fn by_id(&self, id: &str) -> Option<&Arc<AppService>> {
        self.services.iter().find(|s| s.id() == id)
    }

    /// The service holding `id` in an exclusive namespace of `kind`, if any.
    pub fn exclusive_owner(&self, kind: Kind, id: &str) -> Option<&Arc<AppService>> {
        self.services
            .iter()
            .find(|s| s.registration.namespaces.exclusive(kind, id))
    }

    /// The services whose namespaces of `kind` hold `id` and that can be asked (have a `url`).
    pub fn interested(&self, kind: Kind, id: &str) -> impl Iterator<Item = &Arc<AppService>> {
        self.services
            .iter()
            .filter(move |s| s.client.is_some() && s.registration.namespaces.matches(kind, id))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn registration_files(dir: &Path) -> Result<Vec<PathBuf>, DirectoryError> {
    let entries = std::fs::read_dir(dir).map_err(|source| DirectoryError::Read {
        dir: dir.display().to_string(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    Ok(files)
}

/// What a watcher compares: each registration file's name, modification time and size.
pub fn fingerprint(dir: &Path) -> Vec<(PathBuf, SystemTime, u64)> {
    let mut out: Vec<(PathBuf, SystemTime, u64)> = registration_files(dir)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| {
            let meta = std::fs::metadata(&p).ok()?;
            Some((
                p,
                meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                meta.len(),
            ))
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, id: &str, token: &str) {
        let text = format!(
            "id: {id}\nas_token: as-{token}\nhs_token: hs-{token}\nsender_localpart: {id}bot\n\
             namespaces:\n  users:\n    - regex: '@{id}_.*:example\\.org'\n      exclusive: true\n"
        );
        std::fs::write(dir.join(name), text).expect("write");
    }

    fn tls() -> Arc<rustls::ClientConfig> {
        Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
        )
    }

    #[test]
    fn loads_a_directory_and_refuses_clashes() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "a.yaml", "a", "1");
        write(dir.path(), "b.yml", "b", "2");
        std::fs::write(dir.path().join("notes.txt"), "ignored").expect("write");
        let d = Directory::load(dir.path(), &tls()).expect("valid");
        assert_eq!(d.services().len(), 2);
        assert_eq!(d.by_token("as-2").map(|s| s.id()), Some("b"));
        assert!(d.by_token("hs-2").is_none());
        assert_eq!(
            d.exclusive_owner(Kind::User, "@a_x:example.org")
                .map(|s| s.id()),
            Some("a")
        );
        assert!(
            d.by_id("a")
                .expect("a")
                .is_sender("@abot:example.org", "example.org")
        );
        write(dir.path(), "c.yaml", "c", "1");
        let e = Directory::load(dir.path(), &tls()).expect_err("token clash");
        assert!(e.to_string().contains("c.yaml"), "{e}");
        assert!(e.to_string().contains("as_token"), "{e}");
    }
}
