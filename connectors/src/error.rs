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
        let cause = root_message(&err);
        match kind_of(&err) {
            Some(kind) => kind.with(location, cause),
            None => classify(location, cause),
        }
    }

    /// Classifies an error raised by an object store directly.
    pub(crate) fn from_object_store(location: &url::Url, err: object_store::Error) -> Self {
        let cause = err.to_string();
        let location = location.to_string();
        match kind_of(&err) {
            Some(kind) => kind.with(location, cause),
            None => classify(location, cause),
        }
    }
}

/// What kind of failure a typed error says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    NotFound,
    Unavailable,
}

impl Kind {
    fn with(self, location: String, cause: String) -> ConnectorError {
        match self {
            Kind::NotFound => ConnectorError::NotFound { location, cause },
            Kind::Unavailable => ConnectorError::Unavailable { location, cause },
        }
    }
}

/// The kind of failure the first typed error along `err`'s chain of sources
/// says it is (an object store's or the operating system's), if any does:
/// errors are downcast, and only errors that arrive as text are sorted by
/// what they say ([`classify`]).
fn kind_of(err: &(dyn std::error::Error + 'static)) -> Option<Kind> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = next {
        let decided = if let Some(e) = e.downcast_ref::<object_store::Error>() {
            match e {
                object_store::Error::NotFound { .. } => Some(Kind::NotFound),
                object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
                    Some(Kind::Unavailable)
                }
                _ => None,
            }
        } else if let Some(e) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            match e.kind() {
                K::NotFound => Some(Kind::NotFound),
                K::PermissionDenied
                | K::ConnectionRefused
                | K::ConnectionReset
                | K::ConnectionAborted
                | K::NotConnected
                | K::TimedOut
                | K::HostUnreachable
                | K::NetworkUnreachable => Some(Kind::Unavailable),
                _ => None,
            }
        } else {
            None
        };
        if decided.is_some() {
            return decided;
        }
        next = e.source();
    }
    None
}

/// Sorts a store or reader message into a variant by what it says: for errors
/// that reach Agora only as text (a reader's message wrapping a store's).
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

#[cfg(test)]
mod tests {
    use super::*;

    fn url() -> url::Url {
        url::Url::parse("s3://bucket/orders/").unwrap()
    }

    #[test]
    fn typed_errors_are_classified_by_type_not_text() {
        let missing = object_store::Error::NotFound { path: "orders/x".into(), source: "gone".into() };
        assert!(matches!(ConnectorError::from_object_store(&url(), missing), ConnectorError::NotFound { .. }));
        let denied = object_store::Error::PermissionDenied { path: "orders/x".into(), source: "no".into() };
        assert!(matches!(ConnectorError::from_object_store(&url(), denied), ConnectorError::Unavailable { .. }));
        // Behind DataFusion's wrappers, and whatever the message says.
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "something else entirely");
        let wrapped = DataFusionError::External(Box::new(DataFusionError::IoError(io)));
        assert!(matches!(ConnectorError::from_datafusion(&url(), wrapped), ConnectorError::Unavailable { .. }));
        let stored = DataFusionError::ObjectStore(Box::new(object_store::Error::NotFound {
            path: "orders/x".into(),
            source: "gone".into(),
        }));
        assert!(matches!(ConnectorError::from_datafusion(&url(), stored), ConnectorError::NotFound { .. }));
    }

    #[test]
    fn text_only_errors_are_still_sorted_by_their_message() {
        let text = DataFusionError::Execution("NoSuchBucket: the bucket does not exist".into());
        assert!(matches!(ConnectorError::from_datafusion(&url(), text), ConnectorError::NotFound { .. }));
        let timeout = DataFusionError::Execution("operation timed out after 30s".into());
        assert!(matches!(ConnectorError::from_datafusion(&url(), timeout), ConnectorError::Unavailable { .. }));
        let bad = DataFusionError::Execution("invalid footer".into());
        assert!(matches!(ConnectorError::from_datafusion(&url(), bad), ConnectorError::InvalidData { .. }));
    }
}
