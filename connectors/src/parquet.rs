//! Parquet files on any object store, as a DataFusion listing table.

use std::sync::Arc;

use arrow::datatypes::DataType;
use chrono::{DateTime, Utc};
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Deserializer};
use url::Url;

use crate::spec::SourceContext;
use crate::{ConnectorError, ObjectStoreSettings, Problem, Source, register_object_store};

/// How many files are looked at to discover Hive-style partition columns.
const PARTITION_SAMPLE: usize = 100;

/// Parquet data: a single file, a directory or an object-store prefix.
///
/// Directories may be Hive-partitioned (`year=1995/part-0.parquet`): each
/// `key=value` level becomes a column of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct ParquetSource {
    /// `file:///…` or `s3://bucket/…`. A location that does not end in `.parquet`
    /// is read as a directory (prefix).
    pub location: Url,
    /// Partition columns with their types. When `None`, they are discovered from
    /// the directory names and typed `Int64` when every sampled value is an
    /// integer, `Utf8` otherwise.
    pub partition_columns: Option<Vec<PartitionColumn>>,
    /// How to reach the object store.
    pub store: ObjectStoreSettings,
}

/// `source: { kind: parquet, location: …, partition_columns: {…} }` in
/// mesh.yaml: what a Parquet product's section may say.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ParquetSpec {
    /// A path (relative to the mesh file), `file://` or `s3://` URL; required.
    #[serde(default, deserialize_with = "crate::spec::text")]
    pub location: Option<String>,
    /// Declared partition columns, in directory-nesting order.
    #[serde(default)]
    pub partition_columns: Option<PartitionColumns>,
}

impl ParquetSpec {
    /// The keys of the section, `kind` included.
    pub const KEYS: &[&str] = &["kind", "location", "partition_columns"];

    /// Checks the spec and builds the source (storage from the domain).
    pub fn into_source(self, ctx: &SourceContext<'_>) -> Result<Source, Vec<Problem>> {
        let location = crate::spec::location(self.location, ctx.base)?;
        let partition_columns = self.partition_columns.map(|c| c.0);
        Ok(Source::Parquet(ParquetSource { location, partition_columns, store: ctx.storage.clone() }))
    }
}

/// `partition_columns: { year: int64, … }`: a mapping whose order is kept,
/// since it must match the directory nesting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionColumns(pub Vec<PartitionColumn>);

impl<'de> Deserialize<'de> for PartitionColumns {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Columns;
        impl<'de> serde::de::Visitor<'de> for Columns {
            type Value = PartitionColumns;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a mapping of column name to type (string, int64, date)")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some((name, data_type)) = map.next_entry::<String, PartitionType>()? {
                    out.push(PartitionColumn { name, data_type });
                }
                Ok(PartitionColumns(out))
            }
        }
        deserializer.deserialize_map(Columns)
    }
}

impl<'de> Deserialize<'de> for PartitionType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        match name.as_str() {
            "string" | "utf8" => Ok(PartitionType::Utf8),
            "int64" | "bigint" | "int" => Ok(PartitionType::Int64),
            "date" => Ok(PartitionType::Date),
            other => Err(serde::de::Error::custom(format!(
                "unknown partition type '{other}' (expected string, int64 or date)"
            ))),
        }
    }
}

/// A Hive-style partition column declared in configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionColumn {
    /// The `key` in `key=value` directory names.
    pub name: String,
    /// The column's type.
    pub data_type: PartitionType,
}

/// The types a partition value may be read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionType {
    /// Text.
    Utf8,
    /// 64-bit integer.
    Int64,
    /// Calendar date, `YYYY-MM-DD`.
    Date,
}

impl PartitionType {
    fn arrow_type(self) -> DataType {
        match self {
            PartitionType::Utf8 => DataType::Utf8,
            PartitionType::Int64 => DataType::Int64,
            PartitionType::Date => DataType::Date32,
        }
    }
}

impl ParquetSource {
    pub(crate) async fn open(&self, session: &dyn Session) -> Result<Arc<dyn TableProvider>, ConnectorError> {
        register_object_store(session.runtime_env(), &self.location, &self.store)?;
        let table_url = listing_url(&self.location)?;

        let format = ParquetFormat::default().with_options(session.table_options().parquet.clone());
        let mut options = ListingOptions::new(Arc::new(format)).with_file_extension(".parquet");

        let partitions = match &self.partition_columns {
            Some(declared) => declared.iter().map(|c| (c.name.clone(), c.data_type.arrow_type())).collect(),
            None if table_url.is_collection() => self.discover_partitions(session, &table_url).await?,
            None => Vec::new(),
        };
        options = options.with_table_partition_cols(partitions);

        let schema = options
            .infer_schema(session, &table_url)
            .await
            .map_err(|e| ConnectorError::from_datafusion(&self.location, e))?;
        if schema.fields().is_empty() {
            return Err(ConnectorError::NotFound {
                location: self.location.to_string(),
                cause: "no .parquet files found".to_string(),
            });
        }
        let config = ListingTableConfig::new(table_url).with_listing_options(options).with_schema(schema);
        let table = ListingTable::try_new(config).map_err(|e| ConnectorError::from_datafusion(&self.location, e))?;
        Ok(Arc::new(table))
    }

