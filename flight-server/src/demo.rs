//! The demo mesh: TPC-H data split into three domains, written once to local disk.
//!
//! | domain      | products                    | format                              |
//! |-------------|-----------------------------|-------------------------------------|
//! | `sales`     | `orders`, `lineitem`        | Parquet (`orders` partitioned by year) |
//! | `customers` | `customer`, `nation`, `region` | Delta Lake                        |
//! | `supply`    | `part`, `supplier`, `partsupp` | Parquet                           |

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow::array::{ArrayRef, AsArray, RecordBatch};
use arrow::compute::kernels::temporal::{DatePart, date_part};
use arrow::compute::{cast, filter_record_batch};
use arrow::datatypes::Int32Type;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use indicatif::{ProgressBar, ProgressStyle};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use tpchgen::generators::{
    CustomerGenerator, LineItemGenerator, NationGenerator, OrderGenerator, PartGenerator, PartSuppGenerator,
    RegionGenerator, SupplierGenerator,
};
use tpchgen_arrow::{
    CustomerArrow, LineItemArrow, NationArrow, OrderArrow, PartArrow, PartSuppArrow, RegionArrow, SupplierArrow,
};

mod s3;
pub use s3::S3Target;

/// Version of the demo's layout and configuration; a demo directory written by
/// another version is generated again.
const DEMO_FORMAT: &str = "agora-demo-6";

/// The demo's users and their passwords, printed by `agora demo`. The demo
/// serves loopback only; these are not secrets.
pub const DEMO_USERS: &[(&str, &str, &str)] = &[
    ("admin", "admin-demo", "sees everything"),
    (
        "analyst",
        "analyst-demo",
        "European customers only, phone numbers masked, customer keys tokenised, no account balances",
    ),
];

/// Name of the file that marks a finished generation; its absence means a
/// previous run was interrupted and the data is generated again.
const COMPLETE_MARKER: &str = ".agora-demo-complete";

/// The demo mesh's configuration file inside the demo directory.
pub const MESH_FILE: &str = "mesh.yaml";

/// A batch as tpchgen-arrow's generators yield it.
type Batch = std::result::Result<RecordBatch, arrow::error::ArrowError>;

/// Files `lineitem` is split into, so that scans run in parallel.
const LINEITEM_FILES: i32 = 4;

/// Options of the demo generator.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Where the mesh is written.
    pub dir: PathBuf,
    /// TPC-H scale factor (1.0 ≈ 1 GB of CSV; the default 0.1 takes seconds).
    pub scale: f64,
    /// Draw a progress bar on the terminal.
    pub progress: bool,
    /// Put the `supply` domain into this PostgreSQL database
    /// (`postgres://user[:password]@host[:port]/database`) and register it from there.
    pub postgres: Option<url::Url>,
    /// Put the `sales` domain into this S3 bucket and register it from there.
    pub s3: Option<S3Target>,
}

/// Generates the demo mesh unless a complete one is already in `options.dir`,
/// and returns the path of its `mesh.yaml`. With `--s3` the `sales` files
/// are copied to the bucket at every start (see [`s3`]).
pub async fn ensure(options: &DemoOptions) -> Result<PathBuf> {
    let mesh = generate(options).await?;
    if let Some(target) = &options.s3 {
        s3::upload_sales(&options.dir, target).await?;
    }
    Ok(mesh)
}

