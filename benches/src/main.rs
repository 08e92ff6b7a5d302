//! `agora-bench`: runs a set of SQL queries through an *embedded* Agora engine
//! and reports how long each took, for the benchmark harness (`benches/run`).
//!
//! Embedded means the way a Rust service uses Agora: `Engine::open` on a mesh
//! configuration, one session, `Session::collect`. Every query is warmed up,
//! then timed several times; the result of the last run can be written as an
//! Arrow IPC file so that the harness checks it against another engine's answer.
//! Timing happens here, in the process, so the harness's own language adds
//! nothing to the numbers.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use agora_engine::{Engine, Principal};
use anyhow::{Context, bail};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::ipc::writer::FileWriter;
use clap::Parser;
use futures::TryStreamExt;
use serde_json::{Value, json};

/// Command-line arguments.
#[derive(Parser)]
#[command(about = "Times SQL queries on an embedded Agora engine")]
struct Args {
    /// The mesh configuration to open.
    #[arg(long)]
    config: PathBuf,
    /// A JSON object of query name → SQL; queries run in the object's order.
    #[arg(long)]
    queries: PathBuf,
    /// Run as this user (governance applies); by default the embedding
    /// application's own `local` principal.
    #[arg(long)]
    user: Option<String>,
    /// Timed runs per query.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Untimed runs per query before the timed ones.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Give up on a query after this many seconds (recorded as a timeout).
    #[arg(long)]
    timeout: Option<f64>,
    /// Directory for each query's last result, as `<name>.arrow` (IPC file).
    #[arg(long)]
    answers: Option<PathBuf>,
    /// Where to write the timings (JSON).
    #[arg(long)]
    out: PathBuf,
}

/// The outcome of running one query: its times, or why it stopped.
struct Measurement {
    times: Vec<f64>,
    rows: usize,
    bytes: usize,
    error: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.queries)
        .with_context(|| format!("cannot read the queries file {}", args.queries.display()))?;
    // serde_json keeps object order only with `preserve_order`; the harness
    // passes a list of [name, sql] pairs as well as an object, so accept both.
    let queries = parse_queries(&text).with_context(|| format!("in {}", args.queries.display()))?;
    if let Some(dir) = &args.answers {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(args, queries))
}

fn parse_queries(text: &str) -> anyhow::Result<Vec<(String, String)>> {
    match serde_json::from_str::<Value>(text)? {
        Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Value::Array(pair) if pair.len() == 2 => match (&pair[0], &pair[1]) {
                    (Value::String(name), Value::String(sql)) => Ok((name.clone(), sql.clone())),
                    _ => bail!("each query must be a [name, sql] pair of strings"),
                },
                _ => bail!("each query must be a [name, sql] pair of strings"),
            })
            .collect(),
        Value::Object(map) => map
            .into_iter()
            .map(|(name, sql)| match sql {
                Value::String(sql) => Ok((name, sql)),
                _ => bail!("query {name}: the SQL must be a string"),
            })
            .collect(),
        _ => bail!("expected a list of [name, sql] pairs or an object of name → sql"),
    }
}

async fn run(args: Args, queries: Vec<(String, String)>) -> anyhow::Result<()> {
    let start = Instant::now();
    let engine = Engine::open(&args.config).await?;
    let session = match &args.user {
        Some(user) => engine.session_as(Principal::user(user.clone())),
        None => engine.session(),
    };
    let open_s = start.elapsed().as_secs_f64();
    let timeout = args.timeout.map(Duration::from_secs_f64);

    let mut results = Vec::new();
    for (name, sql) in &queries {
        let m = measure(
            &session,
            sql,
            args.warmup,
            args.runs,
            timeout,
            args.answers.as_ref().map(|d| d.join(format!("{name}.arrow"))),
        )
        .await;
        match &m.error {
            None => eprintln!(
                "{name:>12}  min {:8.3} s  ({} rows)",
                m.times.iter().copied().fold(f64::INFINITY, f64::min),
                m.rows
            ),
            Some(e) => eprintln!("{name:>12}  FAILED: {e}"),
        }
        let mut entry = BTreeMap::new();
        entry.insert("name", json!(name));
        entry.insert("times_s", json!(m.times));
        entry.insert("rows", json!(m.rows));
        entry.insert("arrow_bytes", json!(m.bytes));
        entry.insert("error", json!(m.error));
        results.push(entry);
    }
    let report = json!({ "open_s": open_s, "queries": results });
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    Ok(())
}

/// Warms up, then times `runs` runs of `sql`; stops at the first error or timeout.
async fn measure(
    session: &agora_engine::Session,
    sql: &str,
    warmup: usize,
    runs: usize,
    timeout: Option<Duration>,
    answer: Option<PathBuf>,
) -> Measurement {
    let mut m = Measurement { times: Vec::new(), rows: 0, bytes: 0, error: None };
    let mut last = (None, Vec::new());
    for i in 0..warmup + runs {
        let started = Instant::now();
        let outcome = match timeout {
            Some(limit) => match tokio::time::timeout(limit, run_once(session, sql)).await {
                Ok(result) => result,
                Err(_) => Err(format!("timeout after {:.0} s", limit.as_secs_f64())),
            },
            None => run_once(session, sql).await,
        };
        let elapsed = started.elapsed().as_secs_f64();
        match outcome {
            Ok((schema, batches)) => {
                if i >= warmup {
                    m.times.push(elapsed);
                }
                last = (Some(schema), batches);
            }
            Err(e) => {
                m.error = Some(e);
                return m;
            }
        }
    }
    let (schema, batches) = last;
    m.rows = batches.iter().map(RecordBatch::num_rows).sum();
    m.bytes = batches.iter().map(RecordBatch::get_array_memory_size).sum();
    if let (Some(path), Some(schema)) = (answer, schema)
        && let Err(e) = write_ipc(&path, &schema, &batches)
    {
        m.error = Some(format!("cannot write {}: {e}", path.display()));
    }
    m
}

/// Plans, runs and collects one query: the time a caller waits for all rows.
async fn run_once(session: &agora_engine::Session, sql: &str) -> Result<(SchemaRef, Vec<RecordBatch>), String> {
    let stream = session.sql(sql).await.map_err(|e| e.to_string())?;
    let schema = stream.schema();
    let batches = stream.try_collect().await.map_err(|e| e.to_string())?;
    Ok((schema, batches))
}

fn write_ipc(path: &PathBuf, schema: &SchemaRef, batches: &[RecordBatch]) -> anyhow::Result<()> {
    let mut writer = FileWriter::try_new(File::create(path)?, schema)?;
    for batch in batches {
        writer.write(batch)?;
    }
    writer.finish()?;
    Ok(())
}
