//! Settings of the stub catalogue and of what the node says about itself: `public_url` (the
//! address runtimes and Matrix clients reach this node at) and `[stubs]` `dir` and
//! `watch_interval_ms`, `cache_dir`, and the instances the node runs (`[stubs.run.*]`,
//! checked in `stub_run.rs`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::stub_run::{RawStubRun, StubRunConfig, validate_run};
use super::{ConfigError, invalid, positive};

/// `[stubs]` as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStubs {
    pub dir: Option<PathBuf>,
    pub watch_interval_ms: u64,
    /// Where precompiled components are cached (default `<data_dir>/stub-cache`).
    pub cache_dir: Option<PathBuf>,
    /// The stubs the node runs itself: `[stubs.run.<instance>]`.
    pub run: BTreeMap<String, RawStubRun>,
}

impl Default for RawStubs {
    fn default() -> Self {
        Self {
            dir: None,
            watch_interval_ms: 1000,
            cache_dir: None,
            run: BTreeMap::new(),
        }
    }
}

/// The stub catalogue's settings.
#[derive(Debug, Clone)]
pub struct StubsConfig {
    /// The operator's stubs (`<name>.wasm`, optional `<name>.toml`); `None`: only the built-in
    /// `default`.
    pub dir: Option<PathBuf>,
    /// How often the directory is checked for changes.
    pub watch_interval: Duration,
    /// Where precompiled components are cached.
    pub cache_dir: PathBuf,
    /// The stubs the node runs itself.
    pub run: Vec<StubRunConfig>,
}

impl RawStubs {
    pub(super) fn validate(
        self,
        data_dir: &Path,
        domain: &str,
    ) -> Result<StubsConfig, ConfigError> {
        if let Some(dir) = &self.dir
            && !dir.is_dir()
        {
            return Err(invalid(
                "stubs.dir",
                format!("{} is not a directory", dir.display()),
            ));
        }
        positive("stubs.watch_interval_ms", self.watch_interval_ms)?;
        let run = validate_run(&self.run, domain)?;
        Ok(StubsConfig {
            dir: self.dir,
            watch_interval: Duration::from_millis(self.watch_interval_ms),
            cache_dir: self
                .cache_dir
                .unwrap_or_else(|| data_dir.join("stub-cache")),
            run,
        })
    }
}

/// Checks `public_url`: an `http://` or `https://` URL with a host, no query or fragment.
/// Returns it without a trailing slash.
pub(super) fn validate_public_url(raw: Option<String>) -> Result<Option<String>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let url = raw.trim().trim_end_matches('/');
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    let host = rest.map(|r| r.split('/').next().unwrap_or(""));
    let ok = host.is_some_and(|h| {
        !h.is_empty() && !h.contains('@') && h.bytes().all(|b| b.is_ascii_graphic())
    }) && !url.contains(['?', '#', ' ']);
    if !ok {
        return Err(invalid(
            "public_url",
            format!("{raw:?} is not an http:// or https:// URL like https://node.example.com"),
        ));
    }
    Ok(Some(url.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_url_is_an_http_url_without_trailing_slash() {
        for (raw, expected) in [
            ("https://node.example.com/", "https://node.example.com"),
            ("http://127.0.0.1:8900", "http://127.0.0.1:8900"),
            (
                "https://example.com/rethink/",
                "https://example.com/rethink",
            ),
        ] {
            assert_eq!(
                validate_public_url(Some(raw.into()))
                    .expect("valid")
                    .as_deref(),
                Some(expected)
            );
        }
        for bad in [
            "node.example.com",
            "ftp://x",
            "https://",
            "https://a@b",
            "https://x/?q=1",
            "wss://x",
        ] {
            let e = validate_public_url(Some(bad.into())).expect_err(bad);
            assert!(e.to_string().starts_with("setting `public_url`"), "{e}");
        }
        assert!(validate_public_url(None).expect("none").is_none());
    }

    #[test]
    fn stubs_dir_must_be_a_directory() {
        let raw = RawStubs {
            dir: Some("/nonexistent/stubs".into()),
            ..RawStubs::default()
        };
        let e = raw
            .validate(Path::new("/tmp"), "example.com")
            .expect_err("missing dir");
        assert!(e.to_string().starts_with("setting `stubs.dir`"), "{e}");
    }
}
