//! Turns a location as written in a mesh file into a URL.

use std::path::{Component, Path, PathBuf};

use url::Url;

/// Parses `file://` and `s3://` URLs, and plain paths (absolute, or relative to
/// `base`, the directory of the mesh file).
pub(crate) fn resolve(raw: &str, base: &Path) -> Result<Url, String> {
    if raw.trim().is_empty() {
        return Err("expected a location (a path, file:// or s3:// URL), found an empty string".to_string());
    }
    if let Some((scheme, _)) = raw.split_once("://") {
        let url = Url::parse(raw).map_err(|e| format!("malformed URL '{raw}': {e}"))?;
        return match scheme {
            "file" => Ok(url),
            "s3" | "s3a" => {
                if url.host_str().unwrap_or_default().is_empty() {
                    Err(format!("malformed URL '{raw}': expected s3://BUCKET/path"))
                } else {
                    Ok(url)
                }
            }
            other => Err(format!("unsupported URL scheme '{other}' in '{raw}' (expected file://, s3:// or a path)")),
        };
    }
    let path = Path::new(raw);
    let absolute = if path.is_absolute() { path.to_path_buf() } else { base.join(path) };
    let absolute = normalize(&absolute);
    Url::from_file_path(&absolute).map_err(|()| format!("cannot turn path '{}' into a file URL", absolute.display()))
}

/// Removes `.` and `..` components without touching the file system: a location
/// need not exist yet when the file is validated.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_resolve_against_the_config_directory() {
        let url = resolve("data/../sales/orders", Path::new("/srv/mesh")).unwrap();
        assert_eq!(url.as_str(), "file:///srv/mesh/sales/orders");
    }

    #[test]
    fn urls_are_checked() {
        assert_eq!(resolve("s3://bucket/x", Path::new("/")).unwrap().as_str(), "s3://bucket/x");
        assert!(resolve("s3:///x", Path::new("/")).unwrap_err().contains("expected s3://BUCKET/path"));
        assert!(resolve("gopher://x/y", Path::new("/")).unwrap_err().contains("unsupported URL scheme 'gopher'"));
        assert!(resolve("", Path::new("/")).unwrap_err().contains("empty"));
    }
}
