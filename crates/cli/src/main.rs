//! The `keel` command: the operator's and developer's entry point to the platform.
//!
//! Output rules: data goes to stdout, messages and progress to stderr; `--json` where a command
//! has machine output. Exit codes: 0 success, 1 a command failed (the message says what and
//! where), 2 the command line itself was wrong.

mod agents;
mod bench;
mod budgets;
mod config;
mod demo;
mod economics;
mod events;
mod experiments;
mod feedback;
mod gates;
mod init;
mod memory;
mod minilm;
mod observe;
mod out;
mod serve;
mod store;
mod strategies;
mod tokens;
mod tools;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Keel: a production platform for AI agents, built on an event-sourced execution spine.
#[derive(Parser)]
#[command(name = "keel", version, about)]
struct Cli {
    /// Directory of the embedded store (spine, blobs); runs with different dirs never touch.
    #[arg(long, global = true, default_value = ".keel", env = "KEEL_DATA")]
    data: PathBuf,
    /// The configuration file (default: ./keel.toml if there is one); see `keel config check`.
    #[arg(long, global = true, env = "KEEL_CONFIG")]
    config: Option<PathBuf>,
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
    /// The whole story, offline: a support agent, two strategies, a crash and resume, the tables.
    Demo,
    /// Write a new project into DIR (new or empty): keel.toml, an HTTP and an MCP tool, a
    /// strategy for an OpenAI-compatible model and an offline one, a prompt.
    Init(init::InitArgs),
    /// Run one execution to its end and print its trace id and outcome.
    Run(agents::run::RunArgs),
    /// Resume and run every unfinished execution of the store.
    Worker(agents::worker::WorkerArgs),
    /// Print an execution's steps as a table (by execution id or trace id).
    Trace {
        /// Execution id (UUID) or trace id (32 hex digits).
        id: String,
    },
    /// Kill-switches per tenant, strategy (agent) and tool.
    Kill {
        #[command(subcommand)]
        command: agents::kill::KillCmd,
    },
    /// Tool contracts: check a folder, list it, draft contracts from an MCP server.
    Tools {
        #[command(subcommand)]
        command: tools::ToolsCmd,
    },
    /// The approval queue: list, approve, reject, sweep SLAs, export verdicts.
    Gates {
        #[command(subcommand)]
        command: gates::GatesCmd,
        #[command(flatten)]
        config: agents::ConfigArgs,
    },
    /// Strategies and their autonomy: list, re-certify after a demotion.
    Strategies {
        #[command(subcommand)]
        command: strategies::StrategiesCmd,
        #[command(flatten)]
        config: agents::ConfigArgs,
    },
    /// Strategy experiments: register (frozen), list, stop, conclude, read out.
    Experiments {
        #[command(subcommand)]
        command: experiments::ExperimentsCmd,
        #[command(flatten)]
        config: agents::ConfigArgs,
    },
    /// Cost per success per strategy version, cost by tenant, tool and model (from the
    /// projections; the seed's economics table).
    Economics(economics::EconomicsArgs),
    /// Per-tenant monthly cost budgets: set (alarm threshold, hard stop), list.
    Budgets {
        #[command(subcommand)]
        command: budgets::BudgetsCmd,
    },
    /// Rate an execution's result, 1 (bad) to 5 (excellent), with an optional comment.
    Feedback(feedback::FeedbackArgs),
    /// API tokens (scoped to a tenant and roles).
    Tokens {
        #[command(subcommand)]
        command: tokens::TokensCmd,
    },
    /// The HTTP API, web UI, metrics and workers (the demo's tools, shop and strategies by default).
    Serve(serve::ServeArgs),
    /// Measure a component and print figures (never asserts anything about time).
    Bench {
        #[command(subcommand)]
        target: bench::Target,
    },
    #[command(flatten)]
    Observe(observe::ObserveCmd),
    /// Governed memory: list, search, review, promote, subject access, erase, sweep, migrate.
    Memory {
        #[command(subcommand)]
        command: memory::MemoryCmd,
    },
    /// The configuration (keel.toml and KEEL_* variables): check it, secrets redacted.
    Config {
        #[command(subcommand)]
        command: config::check::ConfigCmd,
    },
}

