//! The `keel` command: the operator's and developer's entry point to the platform.
//!
//! Output rules: data goes to stdout, messages and progress to stderr; `--json` where a command
//! has machine output. Exit codes: 0 success, 1 a command failed (the message says what and
//! where), 2 the command line itself was wrong.

mod bench;
mod events;
mod tools;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Keel: a production platform for AI agents, built on an event-sourced execution spine.
#[derive(Parser)]
#[command(name = "keel", version, about)]
struct Cli {
    /// Directory of the embedded store (spine, blobs); runs with different dirs never touch.
    #[arg(long, global = true, default_value = ".keel", env = "KEEL_DATA")]
    data: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print an execution's events as JSON lines, in seq order.
    Events {
        /// The execution id (a UUID).
        exec_id: String,
    },
    /// Tool contracts: check a folder, list it, draft contracts from an MCP server.
    Tools {
        #[command(subcommand)]
        command: tools::ToolsCmd,
    },
    /// Measure a component and print figures (never asserts anything about time).
    Bench {
        #[command(subcommand)]
        target: bench::Target,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Events { exec_id } => events::print(&cli.data, &exec_id).await,
            Command::Tools { command } => tools::run(command).await,
            Command::Bench { target } => bench::run(&cli.data, target).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
