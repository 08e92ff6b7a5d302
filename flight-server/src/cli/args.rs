//! The `agora` command line's commands and the options several of them
//! share: where a server listens and how (`ServerArgs`), and where SQL runs
//! (`ConnectionArgs`).

use std::net::SocketAddr;
use std::path::PathBuf;

use agora_engine::Engine;
use agora_flight_server::{ServeOptions, TlsFiles, TypePolicy};
use anyhow::{Context, Result};
use clap::Subcommand;

use super::backend::{Backend, Login};
use super::output::Format;

// The commands of `agora`, each run by its file under `cli/`. (Plain
// comments on the clap types: clap would read doc comments as help text.)
#[derive(Subcommand)]
#[allow(clippy::large_enum_variant, reason = "the command line is parsed once per process")]
pub enum Command {
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

// `agora audit`'s subcommands.
#[derive(Subcommand)]
pub enum AuditCommand {
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

// `agora products`'s subcommands.
#[derive(Subcommand)]
pub enum ProductsCommand {
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

// How `agora serve` and `agora demo` serve: TLS, types, metrics, draining.
#[derive(clap::Args)]
pub struct ServerArgs {
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
    pub metrics_bind: MetricsBind,
    /// On SIGTERM or Ctrl-C, how long running queries may finish (new
    /// connections are refused meanwhile) before they are stopped, their
    /// clients told UNAVAILABLE and the queries audited as cancelled. A
    /// second signal stops them at once.
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
    pub drain_seconds: f64,
}

/// Where the operations listener binds, if anywhere.
#[derive(Clone, Copy)]
pub enum MetricsBind {
    /// `--metrics-bind off`: no operations listener.
    Off,
    /// Listen on this address.
    At(SocketAddr),
}

/// Parses `--metrics-bind`: an address, or `off`.
fn parse_metrics_bind(value: &str) -> Result<MetricsBind, String> {
    if value == "off" {
        return Ok(MetricsBind::Off);
    }
    value.parse().map(MetricsBind::At).map_err(|e| format!("{e}: give an address such as 127.0.0.1:9464, or off"))
}

impl ServerArgs {
    /// The library's serving options these flags ask for.
    pub fn options(&self) -> ServeOptions {
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
pub struct ConnectionArgs {
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
    pub async fn backend(&self) -> Result<(Backend, Option<Engine>, String)> {
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
                let engine = Engine::open(&self.config).await?;
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

/// The principal of a user or service token declared in the mesh's `auth` section.
pub fn configured_principal(engine: &Engine, name: &str) -> Result<agora_engine::Principal> {
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
