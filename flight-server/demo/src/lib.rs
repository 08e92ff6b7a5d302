//! The demo mesh generator behind `agora demo` (and the end-to-end tests'
//! fixture): TPC-H data split into three domains, written once to local disk.
//! A crate of its own so that the Flight SQL library does not carry it.
//!
//! | domain      | products                    | format                              |
//! |-------------|-----------------------------|-------------------------------------|
//! | `sales`     | `orders`, `lineitem`        | Parquet (`orders` partitioned by year) |
//! | `customers` | `customer`, `nation`, `region` | Delta Lake                        |
//! | `supply`    | `part`, `supplier`, `partsupp` | Parquet                           |

use std::path::PathBuf;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use tpchgen::generators::{
    CustomerGenerator, LineItemGenerator, NationGenerator, OrderGenerator, PartGenerator, PartSuppGenerator,
    RegionGenerator, SupplierGenerator,
};
use tpchgen_arrow::{
    CustomerArrow, LineItemArrow, NationArrow, OrderArrow, PartArrow, PartSuppArrow, RegionArrow, SupplierArrow,
};

mod files;
mod mesh;
mod postgres;
mod s3;
pub use s3::S3Target;

use crate::files::{with_region, write_delta, write_orders_by_year, write_parquet};
use crate::mesh::{mesh_yaml, write_contracts, write_policies};
use crate::postgres::{load_supply_into_postgres, redacted};

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

/// Writes the demo's data and configuration into `options.dir`, unless a
/// finished generation with the same options (its stamp) is already there.
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

/// The environment variable that holds the demo database's password, when its URL has one.
pub const DEMO_PG_PASSWORD_ENV: &str = "AGORA_DEMO_PG_PASSWORD";
