//! Embedding Agora in a Rust service: load a mesh, list its products, run a
//! cross-domain query and consume the result as a stream of Arrow batches.
//!
//! ```sh
//! cargo run --release --bin agora -- demo --generate-only
//! cargo run -p agora-engine --example embed -- demo-mesh/mesh.yaml
//! ```

use agora_engine::{Engine, EngineError, ProductRef};
use futures::TryStreamExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).unwrap_or_else(|| "demo-mesh/mesh.yaml".to_string());

    // Loading validates the file and registers every product; no data is read yet.
    let engine = Engine::open(&path).await?;
    for domain in engine.domains() {
        println!("{} (owner: {}, {})", domain.name, domain.owner.name, domain.owner.contact);
        for product in &domain.products {
            let schema = engine.product_schema(&ProductRef::new(&domain.name, &product.name)).await?;
            println!("  {:<12} {} columns, {}", product.name, schema.fields().len(), product.source.kind());
        }
    }

    // One session per request or client; sessions share opened tables.
    let session = engine.session();
    let query = session
        .query(
            "SELECT n.n_name AS nation, count(*) AS orders \
             FROM sales.orders o \
             JOIN customers.customer c ON o.o_custkey = c.c_custkey \
             JOIN customers.nation n ON c.c_nationkey = n.n_nationkey \
             GROUP BY n.n_name ORDER BY orders DESC LIMIT 5",
        )
        .await?;
    println!("result schema: {:?}", query.schema().fields().iter().map(|f| f.name()).collect::<Vec<_>>());

    // Batches arrive as the stream is polled; dropping it cancels the query.
    let mut stream = query.stream().await?;
    while let Some(batch) = stream.try_next().await.map_err(EngineError::from)? {
        println!("{}", arrow::util::pretty::pretty_format_batches(&[batch])?);
    }
    Ok(())
}
