//! Writing the generated TPC-H batches: Parquet files (orders split by
//! year, lineitem in several files) and Delta tables, with view types cast
//! to plain ones and customers given their region.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow::array::{ArrayRef, AsArray, RecordBatch};
use arrow::compute::kernels::temporal::{DatePart, date_part};
use arrow::compute::{cast, filter_record_batch};
use arrow::datatypes::Int32Type;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use indicatif::ProgressBar;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use tpchgen_arrow::OrderArrow;

/// A batch as tpchgen-arrow's generators yield it.
pub(crate) type Batch = std::result::Result<RecordBatch, arrow::error::ArrowError>;

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

/// zstd and row groups of 128 Ki rows, for the Parquet files and Delta tables alike.
fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(128 * 1024))
        .build()
}

/// Writes `batches` to one Parquet file at `path` (its directories created).
pub(crate) fn write_parquet(path: &Path, batches: impl Iterator<Item = Batch>, bar: &ProgressBar) -> Result<()> {
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

/// A Parquet writer for `path` with the demo's properties, its directories created.
fn new_writer(path: &Path, schema: SchemaRef) -> Result<ArrowWriter<File>> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    Ok(ArrowWriter::try_new(file, schema, Some(writer_properties()))?)
}

/// Writes orders as `year=YYYY/part-1.parquet`, one file per order year.
pub(crate) fn write_orders_by_year(dir: &Path, batches: OrderArrow, bar: &ProgressBar) -> Result<()> {
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

/// Writes `batches` as a new Delta table in `dir`.
pub(crate) async fn write_delta(dir: &Path, batches: impl Iterator<Item = Batch>, bar: &ProgressBar) -> Result<()> {
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
pub(crate) fn with_region(batch: &RecordBatch) -> Result<RecordBatch> {
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
