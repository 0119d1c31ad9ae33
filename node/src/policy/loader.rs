//! Reading a policy directory: `schema.cedarschema`, every `*.cedar` (in name order) and the
//! optional `entities.json`, handed to `rethink_policy::Engine::load` with their file names so
//! that errors name the file and line.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rethink_policy::{Engine, PolicyError, Sources};

/// Why a policy directory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyLoadError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{dir}: no *.cedar policy file")]
    NoPolicies { dir: String },
    #[error(transparent)]
    Invalid(#[from] PolicyError),
    #[error("no policy directory is configured (policy.dir)")]
    NotConfigured,
}

fn read(path: &Path) -> Result<String, PolicyLoadError> {
    std::fs::read_to_string(path).map_err(|source| PolicyLoadError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn policy_files(dir: &Path) -> Result<Vec<PathBuf>, PolicyLoadError> {
    let entries = std::fs::read_dir(dir).map_err(|source| PolicyLoadError::Read {
        path: dir.display().to_string(),
        source,
    })?;
    // An entry that cannot be read fails the load (the previous set stays): skipping it could
    // drop a `forbid` file and load a set that allows more than the operator wrote.
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|source| PolicyLoadError::Read {
                path: dir.display().to_string(),
                source,
            })?
            .path();
        if path.extension().is_some_and(|x| x == "cedar") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// Loads and validates the policy set in `dir`.
pub fn load_dir(dir: &Path) -> Result<Engine, PolicyLoadError> {
    let schema_path = dir.join("schema.cedarschema");
    let schema = read(&schema_path)?;
    let files = policy_files(dir)?;
    if files.is_empty() {
        return Err(PolicyLoadError::NoPolicies {
            dir: dir.display().to_string(),
        });
    }
    let mut texts = Vec::with_capacity(files.len());
    for f in &files {
        texts.push((file_name(f), read(f)?));
    }
    let entities_path = dir.join("entities.json");
    // `try_exists`: a file that cannot be looked at fails the load rather than load without it.
    let present = entities_path
        .try_exists()
        .map_err(|source| PolicyLoadError::Read {
            path: entities_path.display().to_string(),
            source,
        })?;
    let entities = if present {
        Some(read(&entities_path)?)
    } else {
        None
    };
    let sources = Sources::directory(&schema, &texts, entities.as_deref());
    Ok(Engine::load(&sources)?)
}

/// What the watcher compares: every policy file's name, modification time and size.
pub fn fingerprint(dir: &Path) -> Vec<(String, SystemTime, u64)> {
    let mut out: Vec<(String, SystemTime, u64)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().to_string_lossy().into_owned();
            let relevant =
                name.ends_with(".cedar") || name == "schema.cedarschema" || name == "entities.json";
            let meta = e.metadata().ok()?;
            relevant.then(|| {
                (
                    name,
                    meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    meta.len(),
                )
            })
        })
        .collect();
    out.sort();
    out
}
