//! `agora products search`: finds data products by words, best match first,
//! among those the principal may read (the SQL table function `search_products`).

use std::path::Path;
use std::process::ExitCode;

use agora_engine::Engine;
use anyhow::Result;
use arrow::record_batch::RecordBatch;
use futures::TryStreamExt;

use super::args::configured_principal;
use super::backend::Backend;

/// Runs `agora products search` on the mesh `config`, as `run_as` (a
/// configured user or service) or as `local`.
pub async fn search(config: &Path, run_as: Option<String>, text: Vec<String>) -> Result<ExitCode> {
    let engine = Engine::open(config).await?;
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