async fn generate(options: &DemoOptions) -> Result<PathBuf> {
    let dir = &options.dir;
    let mesh = dir.join(MESH_FILE);
    let marker = dir.join(COMPLETE_MARKER);
    let stamp = format!(
        "{DEMO_FORMAT} {} {} {}",
        options.scale,
        options.postgres.as_ref().map(redacted).unwrap_or_default(),
        options.s3.as_ref().map(S3Target::stamp).unwrap_or_default()
    );
    if marker.exists() && mesh.exists() && std::fs::read_to_string(&marker).unwrap_or_default().trim() == stamp.trim() {
        return Ok(mesh);
    }
    for domain in ["sales", "customers", "supply"] {
        let path = dir.join(domain);
        if path.exists() {
            std::fs::remove_dir_all(&path).with_context(|| format!("cannot clear {}", path.display()))?;
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;

    let sf = options.scale;
    let rows = |n: i64| n.max(0) as u64;
    let total = rows(OrderGenerator::calculate_row_count(sf, 1, 1)) * 5 // lineitem ≈ 4 per order
        + rows(CustomerGenerator::calculate_row_count(sf, 1, 1))
        + rows(PartGenerator::calculate_row_count(sf, 1, 1)) * 5 // partsupp = 4 per part
        + rows(SupplierGenerator::calculate_row_count(sf, 1, 1))
        + 30;
    let bar = if options.progress { ProgressBar::new(total) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{msg:>18} [{bar:40}] {percent:>3}% {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );

    bar.set_message("sales.orders");
    write_orders_by_year(&dir.join("sales/orders"), OrderArrow::new(OrderGenerator::new(sf, 1, 1)), &bar)?;
    bar.set_message("sales.lineitem");
    for part in 1..=LINEITEM_FILES {
        let batches = LineItemArrow::new(LineItemGenerator::new(sf, part, LINEITEM_FILES));
        write_parquet(&dir.join(format!("sales/lineitem/part-{part}.parquet")), batches, &bar)?;
    }

    bar.set_message("supply.part");
    write_parquet(&dir.join("supply/part/part-1.parquet"), PartArrow::new(PartGenerator::new(sf, 1, 1)), &bar)?;
    bar.set_message("supply.supplier");
    write_parquet(
        &dir.join("supply/supplier/part-1.parquet"),
        SupplierArrow::new(SupplierGenerator::new(sf, 1, 1)),
        &bar,
    )?;
    bar.set_message("supply.partsupp");
    write_parquet(
        &dir.join("supply/partsupp/part-1.parquet"),
        PartSuppArrow::new(PartSuppGenerator::new(sf, 1, 1)),
        &bar,
    )?;

    bar.set_message("customers.customer");
    let customers =
        CustomerArrow::new(CustomerGenerator::new(sf, 1, 1)).map(|b| with_region(&b?)).collect::<Result<Vec<_>>>()?;
    write_delta(&dir.join("customers/customer"), customers.into_iter().map(Ok), &bar).await?;
    bar.set_message("customers.nation");
    write_delta(&dir.join("customers/nation"), NationArrow::new(NationGenerator::new(sf, 1, 1)), &bar).await?;
    bar.set_message("customers.region");
    write_delta(&dir.join("customers/region"), RegionArrow::new(RegionGenerator::new(sf, 1, 1)), &bar).await?;
    if let Some(url) = &options.postgres {
        bar.set_message("supply → PostgreSQL");
        load_supply_into_postgres(dir, url).await?;
    }
    bar.finish_with_message("done");

    std::fs::write(&mesh, mesh_yaml(options.postgres.as_ref(), options.s3.as_ref())?)
        .with_context(|| format!("cannot write {}", mesh.display()))?;
    write_policies(dir)?;
    write_contracts(dir)?;
    std::fs::write(&marker, stamp.trim()).with_context(|| format!("cannot write {}", marker.display()))?;
    Ok(mesh)
}

/// The demo's data contracts (ODCS v3.2), one per product. `sales.lineitem`
/// has a rule the data breaks and `supply.part` promises a column the data
/// lacks, so that users see a failing quality check and schema drift.
const CONTRACTS: &[(&str, &str)] = &[
    ("sales/orders", include_str!("demo/contracts/sales.orders.odcs.yaml")),
    ("sales/lineitem", include_str!("demo/contracts/sales.lineitem.odcs.yaml")),
    ("customers/customer", include_str!("demo/contracts/customers.customer.odcs.yaml")),
    ("customers/nation", include_str!("demo/contracts/customers.nation.odcs.yaml")),
    ("customers/region", include_str!("demo/contracts/customers.region.odcs.yaml")),
    ("supply/part", include_str!("demo/contracts/supply.part.odcs.yaml")),
    ("supply/supplier", include_str!("demo/contracts/supply.supplier.odcs.yaml")),
    ("supply/partsupp", include_str!("demo/contracts/supply.partsupp.odcs.yaml")),
];

/// Writes each contract beside its product's data (`sales/orders.odcs.yaml`
/// next to `sales/orders/`), where the engine finds it.
fn write_contracts(dir: &Path) -> Result<()> {
    for (product, text) in CONTRACTS {
        let path = dir.join(format!("{product}.odcs.yaml"));
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// Casts view types to their plain equivalents: the files are read by other
/// engines and older clients too.
fn plain_types(batch: &RecordBatch) -> Result<RecordBatch> {
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        let target = match field.data_type() {
            DataType::Utf8View => DataType::Utf8,
            DataType::BinaryView => DataType::Binary,
            other => other.clone(),
        };
        columns.push(if &target == column.data_type() { Arc::clone(column) } else { cast(column, &target)? });
        fields.push(Field::new(field.name(), target, field.is_nullable()));
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?)
}

fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(128 * 1024))
        .build()
}

fn write_parquet(path: &Path, batches: impl Iterator<Item = Batch>, bar: &ProgressBar) -> Result<()> {
    let mut writer: Option<ArrowWriter<File>> = None;
    for batch in batches {
        let batch = batch?;
        let batch = plain_types(&batch)?;
        if writer.is_none() {
            writer = Some(new_writer(path, batch.schema())?);
        }
        if let Some(w) = writer.as_mut() {
            w.write(&batch)?;
        }
        bar.inc(batch.num_rows() as u64);
    }
    if let Some(w) = writer {
        w.close()?;
    }
    Ok(())
}

fn new_writer(path: &Path, schema: SchemaRef) -> Result<ArrowWriter<File>> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    Ok(ArrowWriter::try_new(file, schema, Some(writer_properties()))?)
}

/// Writes orders as `year=YYYY/part-1.parquet`, one file per order year.
fn write_orders_by_year(dir: &Path, batches: OrderArrow, bar: &ProgressBar) -> Result<()> {
    let mut writers: BTreeMap<i32, ArrowWriter<File>> = BTreeMap::new();
    for batch in batches {
        let batch = batch?;
        let batch = plain_types(&batch)?;
        let dates = batch.column_by_name("o_orderdate").context("orders have no o_orderdate column")?;
        let years = date_part(dates, DatePart::Year)?;
        let years: Vec<i32> = years.as_primitive::<Int32Type>().iter().map(|y| y.unwrap_or(0)).collect();
        let mut distinct = years.clone();
        distinct.sort_unstable();
        distinct.dedup();
        for year in distinct {
            let mask = arrow::array::BooleanArray::from(years.iter().map(|y| *y == year).collect::<Vec<_>>());
            let part = filter_record_batch(&batch, &mask)?;
            let writer = match writers.entry(year) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(new_writer(&dir.join(format!("year={year}/part-1.parquet")), part.schema())?)
                }
            };
            writer.write(&part)?;
        }
        bar.inc(batch.num_rows() as u64);
    }
    for writer in writers.into_values() {
        writer.close()?;
    }
    Ok(())
}

