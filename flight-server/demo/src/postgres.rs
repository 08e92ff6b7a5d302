//! The demo's `supply` domain in PostgreSQL (`agora demo --postgres URL`):
//! the generated Parquet files copied into schema `supply`, and the mesh
//! configuration that serves the domain from there.

use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result};
use arrow::datatypes::DataType;

use crate::DEMO_PG_PASSWORD_ENV;

/// A PostgreSQL URL without its password, for stamps and messages.
pub(crate) fn redacted(url: &url::Url) -> String {
    let mut url = url.clone();
    let _ = url.set_password(None);
    url.to_string()
}

/// Connection settings of a `postgres://` URL: (host, port, user, database).
fn postgres_parts(url: &url::Url) -> Result<(String, u16, String, String)> {
    if url.scheme() != "postgres" && url.scheme() != "postgresql" {
        anyhow::bail!("--postgres expects postgres://user@host:port/database, got scheme '{}'", url.scheme());
    }
    let host = url.host_str().filter(|h| !h.is_empty()).context("--postgres URL has no host")?.to_string();
    let user = if url.username().is_empty() { "postgres".to_string() } else { url.username().to_string() };
    let database = url.path().trim_start_matches('/');
    let database = if database.is_empty() { "postgres".to_string() } else { database.to_string() };
    Ok((host, url.port().unwrap_or(5432), user, database))
}

/// Copies the demo's `supply` products (already written as Parquet) into schema
/// `supply` of the database, replacing earlier copies.
pub(crate) async fn load_supply_into_postgres(dir: &Path, url: &url::Url) -> Result<()> {
    use futures::SinkExt;

    let (host, port, user, database) = postgres_parts(url)?;
    let mut config = tokio_postgres::Config::new();
    config.host(&host).port(port).user(&user).dbname(&database).application_name("agora-demo");
    if let Some(password) = url.password() {
        config.password(password);
    }
    let (client, connection) =
        config.connect(tokio_postgres::NoTls).await.with_context(|| format!("cannot connect to {}", redacted(url)))?;
    let connection = tokio::spawn(connection);
    client.batch_execute("CREATE SCHEMA IF NOT EXISTS supply").await?;
    for table in ["part", "supplier", "partsupp"] {
        let file = dir.join(format!("supply/{table}/part-1.parquet"));
        let reader =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(File::open(&file)?)?.build()?;
        let schema = arrow::array::RecordBatchReader::schema(&reader);
        let columns: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| Ok(format!("{} {}", f.name(), postgres_type(f.data_type())?)))
            .collect::<Result<_>>()?;
        client
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS supply.{table} CASCADE; CREATE TABLE supply.{table} ({})",
                columns.join(", ")
            ))
            .await?;
        let sink = client.copy_in(&format!("COPY supply.{table} FROM STDIN (FORMAT csv)")).await?;
        futures::pin_mut!(sink);
        for batch in reader {
            let mut csv = Vec::new();
            arrow::csv::WriterBuilder::new().with_header(false).build(&mut csv).write(&batch?)?;
            sink.send(bytes::Bytes::from(csv)).await?;
        }
        sink.finish().await?;
        client.batch_execute(&format!("ANALYZE supply.{table}")).await?;
    }
    // TPC-H's keys, declared as a procurement team's database would: catalog
    // browsers (JDBC, ODBC, Power BI) read the relationships from them.
    client
        .batch_execute(
            "ALTER TABLE supply.part ADD PRIMARY KEY (p_partkey); \
             ALTER TABLE supply.supplier ADD PRIMARY KEY (s_suppkey); \
             ALTER TABLE supply.partsupp ADD PRIMARY KEY (ps_partkey, ps_suppkey), \
               ADD CONSTRAINT partsupp_part_fkey FOREIGN KEY (ps_partkey) REFERENCES supply.part, \
               ADD CONSTRAINT partsupp_supplier_fkey FOREIGN KEY (ps_suppkey) REFERENCES supply.supplier",
        )
        .await
        .context("cannot declare the supply tables' keys")?;
    drop(client);
    let _ = connection.await;
    Ok(())
}

/// The PostgreSQL column type for the demo's Arrow types.
fn postgres_type(data_type: &DataType) -> Result<String> {
    Ok(match data_type {
        DataType::Int32 => "integer".to_string(),
        DataType::Int64 => "bigint".to_string(),
        DataType::Float64 => "double precision".to_string(),
        DataType::Decimal128(p, s) => format!("numeric({p},{s})"),
        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => "text".to_string(),
        DataType::Date32 => "date".to_string(),
        other => anyhow::bail!("no PostgreSQL type for the demo column type {other}"),
    })
}

/// The `supply` domain served from PostgreSQL.
pub(crate) fn supply_from_postgres(url: &url::Url) -> Result<String> {
    let (host, port, user, database) = postgres_parts(url)?;
    let password =
        if url.password().is_some() { format!("\n      password_env: {DEMO_PG_PASSWORD_ENV}") } else { String::new() };
    Ok(format!(
        r#"  - name: supply
    description: Parts we sell and the suppliers who provide them, in the procurement team's PostgreSQL.
    owner: {{ name: Procurement, contact: procurement@example.com }}
    postgres:
      host: {host}
      port: {port}
      database: {database}
      user: {user}{password}
      sslmode: prefer
    products:
      - name: part
        description: The parts catalogue with brand, type, size and retail price.
        source: {{ kind: postgres, table: supply.part }}
        contract: supply/part.odcs.yaml
      - name: supplier
        description: Suppliers with their nation and account balance.
        source: {{ kind: postgres, table: supply.supplier }}
        contract: supply/supplier.odcs.yaml
      - name: partsupp
        description: Which supplier offers which part, at what cost and with how much stock.
        source: {{ kind: postgres, table: supply.partsupp }}
        contract: supply/partsupp.odcs.yaml
"#
    ))
}
