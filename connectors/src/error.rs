use datafusion::error::DataFusionError;

/// Why a source could not be opened.
///
/// Each variant carries the location (credentials never included) so that the
/// engine can report which product failed and why.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectorError {
    /// The location does not exist: a missing bucket, directory, file or Delta log.
    #[error("not found at {location}: {cause}")]
    NotFound {
        /// The location that was looked up.
        location: String,
        /// What the store reported.
        cause: String,
    },
    /// The store could not be reached or refused the request (network, credentials).
    #[error("unreachable at {location}: {cause}")]
    Unavailable {
        /// The location that was looked up.
        location: String,
        /// What the store reported.
        cause: String,
    },
    /// The data exists but cannot be read as the declared format.
    #[error("invalid data at {location}: {cause}")]
    InvalidData {
        /// The location that was read.
        location: String,
        /// What the reader reported.
        cause: String,
    },
    /// The source description itself is unusable (for example an unsupported URL scheme).
    #[error("invalid source {location}: {cause}")]
    InvalidSource {
        /// The offending location.
        location: String,
        /// What is wrong with it.
        cause: String,
    },
}

impl ConnectorError {
    /// Classifies an error raised while reading `location` through DataFusion or an object store.
    pub(crate) fn from_datafusion(location: &url::Url, err: DataFusionError) -> Self {
        let location = location.to_string();
        classify(location, root_message(&err))
    }

    /// Classifies an error raised by an object store directly.
    pub(crate) fn from_object_store(location: &url::Url, err: object_store::Error) -> Self {
        let cause = err.to_string();
        let location = location.to_string();
        match err {
            object_store::Error::NotFound { .. } => ConnectorError::NotFound { location, cause },
            _ => classify(location, cause),
        }
    }
}

/// Sorts a store or reader message into a variant by what it says; stores report
/// missing buckets and network failures only as text once wrapped by readers.
fn classify(location: String, cause: String) -> ConnectorError {
    let lower = cause.to_ascii_lowercase();
    if lower.contains("not found")
        || lower.contains("nosuchbucket")
        || lower.contains("no such file")
        || lower.contains("does not exist")
        || lower.contains("nosuchkey")
        || lower.contains("no files found")
    {
        ConnectorError::NotFound { location, cause }
    } else if lower.contains("connect")
        || lower.contains("timed out")
        || lower.contains("dns")
        || lower.contains("forbidden")
        || lower.contains("access denied")
        || lower.contains("invalidaccesskeyid")
        || lower.contains("signaturedoesnotmatch")
    {
        ConnectorError::Unavailable { location, cause }
    } else {
        ConnectorError::InvalidData { location, cause }
    }
}

/// The innermost message of a DataFusion error, without the nested
/// "External error:" prefixes that add nothing for a user.
fn root_message(err: &DataFusionError) -> String {
    match err.find_root() {
        DataFusionError::ObjectStore(e) => e.to_string(),
        DataFusionError::ParquetError(e) => e.to_string(),
        DataFusionError::External(e) => e.to_string(),
        other => other.strip_backtrace(),
    }
}
