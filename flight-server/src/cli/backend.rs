//! Where the command line's statements run: in this process on a mesh
//! configuration, or on a remote server over Flight SQL. `agora query` and
//! `agora shell` speak to either the same way.

use anyhow::{Context, Result};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use agora_engine::{Engine, Principal};

/// A statement's result: its schema and its batches, read as they come.
pub struct Rows {
    /// The result's schema.
    pub schema: SchemaRef,
    /// The batches, streamed.
    pub batches: BoxStream<'static, Result<RecordBatch>>,
}

/// Runs statements in-process or on a server.
pub enum Backend {
    /// An engine in this process, queried as a principal.
    Local { engine: Engine, principal: Principal },
    /// A Flight SQL server, logged in.
    Remote(Box<FlightSqlServiceClient<Channel>>),
}

/// How to log in to a remote server.
pub enum Login {
    /// A Handshake with a user and password.
    Password { user: String, password: String },
    /// A bearer token (a service token, or one from an earlier Handshake).
    Token(String),
}

impl Backend {
    /// Connects to `url` (`grpc://host:port` or `grpc+tls://host:port`;
    /// `ca` is a PEM file of the server's certificate authority, the
    /// system's roots otherwise) and logs in.
    pub async fn remote(url: &str, login: Login, ca: Option<&std::path::Path>) -> Result<Self> {
        let (tls, address) = if let Some(rest) = url.strip_prefix("grpc+tls://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("grpc://") {
            (false, rest)
        } else {
            anyhow::bail!("--url expects grpc://host:port or grpc+tls://host:port, got '{url}'");
        };
        let scheme = if tls { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{address}"))
            .with_context(|| format!("--url '{url}' is not a valid address"))?
            .connect_timeout(std::time::Duration::from_secs(10));
        if tls {
            let host = address.rsplit_once(':').map(|(h, _)| h).unwrap_or(address);
            let mut config = ClientTlsConfig::new().domain_name(host.trim_matches(|c| c == '[' || c == ']'));
            config = match ca {
                Some(path) => {
                    let pem =
                        std::fs::read(path).with_context(|| format!("cannot read --tls-ca {}", path.display()))?;
                    config.ca_certificate(Certificate::from_pem(pem))
                }
                None => config.with_native_roots(),
            };
            endpoint = endpoint.tls_config(config).context("cannot set up TLS")?;
        }
        let channel = endpoint.connect().await.with_context(|| format!("cannot connect to {url}"))?;
        let mut client = FlightSqlServiceClient::new(channel);
        match login {
            Login::Password { user, password } => {
                client
                    .handshake(&user, &password)
                    .await
                    .map_err(|e| anyhow::anyhow!("login as {user} refused: {e}"))?;
            }
            Login::Token(token) => client.set_token(token),
        }
        Ok(Backend::Remote(Box::new(client)))
    }

    /// Runs one statement.
    pub async fn run(&mut self, sql: &str) -> Result<Rows> {
        match self {
            Backend::Local { engine, principal } => {
                let stream = engine.session_as(principal.clone()).sql(sql).await?;
                let schema = stream.schema();
                let batches = stream.map_err(|e| anyhow::Error::from(agora_engine::EngineError::from(e))).boxed();
                Ok(Rows { schema, batches })
            }
            Backend::Remote(client) => {
                let info = client.execute(sql.to_string(), None).await.map_err(remote_error)?;
                let schema =
                    std::sync::Arc::new(info.clone().try_decode_schema().context("the server sent no schema")?);
                let mut streams = Vec::new();
                for endpoint in info.endpoint {
                    let ticket = endpoint.ticket.context("the server sent an endpoint without a ticket")?;
                    streams.push(client.do_get(ticket).await.map_err(remote_error)?);
                }
                let batches = futures::stream::iter(streams)
                    .flatten()
                    .map_err(|e| anyhow::anyhow!(remote_message(&e.to_string())))
                    .boxed();
                Ok(Rows { schema, batches })
            }
        }
    }
}

/// The server's message, without the client library's wrapping.
fn remote_error(err: arrow_flight::error::FlightError) -> anyhow::Error {
    anyhow::anyhow!(remote_message(&err.to_string()))
}

fn remote_message(text: &str) -> String {
    match text.split_once("message: \"") {
        Some((_, rest)) => rest.split("\", details").next().unwrap_or(rest).replace("\\\"", "\"").replace("\\n", "\n"),
        None => text.to_string(),
    }
}
