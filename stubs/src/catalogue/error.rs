//! The catalogue's errors: [`CatalogueError`] (the catalogue as a whole cannot be opened) and
//! [`StubRefused`] (one stub in the directory is not served; the previous version, if any,
//! stays).

use std::path::PathBuf;

use super::descriptor::MetaError;
use super::validate::ValidationError;

/// Why the catalogue could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    #[error("stubs.dir {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the built-in default stub is refused: {0}")]
    BuiltIn(#[source] ValidationError),
}

/// Why one stub of the directory is not served.
#[derive(Debug, thiserror::Error)]
pub enum StubRefused {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {size} bytes, more than the {max} a stub may have")]
    TooLarge { path: PathBuf, size: u64, max: u64 },
    #[error("{path}: {source}")]
    Meta {
        path: PathBuf,
        #[source]
        source: MetaError,
    },
    #[error("{path}: {source}")]
    Invalid {
        path: PathBuf,
        #[source]
        source: ValidationError,
    },
}
