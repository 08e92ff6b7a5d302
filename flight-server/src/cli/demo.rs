//! `agora demo`: generates (once) the demo mesh of TPC-H data in three
//! domains with the `agora-demo` crate, then serves it and prints how to
//! connect.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use agora_demo::{self as demo, DemoOptions};
use agora_engine::Engine;
use anyhow::{Context, Result};

use super::args::ServerArgs;
use super::serve::serve;

/// Runs `agora demo`: generates the mesh in `dir` unless it is there, then
/// serves it on `bind` (or exits with `generate_only`).
#[allow(clippy::too_many_arguments, reason = "one argument per option of `agora demo`")]
pub async fn run(
    dir: PathBuf,
    scale: f64,
    bind: SocketAddr,
    generate_only: bool,
    postgres: Option<url::Url>,
    s3: Option<url::Url>,
    s3_endpoint: Option<url::Url>,
    server: ServerArgs,
) -> Result<ExitCode> {
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
    let engine = Engine::new(agora_engine::MeshConfig::from_yaml(&text, &mesh, &env)?).await?;
    serve(engine, bind, &server, Some(mesh)).await?;
    Ok(ExitCode::SUCCESS)
}

/// Prints the demo's users, products, example queries and how to connect.
pub fn print_help(mesh: &std::path::Path, bind: SocketAddr) {
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
