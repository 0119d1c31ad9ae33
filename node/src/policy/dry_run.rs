//! The operator's dry run: `rethink-node policy validate DIR` and
//! `rethink-node policy check --message msg.json [--as USER] ...`, which decide a message as the
//! node would (same facts, same engine) and say which policies decided it.

use std::path::Path;

use rethink_policy::Engine;
use rethink_proto::{Envelope, ParseError};

use super::facts::{self, PolicyClock, Sender, Target};
use super::{PolicyLoadError, load_dir};

/// What `policy check` knows beyond the message itself.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// The sender's authenticated identity (`--as`); anonymous without it.
    pub user: Option<String>,
    /// The sender's runtime URL.
    pub runtime: Option<String>,
    /// The identity owning the target.
    pub owner: Option<String>,
    pub transport: String,
    /// Unix seconds; the real clock without it.
    pub time: Option<i64>,
    pub utc_offset_minutes: i32,
    pub rate_per_minute: i64,
    pub allocations: i64,
}

/// Why a dry run could not decide.
#[derive(Debug, thiserror::Error)]
pub enum DryRunError {
    #[error(transparent)]
    Load(#[from] PolicyLoadError),
    // The cause is the source, not repeated in the text: the command line prints the chain
    // (`{e:#}`: "msg.json: not valid JSON: ...").
    #[error("{path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}")]
    Message {
        path: String,
        #[source]
        source: ParseError,
    },
}

/// `policy validate DIR`: the number of policies, or the first problem with file and line.
pub fn validate(dir: &Path) -> Result<usize, PolicyLoadError> {
    Ok(load_dir(dir)?.policy_count())
}

/// One recipient's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub recipient: String,
    pub allowed: bool,
    pub policies: Vec<String>,
    pub errors: Vec<String>,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let word = if self.allowed { "ALLOW" } else { "DENY" };
        if self.policies.is_empty() {
            write!(
                f,
                "{}: {word} (no policy permits this message)",
                self.recipient
            )?;
        } else {
            write!(
                f,
                "{}: {word} by {}",
                self.recipient,
                self.policies.join(", ")
            )?;
        }
        for e in &self.errors {
            write!(f, "\n  evaluation error: {e}")?;
        }
        Ok(())
    }
}

/// Decides `message` (the JSON text of a reTHINK message) against `engine`.
pub fn check(
    engine: &Engine,
    message: &str,
    opts: &CheckOptions,
) -> Result<Vec<Verdict>, ParseError> {
    let env = Envelope::parse(message)?;
    let now = PolicyClock::new(opts.utc_offset_minutes, opts.time).now();
    let sender = Sender {
        address: env.from(),
        runtime: opts.runtime.as_deref(),
        user: opts.user.as_deref(),
        transport: &opts.transport,
        rate_per_minute: opts.rate_per_minute,
        allocations: opts.allocations,
    };
    let endpoints = rethink_proto::Endpoints::new(facts::domain_of(env.from()));
    Ok(env
        .to()
        .map(|to| {
            let target = Target {
                address: to,
                node_endpoint: endpoints.classify(to).is_some(),
                owner_user: opts.owner.as_deref(),
                owner_runtime: None,
            };
            let d = engine.decide(&facts::query(
                env.kind().as_str(),
                env.json().len(),
                &sender,
                &target,
                now,
            ));
            Verdict {
                recipient: to.to_owned(),
                allowed: d.allowed,
                policies: d.policies,
                errors: d.errors,
            }
        })
        .collect())
}

/// `policy check`: loads `dir` and the message file and decides.
pub fn check_files(
    dir: &Path,
    message: &Path,
    opts: &CheckOptions,
) -> Result<Vec<Verdict>, DryRunError> {
    let engine = load_dir(dir)?;
    let text = std::fs::read_to_string(message).map_err(|source| DryRunError::Read {
        path: message.display().to_string(),
        source,
    })?;
    check(&engine, &text, opts).map_err(|source| DryRunError::Message {
        path: message.display().to_string(),
        source,
    })
}
