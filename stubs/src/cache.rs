//! The on-disk cache of precompiled components: `<dir>/<sha256 of the component>-<engine
//! fingerprint>.cwasm`, written atomically (a temporary file renamed into place), so a restart
//! does not compile again.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

use crate::error::StubError;

/// The engine's fingerprint: wasmtime's version and every setting that changes the compiled
/// code (the engine itself refuses an artifact compiled differently, this only keys the file).
pub(crate) fn fingerprint(engine: &Engine) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    format!("{:016x}", h.finish())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where the artifact of the component with hash `sha256` lives.
pub(crate) fn path(dir: &Path, sha256: &[u8; 32], fingerprint: &str) -> PathBuf {
    dir.join(format!("{}-{fingerprint}.cwasm", hex(sha256)))
}

/// Loads the precompiled component at `path`, if it is there and this engine accepts it.
pub(crate) fn load(engine: &Engine, path: &Path) -> Option<Component> {
    if !path.is_file() {
        return None;
    }
    // SAFETY: `deserialize_file` trusts the file to be an artifact wasmtime wrote, and to stay
    // unchanged while mapped. The file is in the host's own cache directory, named by the
    // sha256 of the component it was compiled from and the engine's fingerprint; it was
    // written by `store` below from `Component::serialize` and renamed into place, and never
    // written again afterwards (a replacement is a new file renamed over it, which leaves a
    // mapped old file intact). Nobody else writes there.
    #[allow(unsafe_code)]
    let loaded = unsafe { Component::deserialize_file(engine, path) };
    match loaded {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "precompiled component refused; compiling again");
            None
        }
    }
}

/// Writes the precompiled `component` to `path` atomically.
pub(crate) fn store(component: &Component, path: &Path) -> Result<(), StubError> {
    let err = |source| StubError::Cache {
        path: path.display().to_string(),
        source,
    };
    let bytes = component
        .serialize()
        .map_err(|e| err(std::io::Error::other(e.to_string())))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(err)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("artifact"),
        std::process::id()
    ));
    let mut f = std::fs::File::create(&tmp).map_err(err)?;
    f.write_all(&bytes).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}
