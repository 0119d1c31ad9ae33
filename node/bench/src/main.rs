//! `rethink-bench`: a load generator for rethink-node.
//!
//! `rethink-bench ws [options]` opens many runtime sessions on the node's
//! WebSocket bus and measures end-to-end throughput and latency percentiles of
//! hyperty-to-hyperty messages, or (with `--idle`) the node's memory with idle
//! sessions. Without `--url` it starts the `rethink-node` executable that sits
//! next to its own executable (build it first:
//! `cargo build --release -p rethink-node`).
//!
//! `rethink-bench matrix [options]` drives the node's Matrix Client-Server API:
//! users registered and joined to rooms, each parked in a long-poll `/sync`,
//! while concurrent senders PUT messages; it reports sends/s, the PUT's latency
//! and the send-to-sync latency of the first and of every receiver.
//!
//! `rethink-bench appservice [options]` is a Matrix application service on loopback: it
//! starts the node with its registration, sends events at a fixed rate and then a burst, and
//! reports the commit-to-transaction latency and the transactions delivered per second.
//!
//! `rethink-bench registry [options]` starts the node with the domain registry connector and
//! has runtimes keep lookups outstanding through the bus: lookups per second and round trip.
//! `rethink-bench crossdomain [options]` starts two nodes of two domains (or targets them) and
//! measures messages from runtimes on A to runtimes on B through B's stub run by A: throughput,
//! end-to-end latency, each node's CPU per message.
//! `rethink-bench cluster [options]` starts two nodes of one domain on one PostgreSQL and one
//! NATS (or targets given ones) and measures messages between runtimes on the two nodes (or,
//! with `--local`, on one node of the cluster): the same figures.

mod appservice_load;
mod attack;
mod cli;
mod client;
mod cluster_load;
mod cpu;
mod crossdomain_load;
mod deliveries;
mod http;
mod matrix_client;
mod matrix_load;
mod matrix_report;
mod matrix_tasks;
#[cfg(test)]
mod mock_node;
mod node_proc;
mod node_under_test;
mod pair_load;
mod registry_load;
mod report;
mod runtime;
mod stats;
mod ws_load;

use std::process::ExitCode;

use anyhow::Context as _;

fn main() -> ExitCode {
    let command = cli::parse();
    match run(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: cli::Command) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    match command {
        // A signal drops the scenario, which kills a node the bench started.
        cli::Command::Ws(cfg) => runtime.block_on(report(cfg.json, ws_load::run(&cfg), |r| {
            r.to_json().to_string()
        })),
        cli::Command::Appservice(cfg) => {
            runtime.block_on(report(cfg.json(), appservice_load::run(&cfg), |r| {
                r.to_json().to_string()
            }))
        }
        cli::Command::Registry(cfg) => {
            runtime.block_on(report(cfg.json(), registry_load::run(&cfg), |r| {
                r.to_json().to_string()
            }))
        }
        cli::Command::Crossdomain(args) => {
            runtime.block_on(report(args.json(), crossdomain_load::run(&args), |r| {
                r.to_json().to_string()
            }))
        }
        cli::Command::Cluster(args) => {
            runtime.block_on(report(args.json(), cluster_load::run(&args), |r| {
                r.to_json().to_string()
            }))
        }
        cli::Command::Matrix(cfg) => {
            runtime.block_on(report(cfg.json, matrix_load::run(&cfg), |r| {
                r.to_json().to_string()
            }))
        }
    }
}

/// Runs a scenario until it ends or a signal arrives, then prints its report: as one JSON object
/// with `json`, else as text.
async fn report<R: std::fmt::Display, E: Into<anyhow::Error>>(
    json: bool,
    scenario: impl std::future::Future<Output = Result<R, E>>,
    to_json: impl FnOnce(&R) -> String,
) -> anyhow::Result<()> {
    let report = tokio::select! {
        r = scenario => r.map_err(Into::into)?,
        signal = interrupted() => anyhow::bail!("interrupted by {signal}"),
    };
    if json {
        println!("{}", to_json(&report));
    } else {
        print!("{report}");
    }
    Ok(())
}

/// Completes on Ctrl-C (or SIGTERM on Unix), naming the signal.
async fn interrupted() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}
