//! The `agora` command: query, check, serve and demo a data mesh.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

mod cli;

use agora_engine::Engine;
use agora_demo::{self as demo, DemoOptions};
use agora_flight_server::telemetry::Telemetry;
use agora_flight_server::{FlightServer, ServeOptions, TlsFiles, TypePolicy};
use anyhow::{Context, Result};
use arrow::record_batch::RecordBatch;
use clap::{Parser, Subcommand, ValueEnum};
use cli::backend::{Backend, Login};
use cli::output::Format;
use futures::TryStreamExt;
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

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant, reason = "the command line is parsed once per process")]
enum Command {
    /// Run SQL statements (in-process on a mesh, or on a server with --url)
    /// and print their results.
    Query {
        #[command(flatten)]
        connection: ConnectionArgs,
        /// Output format.
        #[arg(long, short, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Read the statements from this file (`-`: standard input).
        #[arg(long, conflicts_with = "sql")]
        file: Option<PathBuf>,
        /// Write the results here instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// The SQL: one or more statements separated by `;` (`-`: read
        /// them from standard input).
        sql: Option<String>,
    },
    /// An interactive SQL shell, in-process on a mesh or on a server with --url.
    Shell {
        #[command(flatten)]
        connection: ConnectionArgs,
        /// Output format.
        #[arg(long, short, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Validate the configuration, open every product and compare it with its
    /// contract (schema drift); with --quality, also run the contracts' quality rules.
    Check {
        /// The mesh configuration file.
        #[arg(long, short, default_value = "mesh.yaml")]
        config: PathBuf,
        /// Run every contract's quality rules at the sources and record the
        /// results in system.quality_results.
        #[arg(long)]
        quality: bool,
    },
    /// Find data products.
    Products {
        #[command(subcommand)]
        command: ProductsCommand,
    },
    /// Serve the mesh over Arrow Flight SQL.
    Serve {
        /// The mesh configuration file.
        #[arg(long, short, default_value = "mesh.yaml")]
        config: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:50051")]
        bind: SocketAddr,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Work with the audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Hash a password for `auth.users[].password_hash` (reads it from standard input).
    HashPassword,
    /// Generate (once) a demo mesh of TPC-H data in three domains, then serve it.
    Demo {
        /// Where the demo mesh is written.
        #[arg(long, default_value = "demo-mesh")]
        dir: PathBuf,
        /// TPC-H scale factor.
        #[arg(long, default_value_t = 0.1)]
        scale: f64,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:50051")]
        bind: SocketAddr,
        /// Generate the data and exit without serving.
        #[arg(long)]
        generate_only: bool,
        /// Put the `supply` domain into this PostgreSQL database
        /// (postgres://user[:password]@host[:port]/database) and serve it from there.
        #[arg(long)]
        postgres: Option<url::Url>,
        /// Put the `sales` domain into this S3 bucket (s3://bucket/prefix; the
        /// bucket must exist) and serve it from there. Credentials come from
        /// $AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY.
        #[arg(long)]
        s3: Option<url::Url>,
        /// The S3-compatible server `--s3` uses (http[s]://host:port); AWS when omitted.
        #[arg(long, requires = "s3")]
        s3_endpoint: Option<url::Url>,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the audit log's hash chain (archive, rotated and current files):
    /// exits 1 naming each edited, removed or inserted record. Prints the
    /// head (last seq and hash): keep it elsewhere to detect a later cut at
    /// the end. Reads only; safe while the server runs.
    Verify {
        /// The mesh configuration file.
        #[arg(long, short, default_value = "mesh.yaml")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum ProductsCommand {
    /// Search products by name, tags, descriptions and column descriptions,
    /// best match first (the SQL table function search_products).
    Search {
        /// The mesh configuration file.
        #[arg(long, short, default_value = "mesh.yaml")]
        config: PathBuf,
        /// Search as this configured user: only products they may read are found.
        #[arg(long = "as", value_name = "USER")]
        run_as: Option<String>,
        /// Words to look for.
        #[arg(required = true)]
        text: Vec<String>,
    },
}

#[derive(clap::Args)]
struct ServerArgs {
    /// Serve TLS with this PEM certificate chain (needs --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require client certificates signed by this PEM CA (mutual TLS).
    #[arg(long, requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Send Utf8View/BinaryView columns as they are instead of as Utf8/Binary
    /// (only for clients that read view types; the JDBC driver before 19.0 does not).
    #[arg(long)]
    view_types: bool,
    /// Address of the HTTP listener for Prometheus metrics (/metrics),
    /// liveness (/healthz) and readiness (/readyz); `off` serves none. It
    /// needs no credentials: keep it on loopback or an internal network.
    #[arg(long, default_value = "127.0.0.1:9464", value_parser = parse_metrics_bind)]
    metrics_bind: MetricsBind,
    /// On SIGTERM or Ctrl-C, how long running queries may finish (new
    /// connections are refused meanwhile) before they are stopped, their
    /// clients told UNAVAILABLE and the queries audited as cancelled. A
    /// second signal stops them at once.
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
    drain_seconds: f64,
}

/// Where the operations listener binds, if anywhere.
#[derive(Clone, Copy)]
enum MetricsBind {
    Off,
    At(SocketAddr),
}

fn parse_metrics_bind(value: &str) -> Result<MetricsBind, String> {
    if value == "off" {
        return Ok(MetricsBind::Off);
    }
    value.parse().map(MetricsBind::At).map_err(|e| format!("{e}: give an address such as 127.0.0.1:9464, or off"))
}

impl ServerArgs {
    fn options(&self) -> ServeOptions {
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                Some(TlsFiles { cert: cert.clone(), key: key.clone(), client_ca: self.tls_client_ca.clone() })
            }
            _ => None,
        };
        ServeOptions { tls, types: TypePolicy { plain_view_types: !self.view_types } }
    }
}

/// Where `agora query` and `agora shell` run their statements.
#[derive(clap::Args)]
struct ConnectionArgs {
    /// The mesh configuration file (in-process).
    #[arg(long, short, default_value = "mesh.yaml")]
    config: PathBuf,
    /// Run on this server instead (grpc://host:port or grpc+tls://host:port).
    #[arg(long)]
    url: Option<String>,
    /// With --url: log in as this user; the password comes from
    /// $AGORA_PASSWORD. Without --user, $AGORA_TOKEN holds a bearer token.
    #[arg(long, requires = "url")]
    user: Option<String>,
    /// With --url and grpc+tls: the server's certificate authority (PEM);
    /// the system's roots otherwise.
    #[arg(long, requires = "url")]
    tls_ca: Option<PathBuf>,
    /// In-process: run as this configured user or service (its groups and
    /// attributes), under the mesh's policies. Without it statements run as
    /// `local`.
    #[arg(long = "as", value_name = "USER", conflicts_with = "url")]
    run_as: Option<String>,
}

impl ConnectionArgs {
    /// The backend, and the engine when it runs in this process.
    async fn backend(&self) -> Result<(Backend, Option<Engine>, String)> {
        match &self.url {
            Some(url) => {
                let login = match &self.user {
                    Some(user) => Login::Password {
                        user: user.clone(),
                        password: std::env::var("AGORA_PASSWORD")
                            .context("--user reads the password from $AGORA_PASSWORD, which is not set")?,
                    },
                    None => Login::Token(
                        std::env::var("AGORA_TOKEN")
                            .context("--url needs --user (password in $AGORA_PASSWORD) or a token in $AGORA_TOKEN")?,
                    ),
                };
                let backend = Backend::remote(url, login, self.tls_ca.as_deref()).await?;
                Ok((backend, None, format!("Connected to {url}")))
            }
            None => {
                let engine = Engine::open(&self.config)?;
                let principal = match &self.run_as {
                    Some(name) => configured_principal(&engine, name)?,
                    None => agora_engine::Principal::user("local"),
                };
                let banner = format!("Mesh {} in-process, as {}", self.config.display(), principal.user);
                Ok((Backend::Local { engine: engine.clone(), principal }, Some(engine), banner))
            }
        }
    }
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

async fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Query { connection, format, file, output, sql } => {
            let text = match (file, sql) {
                (Some(path), _) if path.as_os_str() == "-" => read_stdin()?,
                (Some(path), _) => {
                    std::fs::read_to_string(&path).with_context(|| format!("cannot read --file {}", path.display()))?
                }
                (None, Some(sql)) if sql == "-" => read_stdin()?,
                (None, Some(sql)) => sql,
                (None, None) => anyhow::bail!("no SQL: give a statement, --file FILE, or - to read standard input"),
            };
            let statements = match cli::statements::split(&text) {
                cli::statements::Script::Statements(list) if !list.is_empty() => list,
                cli::statements::Script::Statements(_) => anyhow::bail!("no SQL statement in the input"),
                cli::statements::Script::Incomplete => {
                    anyhow::bail!("the SQL ends inside a string, a quoted name or a comment")
                }
            };
            if statements.len() > 1 && matches!(format, Format::Arrow | Format::Parquet) {
                anyhow::bail!("--format {format:?} writes one result: give one statement");
            }
            let (mut backend, engine, _) = connection.backend().await?;
            let mut out: Box<dyn std::io::Write + Send> = match &output {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path)
                        .with_context(|| format!("cannot create --output {}", path.display()))?,
                )),
                None => Box::new(std::io::stdout()),
            };
            let result = async {
                for sql in &statements {
                    let rows = cli::output::write(backend.run(sql).await?, format, &mut out).await?;
                    if format == Format::Table {
                        eprintln!("{rows} row{}", if rows == 1 { "" } else { "s" });
                    }
                }
                Ok::<_, anyhow::Error>(())
            }
            .await;
            if let Some(lineage) = engine.as_ref().and_then(Engine::lineage) {
                lineage.flush(std::time::Duration::from_secs(10)).await;
            }
            result?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Shell { connection, format } => {
            let (backend, engine, banner) = connection.backend().await?;
            let result = cli::shell::run(backend, format, &banner).await;
            if let Some(lineage) = engine.as_ref().and_then(Engine::lineage) {
                lineage.flush(std::time::Duration::from_secs(10)).await;
            }
            result?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { config, quality } => check(&config, quality).await,
        Command::Products { command: ProductsCommand::Search { config, run_as, text } } => {
            let engine = Engine::open(&config)?;
            let principal = match run_as {
                Some(name) => configured_principal(&engine, &name)?,
                None => agora_engine::Principal::user("local"),
            };
            let words = text.join(" ").replace('\'', "''");
            let sql = format!(
                "SELECT domain || '.' || product AS product, round(score, 1) AS score, matched, description \
                 FROM search_products('{words}')"
            );
            let mut backend = Backend::Local { engine: engine.clone(), principal };
            let result = async {
                let rows = backend.run(&sql).await?;
                let collected: Vec<RecordBatch> = rows.batches.try_collect().await?;
                if collected.iter().all(|b| b.num_rows() == 0) {
                    println!("No product matches '{}' (among those you may read).", text.join(" "));
                } else {
                    println!("{}", arrow::util::pretty::pretty_format_batches(&collected)?);
                }
                Ok::<_, anyhow::Error>(())
            }
            .await;
            if let Some(lineage) = engine.lineage() {
                lineage.flush(std::time::Duration::from_secs(10)).await;
            }
            result?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve { config, bind, server } => {
            let engine = Engine::open(&config)?;
            serve(engine, bind, &server, None).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit { command: AuditCommand::Verify { config } } => audit_verify(&config),
        Command::HashPassword => {
            let password = read_password()?;
            println!("{}", agora_engine::identity::hash_password(&password).map_err(anyhow::Error::msg)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { dir, scale, bind, generate_only, postgres, s3, s3_endpoint, server } => {
            if !(scale > 0.0 && scale <= 100.0) {
                anyhow::bail!("--scale must be greater than 0 and at most 100, got {scale}");
            }
            let password = postgres.as_ref().and_then(|u| u.password()).map(str::to_string);
            if password.is_some() {
                println!(
                    "note: the demo mesh reads the database password from ${}; set it to serve the mesh with `agora serve`",
                    demo::DEMO_PG_PASSWORD_ENV
                );
            }
            let s3 = s3.map(|url| demo::S3Target::parse(&url, s3_endpoint)).transpose()?;
            let options = DemoOptions { dir, scale, progress: true, postgres, s3 };
            let mesh = demo::ensure(&options).await?;
            if generate_only {
                println!("Demo mesh written to {}", mesh.display());
                return Ok(ExitCode::SUCCESS);
            }
            // This process knows the password from --postgres: hand it to the
            // configuration without putting it in the environment.
            let text = std::fs::read_to_string(&mesh).with_context(|| format!("cannot read {}", mesh.display()))?;
            let env = |name: &str| match (&password, name == demo::DEMO_PG_PASSWORD_ENV) {
                (Some(p), true) => Some(p.clone()),
                _ => std::env::var(name).ok(),
            };
            let engine = Engine::new(agora_engine::MeshConfig::from_yaml(&text, &mesh, &env)?)?;
            serve(engine, bind, &server, Some(mesh)).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `agora audit verify`: the chain's report, exit 1 when it is broken.
fn audit_verify(config: &std::path::Path) -> Result<ExitCode> {
    let mesh = agora_engine::MeshConfig::from_file(config)?;
    let Some(governance) = &mesh.governance else {
        anyhow::bail!("{} has no governance section, so there is no audit log to verify", config.display());
    };
    let report = agora_engine::audit::verify(&governance.audit)
        .with_context(|| format!("cannot read the audit log {}", governance.audit.path.display()))?;
    for problem in &report.problems {
        println!("BROKEN {problem}");
    }
    let range = match (report.first_seq, report.last_seq) {
        (Some(first), Some(last)) => format!("seq {first}..{last}"),
        _ => "no chained records".to_string(),
    };
    let unchained =
        if report.unchained > 0 { format!(", {} unchained (older format)", report.unchained) } else { String::new() };
    println!(
        "{} records in {} files, {range}{unchained}; head {}",
        report.records,
        report.files.len(),
        report.head.as_deref().unwrap_or("-")
    );
    if report.is_intact() {
        println!("audit chain intact");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("audit chain BROKEN: {} problem(s)", report.problems.len());
        Ok(ExitCode::from(1))
    }
}

/// The principal of a user or service token declared in the mesh's `auth` section.
fn configured_principal(engine: &Engine, name: &str) -> Result<agora_engine::Principal> {
    let auth = &engine.config().auth;
    if let Some(u) = auth.users.iter().find(|u| u.name == name) {
        return Ok(u.principal());
    }
    if let Some(t) = auth.service_tokens.iter().find(|t| t.name == name) {
        return Ok(t.principal());
    }
    let known: Vec<&str> =
        auth.users.iter().map(|u| u.name.as_str()).chain(auth.service_tokens.iter().map(|t| t.name.as_str())).collect();
    anyhow::bail!("--as {name}: no such user or service in the mesh's auth section; known: {}", known.join(", "))
}

/// All of standard input, as text.
fn read_stdin() -> Result<String> {
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).context("cannot read standard input")?;
    Ok(text)
}

async fn check(config: &std::path::Path, quality: bool) -> Result<ExitCode> {
    let engine = Engine::open(config)?;
    println!("{}: configuration ok ({} domains)", config.display(), engine.domains().len());
    let mut failed = 0;
    for (domain, why) in engine.attach_failures() {
        failed += 1;
        println!("FAIL  domain {domain}: its attached PostgreSQL schema could not be listed: {why}");
    }
    for check in engine.check().await {
        let contract = engine
            .config()
            .domain(&check.product.domain)
            .and_then(|d| d.product(&check.product.product))
            .and_then(|p| p.contract.clone());
        let name = check.product.to_string();
        match check.result {
            Ok(schema) => {
                let drift = contract.as_ref().map(|c| agora_engine::contract::drift(c, &schema)).unwrap_or_default();
                if drift.is_empty() {
                    let with = if contract.is_some() { ", matches its contract" } else { "" };
                    println!("ok    {name:<32} {} columns{with}", schema.fields().len());
                } else {
                    failed += 1;
                    println!("DRIFT {name:<32} the source no longer matches its contract:");
                    for d in drift {
                        println!("        {d}");
                    }
                }
            }
            Err(e) => {
                failed += 1;
                println!("FAIL  {name:<32} {e}");
            }
        }
    }
    if let Some(policies) = engine.policies() {
        match engine.validate_policies().await {
            Ok(()) => println!("ok    policies {} (deny by default)", policies.version()),
            Err(e) => {
                failed += 1;
                println!("FAIL  policies: {e}");
            }
        }
    } else {
        println!("note  no governance section: every authenticated principal reads every product");
    }
    if quality {
        let results = engine.check_quality().await?;
        println!(
            "quality rules ({} checked, results appended to {}):",
            results.len(),
            engine.config().quality.display()
        );
        for r in &results {
            let column = r.column.as_deref().map(|c| format!(".{c}")).unwrap_or_default();
            let what = format!("{}{column}", r.product);
            let observed = r.observed.map(|v| format!("{v}")).unwrap_or_else(|| "-".into());
            let label = match r.outcome.as_str() {
                "pass" => "pass ",
                "fail" => "FAIL ",
                "skipped" => "skip ",
                _ => "ERROR",
            };
            println!("{label} {what:<32} {:<44} {} (measured {observed})", r.rule, r.expected);
            if r.outcome != "pass"
                && let Some(m) = &r.message
            {
                println!("        {m}");
            }
            if r.outcome == "fail" || r.outcome == "error" {
                failed += 1;
            }
        }
    }
    if let Some(lineage) = engine.lineage() {
        lineage.flush(std::time::Duration::from_secs(10)).await;
    }
    if failed > 0 {
        println!("{failed} check{} failed", if failed == 1 { "" } else { "s" });
        Ok(ExitCode::FAILURE)
    } else {
        Ok(ExitCode::SUCCESS)
    }
}

/// Reads one password line from standard input, prompting on a terminal.
fn read_password() -> Result<String> {
    use std::io::{BufRead, IsTerminal, Write};
    if std::io::stdin().is_terminal() {
        eprint!("password (input is shown): ");
        std::io::stderr().flush()?;
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let password = line.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        anyhow::bail!("empty password: give the password on standard input");
    }
    Ok(password)
}

async fn serve(engine: Engine, bind: SocketAddr, server: &ServerArgs, demo_mesh: Option<PathBuf>) -> Result<()> {
    // Never serve under policies that do not fit the data.
    engine.validate_policies().await?;
    match (engine.policies(), engine.audit_log()) {
        (Some(p), Some(audit)) => {
            tracing::info!(version = p.version(), audit = %audit.path().display(), "policies loaded; deny by default")
        }
        _ => tracing::warn!(
            "no governance section: the mesh is open, every authenticated principal reads every product, and nothing is audited"
        ),
    }
    // Every start-up check passes before anything says it is serving.
    let flight = FlightServer::prepare(engine.clone(), server.options()).await?;
    let listener = tokio::net::TcpListener::bind(bind).await.with_context(|| format!("cannot listen on {bind}"))?;
    let ops = match server.metrics_bind {
        MetricsBind::Off => None,
        MetricsBind::At(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (--metrics-bind; `off` serves no metrics)"))?,
        ),
    };
    let bind = listener.local_addr().unwrap_or(bind);
    let products: usize = engine.domains().iter().map(|d| d.products.len()).sum();
    println!(
        "Agora serving {} domains, {products} products over Arrow Flight SQL at grpc://{bind}",
        engine.domains().len()
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    if let Some(ops) = ops {
        let addr = ops.local_addr().context("the metrics listener has no address")?;
        println!("Metrics at http://{addr}/metrics, health at http://{addr}/healthz and /readyz");
        let mut stopped = stopped.clone();
        let engine = engine.clone();
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            if let Err(e) = agora_flight_server::ops::serve_ops(engine, ops, shutdown).await {
                tracing::error!(error = %e, "the metrics listener failed");
            }
        });
    }
    if let Some(mesh) = demo_mesh {
        print_demo_help(&mesh, bind);
    }
    // First signal: drain (new queries refused, connections kept, running
    // queries finish); then stop once nothing runs, the drain time is over,
    // or at a second signal.
    let (begin_drain, drain) = tokio::sync::oneshot::channel::<()>();
    let (begin_stop, stopping) = tokio::sync::oneshot::channel::<()>();
    let serving = flight.serve_draining(
        listener,
        async move {
            let _ = drain.await;
        },
        async move {
            let _ = stopping.await;
        },
    );
    tokio::pin!(serving);
    tokio::select! {
        result = &mut serving => return Ok(result?),
        _ = shutdown_signal() => {}
    }
    let _ = stop.send(true);
    let _ = begin_drain.send(());
    let drain = std::time::Duration::try_from_secs_f64(server.drain_seconds.max(0.0)).unwrap_or_default();
    tracing::info!(drain_seconds = drain.as_secs_f64(), "shutdown requested; running queries may finish");
    let drained = tokio::select! {
        result = &mut serving => return Ok(result?),
        _ = idle(&engine) => true,
        _ = tokio::time::sleep(drain) => false,
        _ = shutdown_signal() => false,
    };
    if !drained {
        let running = engine.usage().running_queries;
        tracing::warn!(running, "stopping the running queries: drain time over or second signal");
        engine.stop_queries();
    }
    let _ = begin_stop.send(());
    // Streams stopped end with an error, and are audited, within moments.
    match tokio::time::timeout(std::time::Duration::from_secs(5), &mut serving).await {
        Ok(result) => Ok(result?),
        Err(_) => {
            tracing::warn!("exiting with requests still open");
            Ok(())
        }
    }
}

/// How long a draining server must have had no query before it stops: a
/// client that just read its result closes its statement and its session
/// right after, and those calls must still find the server.
const QUIET_BEFORE_STOP: std::time::Duration = std::time::Duration::from_millis(300);

/// Completes once `engine` has had no query queued, running or streaming for
/// [`QUIET_BEFORE_STOP`].
async fn idle(engine: &Engine) {
    let mut quiet_since: Option<std::time::Instant> = None;
    loop {
        if engine.is_idle() {
            let since = *quiet_since.get_or_insert_with(std::time::Instant::now);
            if since.elapsed() >= QUIET_BEFORE_STOP {
                return;
            }
        } else {
            quiet_since = None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn print_demo_help(mesh: &std::path::Path, bind: SocketAddr) {
    println!(
        r#"
Demo mesh: {mesh}
Users: {users}
  sales.orders, sales.lineitem               (Parquet, orders partitioned by year)
  customers.customer, customers.nation, customers.region   (Delta Lake)
  supply.part, supply.supplier, supply.partsupp            (Parquet)

Connect from Python (pip install adbc-driver-flightsql pyarrow):

  import adbc_driver_flightsql.dbapi as flightsql
  conn = flightsql.connect("grpc://{bind}", autocommit=True,
                           db_kwargs={{"username": "admin", "password": "admin-demo"}})
  cur = conn.cursor()
  cur.execute("SELECT count(*) FROM sales.orders")
  print(cur.fetch_arrow_table())

Or query in-process:  agora query --config {mesh} [--as analyst] "SELECT ..."

Policies (docs/governance.md): policies.yaml and customers/policies.yaml next to
the mesh; every request is audited in audit/audit.jsonl and system.audit_log.

Data products (docs/data-products.md): each product has an ODCS contract beside
its data; one quality rule fails and supply.part drifts, on purpose.

  SELECT domain, product, owner, status FROM system.products;
  SELECT * FROM search_products('customer phone');
  agora check --quality --config {mesh}

Every query's OpenLineage events go to lineage/events.jsonl.

Example cross-domain queries:

  -- Revenue by customer nation
  SELECT n.n_name, sum(l.l_extendedprice * (1 - l.l_discount)) AS revenue
  FROM sales.lineitem l
  JOIN sales.orders o ON l.l_orderkey = o.o_orderkey
  JOIN customers.customer c ON o.o_custkey = c.c_custkey
  JOIN customers.nation n ON c.c_nationkey = n.n_nationkey
  GROUP BY n.n_name ORDER BY revenue DESC LIMIT 5;

  -- Orders shipped by a supplier from the customer's own nation
  SELECT o.year, count(DISTINCT o.o_orderkey) AS orders
  FROM sales.orders o
  JOIN customers.customer c ON o.o_custkey = c.c_custkey
  JOIN sales.lineitem l ON l.l_orderkey = o.o_orderkey
  JOIN supply.supplier s ON l.l_suppkey = s.s_suppkey AND s.s_nationkey = c.c_nationkey
  GROUP BY o.year ORDER BY o.year;

  -- Most valuable part stock per region
  SELECT r.r_name, sum(ps.ps_supplycost * ps.ps_availqty) AS stock_value
  FROM supply.partsupp ps
  JOIN supply.supplier s ON ps.ps_suppkey = s.s_suppkey
  JOIN customers.nation n ON s.s_nationkey = n.n_nationkey
  JOIN customers.region r ON n.n_regionkey = r.r_regionkey
  GROUP BY r.r_name ORDER BY stock_value DESC;

Press Ctrl-C to stop."#,
        mesh = mesh.display(),
        users =
            demo::DEMO_USERS.iter().map(|(u, p, what)| format!("{u} / {p} ({what})")).collect::<Vec<_>>().join(", "),
    );
}
