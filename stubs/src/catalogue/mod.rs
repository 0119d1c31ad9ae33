//! The stub catalogue: the protocol stubs this node serves to runtimes and other nodes.
//!
//! The built-in `default` stub (the committed `stubs/guests/default/default.wasm`) plus every
//! `<name>.wasm` of the operator's directory (`stubs.dir`), with its optional `<name>.toml`
//! metadata; a `default.wasm` there replaces the built-in one. Every component of the directory
//! passes a [`Validator`] (in the node: the wasmtime host's type check) before it is served; one
//! that is refused is logged with the reason and the version served before (if any) stays. The
//! directory is polled for changes (as the policy directory is) and each change publishes a new
//! immutable [`Snapshot`] on a `watch` channel: requests read the latest one, and anything that
//! runs stubs can follow the channel (the node's `[stubs.run]` instances with `stub = "<name>"`).
//!
//! Owns: the set of served stubs and its reloads (`mod.rs`), reading the directory (`dir`), the
//! check of a component (`validate`), a stub and its reTHINK descriptor (`descriptor`), the
//! errors (`error`). Serving over HTTP and signing are the node's (`server/catalogue.rs`).

mod descriptor;
mod dir;
mod error;
mod validate;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use descriptor::{
    MetaError, Origin, Site, Stub, StubMeta, descriptor_path, package_path, sha256_hex,
};
pub use dir::{MAX_STUB_BYTES, valid_name};
pub use error::{CatalogueError, StubRefused};
pub use validate::{Checked, KNOWN_VERSIONS, Structural, ValidationError, Validator, World};

use dir::{Candidate, Fingerprint};

/// The bytes of the built-in `default` stub.
pub const DEFAULT_STUB: &[u8] = include_bytes!("../../guests/default/default.wasm");

/// The name of the built-in stub.
pub const DEFAULT_NAME: &str = "default";

/// The stubs served at one moment. Immutable; a reload publishes a new one.
#[derive(Debug)]
pub struct Snapshot {
    generation: u64,
    stubs: BTreeMap<String, Arc<Stub>>,
    /// Stubs replaced or removed by the last change, by sha256: their bytes stay downloadable
    /// for a runtime that read the previous descriptor, until the next change.
    retired: HashMap<String, Arc<Stub>>,
}

impl Snapshot {
    /// Counts the changes since the catalogue was opened (0 at start).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The stub served under `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Stub>> {
        self.stubs.get(name)
    }

    /// Every served stub, by name.
    pub fn stubs(&self) -> impl Iterator<Item = &Arc<Stub>> {
        self.stubs.values()
    }

    /// The stub `name` whose bytes hash to `sha256`: the one served, or one just retired.
    pub fn by_hash(&self, name: &str, sha256: &str) -> Option<&Arc<Stub>> {
        self.stubs
            .get(name)
            .filter(|s| s.sha256() == sha256)
            .or_else(|| self.retired.get(sha256).filter(|s| s.name() == name))
    }
}

/// What the catalogue remembers of the directory between reloads.
#[derive(Debug, Default)]
struct DirState {
    /// The fingerprint each stub had when last read (served or refused): an unchanged file is
    /// not read again, and a refused one is not logged again until it changes.
    seen: BTreeMap<String, Fingerprint>,
    /// The stubs of the directory being served (a refused replacement leaves the older one).
    served: BTreeMap<String, Arc<Stub>>,
    /// `.wasm` files whose name cannot be a stub's, already logged.
    bad_names: BTreeSet<String>,
}

/// What one reload did.
#[derive(Debug, Default)]
pub struct Reload {
    /// Names whose served stub was added, replaced or removed.
    pub changed: Vec<String>,
    /// Stubs refused by this reload, with the reason.
    pub refused: Vec<(String, StubRefused)>,
}

/// The catalogue: the built-in stub, the directory, the validator, and the channel its
/// snapshots are published on.
#[derive(Debug)]
pub struct Catalogue {
    dir: Option<PathBuf>,
    builtin: Arc<Stub>,
    validator: Arc<dyn Validator>,
    state: Mutex<DirState>,
    published: watch::Sender<Arc<Snapshot>>,
}