impl Command {
    /// Where the command reads the project's configuration, if it reads one.
    fn config_args(&self) -> Option<&agents::ConfigArgs> {
        match self {
            Command::Run(a) => Some(&a.config),
            Command::Worker(a) => Some(&a.config),
            Command::Gates { config, .. } | Command::Strategies { config, .. } => Some(config),
            _ => None,
        }
    }

    /// True for the commands that may create the store at `--data` (or use none); every other
    /// command reads an existing store and refuses a directory without one. A new command is a
    /// reading one unless it is listed here.
    fn may_create_store(&self) -> bool {
        match self {
            Command::Demo
            | Command::Init(_)
            | Command::Run(_)
            | Command::Worker(_)
            | Command::Serve(_)
            | Command::Tokens { .. }
            | Command::Tools { .. }
            | Command::Bench { .. }
            | Command::Config { .. } => true,
            Command::Kill { command } => matches!(command, agents::kill::KillCmd::Set { .. }),
            _ => false,
        }
    }
}

fn main() -> ExitCode {
    // reqwest is built without a TLS provider (`rustls-no-provider`), so the program chooses one,
    // once, before any command builds a client: every command (`tools import-mcp`, `serve`, the
    // OTLP exporter) then gets ring, whichever library happens to build the first client. The
    // only error is "already installed", which cannot happen this early.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let matches = Cli::command().get_matches_from(out::hoist_json(std::env::args_os()));
    let mut cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    // The configuration is read here, once: `--data` (or KEEL_DATA) given explicitly wins over
    // the file's `spine.url`.
    let data_given = matches.value_source("data") != Some(clap::parser::ValueSource::DefaultValue);
    let args = config::Args {
        config: cli.config.as_deref(),
        data: data_given.then_some(cli.data.as_path()),
    };
    match config::Config::load(&args) {
        Ok(c) => {
            cli.data = c.data.clone();
            config::install(c);
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    }
    if !cli.command.may_create_store()
        && let Err(e) = store::require(&cli.data)
    {
        eprintln!("error: {e:#}");
        return ExitCode::FAILURE;
    }
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
    let project_hint = cli.command.config_args().and_then(out::project_hint);
    let result = runtime.block_on(async {
        match cli.command {
            Command::Events { exec_id } => events::print(&cli.data, &exec_id).await,
            Command::Demo => demo::run(&cli.data).await,
            Command::Init(args) => init::run(&args),
            Command::Run(args) => agents::run::run(&cli.data, &args).await,
            Command::Worker(args) => agents::worker::worker(&cli.data, &args).await,
            Command::Trace { id } => agents::trace::trace(&cli.data, &id).await,
            Command::Kill { command } => agents::kill::kill(&cli.data, command).await,
            Command::Tools { command } => tools::run(&cli.data, command).await,
            Command::Gates { command, config } => gates::gates(&cli.data, &config, command).await,
            Command::Strategies { command, config } => {
                strategies::strategies(&cli.data, &config, command).await
            }
            Command::Experiments { command, config } => {
                experiments::run(&cli.data, &config, command).await
            }
            Command::Economics(args) => economics::run(&cli.data, args).await,
            Command::Budgets { command } => budgets::run(&cli.data, command).await,
            Command::Feedback(args) => feedback::run(&cli.data, args).await,
            Command::Tokens { command } => tokens::tokens(&cli.data, command),
            Command::Serve(args) => serve::serve(&cli.data, args).await,
            Command::Bench { target } => bench::run(&cli.data, target).await,
            Command::Observe(cmd) => observe::run(&cli.data, cmd).await,
            Command::Memory { command } => memory::run(&cli.data, command).await,
            Command::Config { command } => config::check::run(command).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", config::scrub(&format!("{e:#}")));
            if let Some(h) = project_hint {
                out::hint(&h);
            }
            ExitCode::FAILURE
        }
    }
}
