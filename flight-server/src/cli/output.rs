//! Writing results in the command line's formats.

use std::io::Write;

use anyhow::Result;
use arrow::array::RecordBatch;
use clap::ValueEnum;
use futures::TryStreamExt;

use super::backend::Rows;

/// The output formats of `agora query` and `agora shell`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// An aligned text table.
    Table,
    /// CSV with a header row.
    Csv,
    /// JSON Lines, one object per row.
    Json,
    /// An Arrow IPC stream (exact types; for piping into other Arrow tools).
    Arrow,
    /// A Parquet file (exact types; written to standard output or --output).
    Parquet,
}

/// Writes `rows` to `out` in `format`; returns the number of rows.
pub async fn write(rows: Rows, format: Format, out: &mut (dyn Write + Send)) -> Result<usize> {
    let Rows { schema, mut batches } = rows;
    let mut count = 0;
    match format {
        Format::Table => {
            let collected: Vec<RecordBatch> = batches.try_collect().await?;
            count = collected.iter().map(RecordBatch::num_rows).sum();
            let shown = if collected.is_empty() { vec![RecordBatch::new_empty(schema)] } else { collected };
            writeln!(out, "{}", arrow::util::pretty::pretty_format_batches(&shown)?)?;
        }
        Format::Csv => {
            let mut writer = arrow::csv::WriterBuilder::new().with_header(true).build(&mut *out);
            while let Some(batch) = batches.try_next().await? {
                count += batch.num_rows();
                writer.write(&batch)?;
            }
        }
        Format::Json => {
            let mut writer = arrow::json::LineDelimitedWriter::new(&mut *out);
            while let Some(batch) = batches.try_next().await? {
                count += batch.num_rows();
                writer.write(&batch)?;
            }
            writer.finish()?;
        }
        Format::Arrow => {
            let mut writer = arrow::ipc::writer::StreamWriter::try_new(&mut *out, &schema)?;
            while let Some(batch) = batches.try_next().await? {
                count += batch.num_rows();
                writer.write(&batch)?;
            }
            writer.finish()?;
        }
        Format::Parquet => {
            let mut writer = parquet::arrow::ArrowWriter::try_new(&mut *out, schema, None)?;
            while let Some(batch) = batches.try_next().await? {
                count += batch.num_rows();
                writer.write(&batch)?;
            }
            writer.close()?;
        }
    }
    out.flush()?;
    Ok(count)
}