    /// The modification time of the newest Parquet file.
    pub(crate) async fn modified(&self, session: &dyn Session) -> Result<DateTime<Utc>, ConnectorError> {
        register_object_store(session.runtime_env(), &self.location, &self.store)?;
        let table_url = listing_url(&self.location)?;
        let store = session
            .runtime_env()
            .object_store(&table_url)
            .map_err(|e| ConnectorError::from_datafusion(&self.location, e))?;
        let newest = store
            .list(Some(table_url.prefix()))
            .try_filter(|meta| futures::future::ready(meta.location.as_ref().ends_with(".parquet")))
            .try_fold(None, |newest: Option<DateTime<Utc>>, meta| async move {
                Ok(Some(newest.map_or(meta.last_modified, |n| n.max(meta.last_modified))))
            })
            .await
            .map_err(|e| ConnectorError::from_object_store(&self.location, e))?;
        newest.ok_or_else(|| ConnectorError::NotFound {
            location: self.location.to_string(),
            cause: "no Parquet files".to_string(),
        })
    }

    /// Finds `key=value` directory levels in a sample of the files and infers a
    /// type for each key from its values.
    async fn discover_partitions(
        &self,
        session: &dyn Session,
        table_url: &ListingTableUrl,
    ) -> Result<Vec<(String, DataType)>, ConnectorError> {
        let store = session
            .runtime_env()
            .object_store(table_url)
            .map_err(|e| ConnectorError::from_datafusion(&self.location, e))?;
        let files: Vec<_> = store
            .list(Some(table_url.prefix()))
            .try_filter(|meta| futures::future::ready(meta.location.as_ref().ends_with(".parquet")))
            .take(PARTITION_SAMPLE)
            .try_collect()
            .await
            .map_err(|e| ConnectorError::from_object_store(&self.location, e))?;

        let mut keys: Option<Vec<String>> = None;
        let mut values: Vec<Vec<String>> = Vec::new();
        for file in &files {
            let Some(parts) = table_url.strip_prefix(&file.location) else { continue };
            let parts: Vec<&str> = parts.collect();
            let dirs = &parts[..parts.len().saturating_sub(1)];
            let pairs: Vec<(&str, &str)> = dirs.iter().filter_map(|d| d.split_once('=')).collect();
            let these: Vec<String> = pairs.iter().map(|(k, _)| k.to_string()).collect();
            match &keys {
                None => {
                    values = vec![Vec::new(); these.len()];
                    keys = Some(these);
                }
                Some(existing) if *existing != these => {
                    return Err(ConnectorError::InvalidData {
                        location: self.location.to_string(),
                        cause: format!(
                            "inconsistent partition directories: {existing:?} and {these:?} (at {})",
                            file.location
                        ),
                    });
                }
                Some(_) => {}
            }
            for (slot, (_, v)) in values.iter_mut().zip(&pairs) {
                slot.push(v.to_string());
            }
        }
        let keys = keys.unwrap_or_default();
        Ok(keys
            .into_iter()
            .zip(values)
            .map(|(key, vals)| {
                let all_ints = !vals.is_empty() && vals.iter().all(|v| v.parse::<i64>().is_ok());
                (key, if all_ints { DataType::Int64 } else { DataType::Utf8 })
            })
            .collect())
    }
}

/// A location ending in `.parquet` is one file; anything else is a directory.
fn listing_url(location: &Url) -> Result<ListingTableUrl, ConnectorError> {
    let mut url = location.clone();
    if !url.path().ends_with(".parquet") && !url.path().ends_with('/') {
        url.set_path(&format!("{}/", url.path()));
    }
    ListingTableUrl::try_new(url, None).map_err(|e| ConnectorError::from_datafusion(location, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_get_a_trailing_slash_and_files_do_not() {
        let dir = listing_url(&Url::parse("s3://bucket/sales/orders").unwrap()).unwrap();
        assert!(dir.is_collection());
        let file = listing_url(&Url::parse("file:///data/region.parquet").unwrap()).unwrap();
        assert!(!file.is_collection());
    }
}
