//! Reading `stubs.dir`: which stubs it holds (`<name>.wasm`, with an optional `<name>.toml`), a
//! fingerprint of each (modification times and sizes, what the watcher compares, as the policy
//! directory's watcher does), and loading one stub: read, size bound, metadata, check.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bytes::Bytes;

use super::descriptor::{Origin, Stub, StubMeta};
use super::error::{CatalogueError, StubRefused};
use super::validate::Validator;

/// The largest component the catalogue serves.
pub const MAX_STUB_BYTES: u64 = 32 * 1024 * 1024;

/// The largest metadata file.
const MAX_META_BYTES: u64 = 64 * 1024;

/// Modification time and size of a file.
type Stamp = (SystemTime, u64);

/// What the watcher compares for one stub: its component's and its metadata's stamps.
pub(super) type Fingerprint = (Stamp, Option<Stamp>);

/// One `<name>.wasm` of the directory.
#[derive(Debug, Clone)]
pub(super) struct Candidate {
    pub(super) name: String,
    pub(super) wasm: PathBuf,
    pub(super) toml: Option<PathBuf>,
    pub(super) fingerprint: Fingerprint,
}

/// Whether `name` may name a stub: 1 to 64 of `A-Z a-z 0-9 _ -` (it becomes a URL path segment).
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    meta.is_file().then(|| {
        (
            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            meta.len(),
        )
    })
}

/// The stubs in `dir` by name, and the `.wasm` files whose name cannot name a stub.
pub(super) fn scan(
    dir: &Path,
) -> Result<(BTreeMap<String, Candidate>, Vec<String>), CatalogueError> {
    let entries = std::fs::read_dir(dir).map_err(|source| CatalogueError::Dir {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut found = BTreeMap::new();
    let mut bad_names = Vec::new();
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(name) = file.strip_suffix(".wasm") else {
            continue;
        };
        if !valid_name(name) {
            bad_names.push(file.clone());
            continue;
        }
        let wasm = entry.path();
        let Some(wasm_stamp) = stamp(&wasm) else {
            continue;
        };
        let toml = dir.join(format!("{name}.toml"));
        let toml_stamp = stamp(&toml);
        found.insert(
            name.to_owned(),
            Candidate {
                name: name.to_owned(),
                wasm,
                toml: toml_stamp.map(|_| toml),
                fingerprint: (wasm_stamp, toml_stamp),
            },
        );
    }
    bad_names.sort();
    Ok((found, bad_names))
}

fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, StubRefused> {
    let read = |source| StubRefused::Read {
        path: path.to_path_buf(),
        source,
    };
    let size = std::fs::metadata(path).map_err(read)?.len();
    if size > max {
        return Err(StubRefused::TooLarge {
            path: path.to_path_buf(),
            size,
            max,
        });
    }
    std::fs::read(path).map_err(read)
}

/// Reads, bounds and checks one stub of the directory.
pub(super) fn load(c: &Candidate, validator: &dyn Validator) -> Result<Stub, StubRefused> {
    let meta = match &c.toml {
        Some(path) => {
            let raw = read_bounded(path, MAX_META_BYTES)?;
            let text = String::from_utf8_lossy(&raw);
            StubMeta::parse(&text).map_err(|source| StubRefused::Meta {
                path: path.clone(),
                source,
            })?
        }
        None => StubMeta::default(),
    };
    let bytes = read_bounded(&c.wasm, MAX_STUB_BYTES)?;
    let checked = validator
        .check(&bytes)
        .map_err(|source| StubRefused::Invalid {
            path: c.wasm.clone(),
            source,
        })?;
    Ok(Stub::new(
        c.name.clone(),
        Bytes::from(bytes),
        checked,
        meta,
        Origin::File(c.wasm.clone()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stub_names_are_url_segments() {
        for ok in ["default", "chat-2", "A_b"] {
            assert!(valid_name(ok), "{ok}");
        }
        let long = "x".repeat(65);
        for bad in ["", "a.b", "a b", "ü", "..", long.as_str()] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
