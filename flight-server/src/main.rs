//! The `agora` command: query, check, serve and demo a data mesh.
//!
//! This file parses the command line, sets up logs, traces and the runtime,
//! and hands each command to its own file under `cli/`.

use std::process::ExitCode;

mod cli;

use agora_flight_server::telemetry::Telemetry;
use anyhow::Result;
use clap::{Parser, ValueEnum};
use cli::args::{AuditCommand, Command, ProductsCommand};
use tracing_subscriber::EnvFilter;

/// Agora: query a data mesh's products where they live, under its governance.
#[derive(Parser)]
#[command(name = "agora", version, about)]
struct Cli {
    /// How log lines on standard error are written: `text` for people
    /// (coloured only on a terminal), `json` (one object per line) for log
    /// collectors. The level is set with AGORA_LOG (e.g. `info`, `agora=debug`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Export traces over OTLP/HTTP (JSON) to this collector, e.g.
    /// http://127.0.0.1:4318 (spans go to its /v1/traces). Off by default.
    #[arg(long, global = true, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_name = "URL")]
    otlp_endpoint: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// JSON Lines.
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_env("AGORA_LOG").unwrap_or_else(|_| {
        EnvFilter::new(
            "warn,buoyant_kernel=off,agora=info,agora_engine=info,agora_flight_server=info,agora_connectors=info",
        )
    });
    use tracing_subscriber::filter::FilterExt;
    use tracing_subscriber::prelude::*;
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match cli.log_format {
        LogFormat::Json => logs.json().flatten_event(true).with_current_span(false).boxed(),
        LogFormat::Text => logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).boxed(),
    };
    let (telemetry, traces) = match cli.otlp_endpoint.as_deref().filter(|e| !e.is_empty()).map(Telemetry::start) {
        Some(Ok((telemetry, layer))) => (Some(telemetry), Some(layer)),
        Some(Err(e)) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
        None => (None, None),
    };
    // Traces cover Agora's own spans (requests, queries, source statements).
    let traced = tracing_subscriber::filter::Targets::new()
        .with_target("agora_flight_server", tracing::Level::INFO)
        .with_target("agora_engine", tracing::Level::INFO)
        .with_target("agora_connectors", tracing::Level::INFO);
    // Log lines stand alone: spans (which repeat the statement) are for traces.
    let lines = filter.and(tracing_subscriber::filter::filter_fn(|meta| meta.is_event()));
    tracing_subscriber::registry().with(logs.with_filter(lines)).with(traces.with_filter(traced)).init();
    // The network runtime: gRPC, logins, metadata. Queries run on the engine's
    // own runtime; the larger stacks only cover deep plans handled here
    // (parameter inference, dropping a refused statement).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("agora-net")
        .thread_stack_size(16 * 1024 * 1024)
        .build();
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    };
    if let Some(telemetry) = telemetry {
        telemetry.shutdown();
    }
    code
}

/// Runs `command` by its file under `cli/`; its exit code.
async fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Query { connection, format, file, output, sql } => {
            cli::query::run(connection, format, file, output, sql).await
        }
        Command::Shell { connection, format } => cli::shell::launch(connection, format).await,
        Command::Check { config, quality } => cli::check::run(&config, quality).await,
        Command::Products { command: ProductsCommand::Search { config, run_as, text } } => {
            cli::products::search(&config, run_as, text).await
        }
        Command::Serve { config, bind, server } => cli::serve::run(&config, bind, &server).await,
        Command::Audit { command: AuditCommand::Verify { config } } => cli::audit::verify(&config),
        Command::HashPassword => cli::hash_password::run(),
        Command::Demo { dir, scale, bind, generate_only, postgres, s3, s3_endpoint, server } => {
            cli::demo::run(dir, scale, bind, generate_only, postgres, s3, s3_endpoint, server).await
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// clap's own checks of the command line now that its parts live in
    /// several files: every id `requires` and `conflicts_with` name exists.
    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
