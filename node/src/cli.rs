//! The command line of the `rethink-node` binary: serves (the default), or runs the operator's
//! policy tools. Reads the configuration, starts the node, and shuts it down gracefully on SIGTERM
//! or Ctrl-C. A library module so that the integration tests can run the very same program as a
//! child process (and kill it).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::policy::dry_run::{self, CheckOptions};
use crate::{RawConfig, RunningNode};

/// reTHINK messaging node.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// TOML configuration file (optional: without it, the embedded defaults and RETHINK_*
    /// environment variables apply).
    #[arg(long, short, env = "RETHINK_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the node (the default).
    Serve,
    /// Policy tools for operators.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Validate a policy directory (schema.cedarschema, *.cedar, entities.json).
    Validate { dir: PathBuf },
    /// Decide a message as the node would, and print the policies that decided it.
    Check {
        /// The message, a reTHINK JSON file.
        #[arg(long)]
        message: PathBuf,
        /// The policy directory (default: policy.dir of the configuration).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The sender's authenticated identity (anonymous without it).
        #[arg(long = "as")]
        user: Option<String>,
        /// The sender's runtime URL.
        #[arg(long)]
        runtime: Option<String>,
        /// The identity owning the target.
        #[arg(long)]
        owner: Option<String>,
        /// The transport the message arrives on.
        #[arg(long, default_value = "ws")]
        transport: String,
        /// Decide at this unix time (default: now).
        #[arg(long)]
        time: Option<i64>,
        /// Messages from the sender in the last minute.
        #[arg(long, default_value_t = 0)]
        rate: i64,
        /// Addresses held by the sender's runtime.
        #[arg(long, default_value_t = 0)]
        allocations: i64,
    },
}

/// Runs the program with the process's arguments; the exit code to return from `main`.
pub fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.command {
        None | Some(Command::Serve) => serve(args.config),
        Some(Command::Policy(cmd)) => policy(args.config, cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rethink-node: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn serve(config: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let config = RawConfig::load(config.as_deref())
        .and_then(RawConfig::validate)
        .context("invalid configuration")?;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log))
        .context("setting `log`")?;
    tracing_subscriber::fmt().with_env_filter(filter).init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(async {
        let signals = StopSignals::register();
        let node = RunningNode::start(config)
            .await
            .context("cannot start the node")?;
        signals.recv().await;
        tracing::info!("shutting down");
        node.shutdown().await;
        Ok(ExitCode::SUCCESS)
    });
    // The store is flushed and closed: tasks still running (none normally) are dropped, and
    // blocking work is not waited for beyond this.
    runtime.shutdown_timeout(RUNTIME_GRACE);
    result
}

/// How long the process waits, after the node stopped, for tasks of the runtime to finish.
const RUNTIME_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

fn policy(config: Option<PathBuf>, cmd: PolicyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PolicyCommand::Validate { dir } => {
            let count = dry_run::validate(&dir)?;
            println!("{}: {count} policies, valid", dir.display());
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Check {
            message,
            dir,
            user,
            runtime,
            owner,
            transport,
            time,
            rate,
            allocations,
        } => {
            let config = RawConfig::load(config.as_deref())
                .and_then(RawConfig::validate)
                .context("invalid configuration")?;
            let dir = dir
                .or(config.policy.dir)
                .context("no policy directory: give --dir or set policy.dir")?;
            let opts = CheckOptions {
                user,
                runtime,
                owner,
                transport,
                time: time.or(config.policy.fixed_time),
                utc_offset_minutes: config.policy.utc_offset_minutes,
                rate_per_minute: rate,
                allocations,
            };
            let verdicts = dry_run::check_files(&dir, &message, &opts)?;
            for v in &verdicts {
                println!("{v}");
            }
            Ok(if verdicts.iter().all(|v| v.allowed) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

/// The stop signals (SIGTERM, SIGINT / Ctrl-C), registered when this is built: before the node
/// starts, so a signal sent as soon as the node says it listens is not left to its default
/// action (which would kill the process instead of stopping it gracefully).
struct StopSignals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    fn register() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let register = |kind: SignalKind, name: &str| match signal(kind) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for {name}");
                    None
                }
            };
            Self {
                term: register(SignalKind::terminate(), "SIGTERM"),
                int: register(SignalKind::interrupt(), "SIGINT"),
            }
        }
        #[cfg(not(unix))]
        {
            Self {}
        }
    }

    /// Resolves at the first stop signal.
    async fn recv(mut self) {
        #[cfg(unix)]
        {
            async fn next(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                _ = next(&mut self.term) => {},
                _ = next(&mut self.int) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
