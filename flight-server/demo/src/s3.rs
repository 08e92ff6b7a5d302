//! The demo's `sales` domain on an S3-compatible object store
//! (`agora demo --s3 s3://bucket/prefix --s3-endpoint http://…`).
//!
//! The files are generated locally as always, then copied to the bucket:
//! at every start, so that a store that lost them (an in-memory S3 server
//! restarted, a bucket emptied) gets them back; files already there with the
//! same size are not sent again. The mesh then reads `sales` from S3 with the
//! credentials of the standard `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`
//! variables, whose names (never their values) go into `mesh.yaml`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::buffered::BufWriter;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use tokio::io::AsyncWriteExt;

/// The environment variable holding the access key id `--s3` uses.
pub const ACCESS_KEY_ENV: &str = "AWS_ACCESS_KEY_ID";
/// The environment variable holding the secret access key `--s3` uses.
pub const SECRET_KEY_ENV: &str = "AWS_SECRET_ACCESS_KEY";

/// Where the demo's `sales` domain goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Target {
    /// The bucket.
    pub bucket: String,
    /// The key prefix inside the bucket (no leading or trailing `/`; may be empty).
    pub prefix: String,
    /// An S3-compatible server; `None` for AWS.
    pub endpoint: Option<url::Url>,
}

impl S3Target {
    /// The target named by `--s3` (`s3://bucket[/prefix]`) and `--s3-endpoint`.
    pub fn parse(url: &url::Url, endpoint: Option<url::Url>) -> Result<Self> {
        if url.scheme() != "s3" {
            anyhow::bail!("--s3 expects s3://bucket/prefix, got scheme '{}'", url.scheme());
        }
        let bucket = url.host_str().filter(|b| !b.is_empty()).context("--s3 URL names no bucket")?.to_string();
        if let Some(endpoint) = &endpoint
            && endpoint.scheme() != "http"
            && endpoint.scheme() != "https"
        {
            anyhow::bail!("--s3-endpoint expects an http:// or https:// URL, got '{endpoint}'");
        }
        let prefix = url.path().trim_matches('/').to_string();
        Ok(S3Target { bucket, prefix, endpoint })
    }

    /// `s3://bucket/prefix/<rest>`.
    fn location(&self, rest: &str) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}/{rest}", self.bucket)
        } else {
            format!("s3://{}/{}/{rest}", self.bucket, self.prefix)
        }
    }

    /// The object key of `rest` (a path relative to the demo directory).
    fn key(&self, rest: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(rest)
        } else {
            ObjectPath::from(format!("{}/{rest}", self.prefix))
        }
    }

    /// A value for the demo's stamp: a different target generates again.
    pub fn stamp(&self) -> String {
        format!("{} {}", self.location(""), self.endpoint.as_ref().map(url::Url::as_str).unwrap_or("aws"))
    }

    fn store(&self) -> Result<Arc<dyn ObjectStore>> {
        let secret = |name: &str| {
            std::env::var(name)
                .with_context(|| format!("--s3 reads the store's credentials from ${name}, which is not set"))
        };
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&self.bucket)
            .with_region(std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".to_string()))
            .with_access_key_id(secret(ACCESS_KEY_ENV)?)
            .with_secret_access_key(secret(SECRET_KEY_ENV)?);
        if let Some(endpoint) = &self.endpoint {
            builder = builder
                .with_endpoint(endpoint.as_str().trim_end_matches('/'))
                .with_allow_http(endpoint.scheme() == "http")
                .with_virtual_hosted_style_request(false);
        }
        Ok(Arc::new(builder.build().context("cannot set up the --s3 store")?))
    }

    /// The `sales` domain of `mesh.yaml`, read from this target.
    pub fn sales_yaml(&self) -> String {
        let storage = match &self.endpoint {
            Some(endpoint) => format!(
                "      endpoint: {}\n      allow_http: {}\n",
                endpoint.as_str().trim_end_matches('/'),
                endpoint.scheme() == "http"
            ),
            None => String::new(),
        };
        format!(
            r#"  - name: sales
    description: Customer orders and their line items, as booked by the sales organisation, in the sales team's bucket.
    owner: {{ name: Sales Analytics, contact: sales-data@example.com }}
    storage:
{storage}      region: us-east-1
      access_key_id_env: {ACCESS_KEY_ENV}
      secret_access_key_env: {SECRET_KEY_ENV}
    products:
      - name: orders
        description: One row per customer order, with status, total price and priority. Partitioned by order year.
        tags: [gold, transactional]
        source: {{ kind: parquet, location: "{orders}" }}
      - name: lineitem
        description: "One row per order line: part, supplier, quantity, price, discount, tax and shipping dates."
        tags: [gold, transactional]
        source: {{ kind: parquet, location: "{lineitem}" }}

"#,
            orders = self.location("sales/orders"),
            lineitem = self.location("sales/lineitem"),
        )
    }
}

