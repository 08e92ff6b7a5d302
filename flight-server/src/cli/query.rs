//! `agora query`: runs SQL statements (in-process on a mesh, or on a server
//! with --url) and prints or writes their results.

use std::path::PathBuf;
use std::process::ExitCode;

use agora_engine::Engine;
use anyhow::{Context, Result};

use super::args::ConnectionArgs;
use super::output::{self, Format};
use super::statements::{self, Script};

/// Runs `agora query`: the statements come from `sql`, `file` or standard
/// input, and go to `output` or standard output.
pub async fn run(
    connection: ConnectionArgs,
    format: Format,
    file: Option<PathBuf>,
    output: Option<PathBuf>,
    sql: Option<String>,
) -> Result<ExitCode> {
    let text = match (file, sql) {
        (Some(path), _) if path.as_os_str() == "-" => read_stdin()?,
        (Some(path), _) => {
            std::fs::read_to_string(&path).with_context(|| format!("cannot read --file {}", path.display()))?
        }
        (None, Some(sql)) if sql == "-" => read_stdin()?,
        (None, Some(sql)) => sql,
        (None, None) => anyhow::bail!("no SQL: give a statement, --file FILE, or - to read standard input"),
    };
    let statements = match statements::split(&text) {
        Script::Statements(list) if !list.is_empty() => list,
        Script::Statements(_) => anyhow::bail!("no SQL statement in the input"),
        Script::Incomplete => {
            anyhow::bail!("the SQL ends inside a string, a quoted name or a comment")
        }
    };
    if statements.len() > 1 && matches!(format, Format::Arrow | Format::Parquet) {
        anyhow::bail!("--format {format:?} writes one result: give one statement");
    }
    let (mut backend, engine, _) = connection.backend().await?;
    let mut out: Box<dyn std::io::Write + Send> = match &output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("cannot create --output {}", path.display()))?,
        )),
        None => Box::new(std::io::stdout()),
    };
    let result = async {
        for sql in &statements {
            let rows = output::write(backend.run(sql).await?, format, &mut out).await?;
            if format == Format::Table {
                eprintln!("{rows} row{}", if rows == 1 { "" } else { "s" });
            }
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    if let Some(lineage) = engine.as_ref().and_then(Engine::lineage) {
        lineage.flush(std::time::Duration::from_secs(10)).await;
    }
    result?;
    Ok(ExitCode::SUCCESS)
}

/// All of standard input, as text.
fn read_stdin() -> Result<String> {
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).context("cannot read standard input")?;
    Ok(text)
}