async fn write_delta(dir: &Path, batches: impl Iterator<Item = Batch>, bar: &ProgressBar) -> Result<()> {
    let mut plain = Vec::new();
    for batch in batches {
        let batch = batch?;
        bar.inc(batch.num_rows() as u64);
        plain.push(plain_types(&batch)?);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = std::path::absolute(dir)?;
    let url =
        url::Url::from_directory_path(&dir).map_err(|()| anyhow::anyhow!("cannot make a URL of {}", dir.display()))?;
    let table = deltalake::DeltaTable::try_from_url(url).await?;
    table.write(plain).with_writer_properties(writer_properties()).await?;
    Ok(())
}

/// A PostgreSQL URL without its password, for stamps and messages.
fn redacted(url: &url::Url) -> String {
    let mut url = url.clone();
    let _ = url.set_password(None);
    url.to_string()
}

/// The environment variable that holds the demo database's password, when its URL has one.
pub const DEMO_PG_PASSWORD_ENV: &str = "AGORA_DEMO_PG_PASSWORD";

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
async fn load_supply_into_postgres(dir: &Path, url: &url::Url) -> Result<()> {
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
fn supply_from_postgres(url: &url::Url) -> Result<String> {
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

/// TPC-H's fixed nation → region assignment (`n_regionkey` of nations 0–24).
const NATION_REGION: [&str; 25] = [
    "AFRICA",
    "AMERICA",
    "AMERICA",
    "AMERICA",
    "MIDDLE EAST",
    "AFRICA",
    "EUROPE",
    "EUROPE",
    "ASIA",
    "ASIA",
    "MIDDLE EAST",
    "MIDDLE EAST",
    "ASIA",
    "MIDDLE EAST",
    "AFRICA",
    "AFRICA",
    "AFRICA",
    "AMERICA",
    "ASIA",
    "EUROPE",
    "MIDDLE EAST",
    "ASIA",
    "EUROPE",
    "EUROPE",
    "AMERICA",
];

/// Adds `c_region` (the customer's region name) to a customer batch, so that
/// the demo's row filter can keep an analyst to one region.
fn with_region(batch: &RecordBatch) -> Result<RecordBatch> {
    use arrow::array::{Array, StringArray};
    use arrow::datatypes::Int64Type;
    let column = batch.column_by_name("c_nationkey").context("customer batch without c_nationkey")?;
    let column = cast(column, &DataType::Int64)?;
    let keys = column.as_primitive::<Int64Type>();
    let regions: StringArray = keys
        .iter()
        .map(|k| k.and_then(|k| usize::try_from(k).ok()).and_then(|k| NATION_REGION.get(k).copied()))
        .collect();
    let mut fields: Vec<Field> = batch.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("c_region", DataType::Utf8, regions.null_count() > 0));
    let mut columns = batch.columns().to_vec();
    columns.push(Arc::new(regions));
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?)
}

/// Writes the demo's policies: a mesh-wide file, the CRM domain's own file and
/// a random key for keyed tokens.
fn write_policies(dir: &Path) -> Result<()> {
    let key_file = dir.join("token.key");
    if !key_file.exists() {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| anyhow::anyhow!("no OS random source for the token key: {e}"))?;
        std::fs::write(&key_file, hex::encode(key)).with_context(|| format!("cannot write {}", key_file.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    std::fs::write(dir.join("policies.yaml"), GLOBAL_POLICIES).context("cannot write policies.yaml")?;
    std::fs::write(dir.join("customers/policies.yaml"), CUSTOMERS_POLICIES)
        .context("cannot write customers/policies.yaml")?;
    Ok(())
}

/// The demo's mesh-wide policies. See docs/governance.md for a walk-through.
const GLOBAL_POLICIES: &str = r#"# Mesh-wide policies of the Agora demo mesh (docs/governance.md walks through them).
# Everything not granted here or in a domain's own policy file is denied.

# Admins read everything unmasked and see the whole audit log. `local` is the
# operator running `agora query` on this machine without --as.
admins:
  groups: [admins]
  users: [local]

# Keyed tokens (mask type `token`) use this secret: the same value gives the
# same token in every domain, so tokenised keys still join.
token_key_file: token.key

# Columns tagged `contact` (tags are set in each domain's policy file) show only
# their last 4 characters, except to the CRM support group.
tag_rules:
  - id: contact-last-4
    tag: contact
    mask: { type: last_n, n: 4 }
    except: { groups: [crm-support] }

grants:
  - id: analysts-sales
    to: { groups: [analysts] }
    domain: sales
    masks:
      o_custkey: { type: token }
  - id: analysts-supply
    to: { groups: [analysts] }
    domain: supply
"#;

/// The CRM domain's own policies, kept next to its products.
const CUSTOMERS_POLICIES: &str = r#"# Policies of the customers domain, owned by the CRM team.
owners:
  groups: [crm-team]

# Column classification: tag rules in the mesh-wide file act on these tags.
tags:
  customer:
    c_phone: [pii, contact]
    c_address: [pii]
    c_name: [pii]

grants:
  # Analysts see their own region's customers, without account balances, with
  # customer keys as tokens (joinable with sales.orders.o_custkey, which is
  # tokenised with the same key) and phone numbers masked by the tag rule.
  # Names are tokens too: "Customer#000000042" spells the key out, and a token
  # hides a key only when no visible column encodes it.
  - id: analysts-customers-own-region
    to: { groups: [analysts] }
    product: customer
    except_columns: [c_acctbal]
    row_filter: "c_region = ${principal.region}"
    masks:
      c_custkey: { type: token }
      c_name: { type: token }
  - id: analysts-reference-data
    to: { groups: [analysts] }
    product: nation
  - id: analysts-regions
    to: { groups: [analysts] }
    product: region
"#;

/// The demo mesh's configuration with freshly hashed demo passwords.
fn mesh_yaml(postgres: Option<&url::Url>, s3: Option<&S3Target>) -> Result<String> {
    let mut users = String::from("auth:\n  token_ttl_seconds: 28800\n  users:\n");
    for (name, password, _) in DEMO_USERS {
        let hash = agora_engine::identity::hash_password(password)
            .map_err(|e| anyhow::anyhow!("cannot hash a demo password: {e}"))?;
        let (groups, attributes) = match *name {
            "admin" => ("[admins]", "{}"),
            _ => ("[analysts]", "{ region: EUROPE }"),
        };
        users.push_str(&format!("    - name: {name}\n      password_hash: \"{hash}\"\n      groups: {groups}\n      attributes: {attributes}\n"));
    }
    let domains = match postgres {
        Some(url) => {
            let start = MESH_YAML.find("  - name: supply").context("demo mesh has no supply domain")?;
            format!("{}{}", &MESH_YAML[..start], supply_from_postgres(url)?)
        }
        None => MESH_YAML.to_string(),
    };
    let domains = match s3 {
        Some(target) => {
            let start = domains.find("  - name: sales").context("demo mesh has no sales domain")?;
            let end = domains.find("  - name: customers").context("demo mesh has no customers domain")?;
            format!("{}{}{}", &domains[..start], target.sales_yaml(), &domains[end..])
        }
        None => domains,
    };
    Ok(format!(
        "{domains}\n{users}\ngovernance:\n  policies: policies.yaml\n  audit: {{ path: audit/audit.jsonl }}\n\
         # Each query's OpenLineage events (START, COMPLETE/FAIL); or url: http://…/api/v1/lineage\n\
         lineage: {{ path: lineage/events.jsonl }}\n"
    ))
}

/// The demo mesh's domains, with relative locations.
const MESH_YAML: &str = r#"# The Agora demo mesh: TPC-H data split into three business domains.
# Locations are relative to this file. See docs/configuration.md.
domains:
  - name: sales
    description: Customer orders and their line items, as booked by the sales organisation.
    owner: { name: Sales Analytics, contact: sales-data@example.com }
    products:
      - name: orders
        description: One row per customer order, with status, total price and priority. Partitioned by order year.
        tags: [gold, transactional]
        source: { kind: parquet, location: sales/orders }
      - name: lineitem
        description: "One row per order line: part, supplier, quantity, price, discount, tax and shipping dates."
        tags: [gold, transactional]
        source: { kind: parquet, location: sales/lineitem }

  - name: customers
    description: Who buys from us and where they are, kept by the CRM team as Delta tables.
    owner: { name: CRM Team, contact: crm@example.com }
    policies: customers/policies.yaml
    products:
      - name: customer
        description: Customer master data with market segment and account balance. Contains personal data.
        tags: [pii]
        source: { kind: delta, location: customers/customer }
      - name: nation
        description: The 25 nations customers and suppliers are located in.
        tags: [reference]
        source: { kind: delta, location: customers/nation }
      - name: region
        description: The 5 world regions nations belong to.
        tags: [reference]
        source: { kind: delta, location: customers/region }

  - name: supply
    description: Parts we sell and the suppliers who provide them.
    owner: { name: Procurement, contact: procurement@example.com }
    products:
      - name: part
        description: The parts catalogue with brand, type, size and retail price.
        source: { kind: parquet, location: supply/part }
      - name: supplier
        description: Suppliers with their nation and account balance.
        source: { kind: parquet, location: supply/supplier }
      - name: partsupp
        description: Which supplier offers which part, at what cost and with how much stock.
        source: { kind: parquet, location: supply/partsupp }
"#;