/// Copies the demo's `sales` files to the target, skipping those already
/// there with the same size. Returns how many files were sent.
pub async fn upload_sales(dir: &Path, target: &S3Target) -> Result<usize> {
    let store = target.store()?;
    let present: HashMap<ObjectPath, u64> = store
        .list(Some(&target.key("sales")))
        .map_ok(|meta| (meta.location, meta.size))
        .try_collect()
        .await
        .with_context(|| format!("cannot list {} (does the bucket exist?)", target.location("sales")))?;
    let mut files = Vec::new();
    collect_files(&dir.join("sales"), &mut files)?;
    let mut sent = 0;
    for file in files {
        let relative = file.strip_prefix(dir).context("a demo file outside the demo directory")?;
        let relative = relative.to_str().context("a demo file name that is not UTF-8")?.replace('\\', "/");
        let key = target.key(&relative);
        let size = std::fs::metadata(&file)?.len();
        if present.get(&key) == Some(&size) {
            continue;
        }
        let mut reader =
            tokio::fs::File::open(&file).await.with_context(|| format!("cannot read {}", file.display()))?;
        let mut writer = BufWriter::new(Arc::clone(&store), key.clone());
        tokio::io::copy(&mut reader, &mut writer).await.with_context(|| format!("cannot upload {relative}"))?;
        writer.shutdown().await.with_context(|| format!("cannot upload {relative}"))?;
        sent += 1;
    }
    // Nothing of the demo may be missing afterwards.
    store.head(&target.key("sales/lineitem/part-1.parquet")).await.context("the upload left no lineitem file")?;
    Ok(sent)
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.path());
    for entry in entries {
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            collect_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "parquet") {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_parsed_and_checked() {
        let url = |s: &str| url::Url::parse(s).unwrap();
        let t = S3Target::parse(&url("s3://lake/demo/"), Some(url("http://127.0.0.1:9000"))).unwrap();
        assert_eq!((t.bucket.as_str(), t.prefix.as_str()), ("lake", "demo"));
        assert_eq!(t.location("sales/orders"), "s3://lake/demo/sales/orders");
        assert_eq!(t.key("sales/x.parquet").as_ref(), "demo/sales/x.parquet");
        let bare = S3Target::parse(&url("s3://lake"), None).unwrap();
        assert_eq!(bare.location("sales/orders"), "s3://lake/sales/orders");
        assert!(S3Target::parse(&url("file:///tmp"), None).unwrap_err().to_string().contains("s3://bucket"));
        assert!(S3Target::parse(&url("s3://lake/x"), Some(url("ftp://h"))).is_err());
        let yaml = t.sales_yaml();
        assert!(yaml.contains("endpoint: http://127.0.0.1:9000\n      allow_http: true"), "{yaml}");
        assert!(yaml.contains("access_key_id_env: AWS_ACCESS_KEY_ID"), "{yaml}");
    }
}