impl Catalogue {
    /// Opens the catalogue: checks the built-in stub (`builtin` bytes under [`DEFAULT_NAME`])
    /// and loads `dir`, every component of which passes `validator`. An unreadable directory is
    /// an error; a refused stub in it is logged and left out.
    ///
    /// The built-in stub is checked with [`Structural`] only: it is this node's own component,
    /// type-checked by its own tests, and compiling it at every start would cost the start.
    /// Blocking (reads and checks components): call it off the async threads.
    pub fn open(
        dir: Option<PathBuf>,
        builtin: &'static [u8],
        validator: Arc<dyn Validator>,
    ) -> Result<Self, CatalogueError> {
        let checked = Structural.check(builtin).map_err(CatalogueError::BuiltIn)?;
        let builtin = Arc::new(Stub::new(
            DEFAULT_NAME.to_owned(),
            Bytes::from_static(builtin),
            checked,
            StubMeta::default(),
            Origin::BuiltIn,
        ));
        let first = Snapshot {
            generation: 0,
            stubs: BTreeMap::from([(DEFAULT_NAME.to_owned(), Arc::clone(&builtin))]),
            retired: HashMap::new(),
        };
        let catalogue = Self {
            dir,
            builtin,
            validator,
            state: Mutex::new(DirState::default()),
            published: watch::Sender::new(Arc::new(first)),
        };
        if catalogue.dir.is_some() {
            catalogue.try_reload()?;
        }
        Ok(catalogue)
    }

    /// The stubs served now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.published.borrow())
    }

    /// A receiver that sees every snapshot published from now on.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.published.subscribe()
    }

    /// Reads the directory again and publishes a new snapshot if anything served changed. An
    /// unreadable directory changes nothing (logged).
    pub fn reload(&self) -> Reload {
        match self.try_reload() {
            Ok(reload) => reload,
            Err(e) => {
                tracing::error!(error = %e, "stub directory unreadable; the catalogue is unchanged");
                Reload::default()
            }
        }
    }

    fn try_reload(&self) -> Result<Reload, CatalogueError> {
        let Some(dir) = &self.dir else {
            return Ok(Reload::default());
        };
        let (found, bad_names) = dir::scan(dir)?;
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut reload = Reload::default();
        for bad in bad_names {
            if state.bad_names.insert(bad.clone()) {
                tracing::warn!(file = %bad, "ignored in stubs.dir: a stub name is 1 to 64 of A-Z a-z 0-9 _ -");
            }
        }
        let gone: Vec<String> = state
            .seen
            .keys()
            .filter(|name| !found.contains_key(*name))
            .cloned()
            .collect();
        for name in gone {
            state.seen.remove(&name);
            if state.served.remove(&name).is_some() {
                tracing::info!(stub = %name, "stub removed from the catalogue");
                reload.changed.push(name);
            }
        }
        for (name, candidate) in &found {
            if state.seen.get(name) == Some(&candidate.fingerprint) {
                continue;
            }
            state.seen.insert(name.clone(), candidate.fingerprint);
            match self.load(candidate) {
                Ok(stub) => {
                    let same = state.served.get(name).is_some_and(|old| {
                        old.sha256() == stub.sha256() && old.meta() == stub.meta()
                    });
                    if !same {
                        tracing::info!(stub = %name, sha256 = %stub.sha256(), version = %stub.version(), "stub loaded into the catalogue");
                        state.served.insert(name.clone(), Arc::new(stub));
                        reload.changed.push(name.clone());
                    }
                }
                Err(e) => {
                    let kept = state.served.contains_key(name) || (name == DEFAULT_NAME);
                    tracing::warn!(stub = %name, reason = %e, previous_kept = kept, "stub refused; the version served before (if any) stays");
                    reload.refused.push((name.clone(), e));
                }
            }
        }
        if !reload.changed.is_empty() {
            self.publish(&state.served);
        }
        Ok(reload)
    }

    fn load(&self, candidate: &Candidate) -> Result<Stub, StubRefused> {
        dir::load(candidate, self.validator.as_ref())
    }

    /// Publishes the served stubs (the built-in default unless the directory replaces it).
    fn publish(&self, served: &BTreeMap<String, Arc<Stub>>) {
        let mut stubs = served.clone();
        stubs
            .entry(DEFAULT_NAME.to_owned())
            .or_insert_with(|| Arc::clone(&self.builtin));
        let previous = self.snapshot();
        let retired = previous
            .stubs
            .values()
            .filter(|old| {
                stubs
                    .get(old.name())
                    .is_none_or(|new| new.sha256() != old.sha256())
            })
            .map(|old| (old.sha256().to_owned(), Arc::clone(old)))
            .collect();
        self.published.send_replace(Arc::new(Snapshot {
            generation: previous.generation + 1,
            stubs,
            retired,
        }));
    }

    /// Polls the directory every `interval` and reloads on change, until `shutdown`.
    pub async fn watch(self: Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        if self.dir.is_none() {
            return;
        }
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let catalogue = Arc::clone(&self);
            // Reading and checking components is blocking work.
            if let Err(e) = tokio::task::spawn_blocking(move || catalogue.reload()).await {
                tracing::error!(error = %e, "stub catalogue reload failed");
            }
        }
    }
}

#[cfg(test)]
mod tests;
