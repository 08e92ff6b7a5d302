//! `agora shell`: an interactive SQL shell, in-process on a mesh
//! configuration or on a remote server over Flight SQL.
//!
//! Statements end with `;` and may span lines; history is kept in
//! `~/.agora_history` (or `$AGORA_HISTORY`, a regular file; empty keeps
//! none). Backslash commands:
//! `\d` lists the products, `\d domain.product` describes one (owner,
//! contract, columns with their descriptions and masks), `\timing` toggles
//! timings, `\format table|csv|json` picks the output, `\q` quits.

use std::process::ExitCode;
use std::time::Instant;

use agora_engine::Engine;
use anyhow::Result;
use rustyline::DefaultEditor;
use rustyline::config::Configurer;
use rustyline::error::ReadlineError;

use super::args::ConnectionArgs;
use super::backend::Backend;
use super::output::{self, Format};
use super::statements::{self, Script};

/// Most lines the history file keeps.
const HISTORY_LINES: usize = 1000;

const HELP: &str = "\
Statements end with ';' and may span lines. Commands:
  \\d                  list the data products you may read
  \\d domain.product   describe a product: owner, contract, columns
  \\timing             show how long each statement takes (on/off)
  \\format FORMAT      table (default), csv or json
  \\q                  quit (or Ctrl-D)";

/// Runs `agora shell`: connects, then reads statements until `\q` or end of input.
pub async fn launch(connection: ConnectionArgs, format: Format) -> Result<ExitCode> {
    let (backend, engine, banner) = connection.backend().await?;
    let result = run(backend, format, &banner).await;
    if let Some(lineage) = engine.as_ref().and_then(Engine::lineage) {
        lineage.flush(std::time::Duration::from_secs(10)).await;
    }
    result?;
    Ok(ExitCode::SUCCESS)
}

/// Runs the shell until `\q` or end of input.
pub async fn run(mut backend: Backend, mut format: Format, banner: &str) -> Result<()> {
    let mut editor = DefaultEditor::new()?;
    editor.set_max_history_size(HISTORY_LINES)?;
    let history = history_file();
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    println!("{banner}\nType \\? for help, \\q to quit.");
    let mut timing = false;
    let mut pending = String::new();
    loop {
        let prompt = if pending.is_empty() { "agora> " } else { "   ..> " };
        let line = match editor.readline(prompt) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => {
                pending.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        };
        if pending.is_empty() && line.trim_start().starts_with('\\') {
            let _ = editor.add_history_entry(line.as_str());
            match command(line.trim(), &mut backend, &mut format, &mut timing).await {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => eprintln!("error: {e:#}"),
            }
            continue;
        }
        if !pending.is_empty() {
            pending.push('\n');
        }
        pending.push_str(&line);
        if !statements::is_complete(&pending) {
            continue;
        }
        let _ = editor.add_history_entry(pending.as_str());
        let text = std::mem::take(&mut pending);
        if let Script::Statements(list) = statements::split(&text) {
            for sql in list {
                execute(&mut backend, &sql, format, timing).await;
            }
        }
    }
    if let Some(path) = &history {
        let _ = editor.save_history(path);
    }
    Ok(())
}

/// Runs one statement and prints its result or its error.
async fn execute(backend: &mut Backend, sql: &str, format: Format, timing: bool) {
    let started = Instant::now();
    let result = async {
        let rows = backend.run(sql).await?;
        let mut stdout = std::io::stdout();
        output::write(rows, format, &mut stdout).await
    }
    .await;
    match result {
        Ok(rows) => {
            let plural = if rows == 1 { "" } else { "s" };
            if timing {
                println!("({rows} row{plural}, {:.3} s)", started.elapsed().as_secs_f64());
            } else {
                println!("({rows} row{plural})");
            }
        }
        Err(e) => eprintln!("error: {e:#}"),
    }
}

/// A backslash command; `Ok(true)` to quit.
async fn command(line: &str, backend: &mut Backend, format: &mut Format, timing: &mut bool) -> Result<bool> {
    let mut words = line.split_whitespace();
    match (words.next().unwrap_or_default(), words.next()) {
        ("\\q" | "\\quit", _) => return Ok(true),
        ("\\?" | "\\h" | "\\help", _) => println!("{HELP}"),
        ("\\timing", _) => {
            *timing = !*timing;
            println!("timing is {}", if *timing { "on" } else { "off" });
        }
        ("\\format", Some(name)) => {
            *format = match name {
                "table" => Format::Table,
                "csv" => Format::Csv,
                "json" => Format::Json,
                other => anyhow::bail!("unknown format '{other}': table, csv or json"),
            };
        }
        ("\\d", None) => {
            let sql =
                "SELECT domain, product, owner, status, description FROM system.products ORDER BY domain, product";
            execute(backend, sql, Format::Table, false).await;
        }
        ("\\d", Some(name)) => {
            let Some((domain, product)) = name.split_once('.') else {
                anyhow::bail!("\\d expects domain.product, got '{name}'");
            };
            let (domain, product) = (literal(domain), literal(product));
            let about = format!(
                "SELECT domain || '.' || product AS product, owner, owner_contact, source_kind, contract_id, \
                 contract_version, status, description FROM system.products \
                 WHERE domain = {domain} AND product = {product}"
            );
            let columns = format!(
                "SELECT column_name, data_type, is_nullable, description, classification, mask FROM system.columns \
                 WHERE domain = {domain} AND product = {product} ORDER BY ordinal"
            );
            execute(backend, &about, Format::Table, false).await;
            execute(backend, &columns, Format::Table, false).await;
        }
        (other, _) => anyhow::bail!("unknown command '{other}' (\\? lists the commands)"),
    }
    Ok(false)
}

/// `text` as a SQL string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Where the shell keeps its history: `$AGORA_HISTORY`, else `~/.agora_history`;
/// none when `AGORA_HISTORY` is empty.
fn history_file() -> Option<std::path::PathBuf> {
    let path: std::path::PathBuf = match std::env::var_os("AGORA_HISTORY") {
        Some(path) if path.is_empty() => return None,
        Some(path) => path.into(),
        None => std::path::Path::new(&std::env::var_os("HOME")?).join(".agora_history"),
    };
    usable_history_file(path)
}

/// `path` if the shell may keep its history there: a regular file or a path
/// not yet taken. Saving truncates the file and restricts it to its owner, so a
/// device such as `/dev/null` must never be handed to the line editor: run as
/// root, that would leave `/dev/null` unwritable for every other user.
fn usable_history_file(path: std::path::PathBuf) -> Option<std::path::PathBuf> {
    match std::fs::metadata(&path) {
        Ok(meta) if meta.is_file() => Some(path),
        Ok(_) => None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(path),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::usable_history_file;

    #[test]
    fn history_goes_to_regular_files_or_new_paths_only() {
        let dir = tempfile::tempdir().unwrap();
        let existing = dir.path().join("history");
        std::fs::write(&existing, "SELECT 1;\n").unwrap();
        assert_eq!(usable_history_file(existing.clone()), Some(existing));
        let new = dir.path().join("new_history");
        assert_eq!(usable_history_file(new.clone()), Some(new));
        // A directory and a device are refused: saving would truncate and chmod them.
        assert_eq!(usable_history_file(dir.path().to_path_buf()), None);
        assert_eq!(usable_history_file("/dev/null".into()), None);
    }
}
