//! Shared fixtures: a small TPC-H demo mesh generated once per test run.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use agora_demo::{self as demo, DemoOptions};
use agora_engine::Engine;
use arrow::array::RecordBatch;
use arrow::util::pretty::pretty_format_batches;

/// Scale of the shared mesh: small enough for debug builds, big enough for joins.
pub const SCALE: f64 = 0.01;

/// The demo's products, in catalogue order.
pub const DEMO_PRODUCTS: [&str; 8] = [
    "customers.customer",
    "customers.nation",
    "customers.region",
    "sales.lineitem",
    "sales.orders",
    "supply.part",
    "supply.partsupp",
    "supply.supplier",
];

/// The directory of the shared demo mesh (generated on first use).
pub fn demo_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("demo-mesh-{SCALE}"));
        let options = DemoOptions { dir: dir.clone(), scale: SCALE, progress: false, postgres: None, s3: None };
        // Generated on a runtime of its own: tests run on their own runtimes.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(demo::ensure(&options)).unwrap();
        })
        .join()
        .unwrap();
        dir
    })
}

/// An engine over the shared demo mesh.
pub async fn demo_engine() -> Engine {
    Engine::open(demo_dir().join(demo::MESH_FILE)).await.unwrap()
}

/// Runs a query and renders the result as text, for exact comparisons.
pub async fn render(engine: &Engine, sql: &str) -> String {
    let batches = engine.session().collect(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    pretty(&batches)
}

pub fn pretty(batches: &[RecordBatch]) -> String {
    pretty_format_batches(batches).unwrap().to_string()
}

/// Copies a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A single i64 from a one-row, one-column result.
pub async fn scalar_i64(engine: &Engine, sql: &str) -> i64 {
    let batches = engine.session().collect(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    let column = batches[0].column(0);
    arrow::array::cast::as_primitive_array::<arrow::datatypes::Int64Type>(column).value(0)
}

/// A variable `./scripts/test` sets for a service it starts; the tests fail
/// (rather than skip) when it is missing.
pub fn service_env(name: &str, service: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run the tests through ./scripts/test, which starts {service}"))
}
