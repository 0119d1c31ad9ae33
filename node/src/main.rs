//! The `rethink-node` binary: reads the configuration, starts the node, and shuts it down
//! gracefully on SIGTERM or Ctrl-C.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use rethink_node::{RawConfig, RunningNode};
use tracing_subscriber::EnvFilter;

/// reTHINK messaging node.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// TOML configuration file (optional: without it, the embedded defaults and RETHINK_*
    /// environment variables apply).
    #[arg(long, short, env = "RETHINK_CONFIG")]
    config: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = RawConfig::load(args.config.as_deref())
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
    runtime.block_on(async {
        let node = RunningNode::start(config)
            .await
            .context("cannot start the node")?;
        wait_for_signal().await;
        tracing::info!("shutting down");
        node.shutdown().await;
        Ok(())
    })
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
