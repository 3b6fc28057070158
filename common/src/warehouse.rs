//! Direct access to the warehouse's object storage, for what K2 does outside Iceberg table
//! I/O (which iceberg-rust does through OpenDAL): the probe at sink start that the
//! warehouse is writable with the configured credentials (so a wrong secret or bucket is
//! one clear line instead of an error deep inside the first table write), and listing and
//! deleting the files no snapshot references (table maintenance).

use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload};

use crate::config::K2Config;

#[derive(Debug, thiserror::Error)]
pub enum WarehouseError {
    #[error("warehouse {location}{endpoint}: {message}")]
    Unusable {
        location: String,
        endpoint: String,
        message: String,
    },
}

/// An object store and the place of one location inside it, for K2's direct access to
/// the warehouse (the probe, listing a table's files for cleanup).
#[derive(Clone)]
pub struct Located {
    pub store: Arc<dyn ObjectStore>,
    /// Where the location is inside the store.
    pub prefix: Path,
    /// `s3://bucket/` or `file:///dir/`: what a store path is appended to to make a URI.
    root: String,
}

impl Located {
    /// The file's name as Iceberg metadata spells it (`s3://bucket/key`, `file:///path`).
    /// A store path percent-encodes characters such as `~`, `%` or `#` in its parts; the
    /// URI has them as they are, as any writer would name the file.
    pub fn uri(&self, path: &Path) -> String {
        let decoded: Vec<String> = path
            .parts()
            .map(|p| {
                percent_encoding::percent_decode_str(p.as_ref())
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .collect();
        format!("{}{}", self.root, decoded.join("/"))
    }
}

/// One spelling per file: `s3a://` → `s3://`, `/path` and `file:/path` → `file:///path`,
/// and a local path without `.` or `..` segments (`file:///w/config/../t` and
/// `file:///w/t` are one file: tables K2 created before it cleaned its paths carry the
/// first spelling, other engines write the second). S3 keys stay as they are: `..` is an
/// ordinary key there.
pub fn canonical_uri(uri: &str) -> String {
    if let Some(rest) = uri.strip_prefix("s3a://") {
        return format!("s3://{rest}");
    }
    let Some(path) = local_path(uri) else {
        return uri.to_string();
    };
    use path_clean::PathClean;
    let clean = std::path::Path::new(&path).clean();
    // Cleaning drops a trailing slash; a directory's URI keeps it.
    let slash = if path.len() > 1 && path.ends_with('/') {
        "/"
    } else {
        ""
    };
    format!("file://{}{slash}", clean.display())
}

/// The local path of a `file:` URI or a bare absolute path, as spelled (the file system
/// resolves its `..` after any symlink; cleaning it lexically could name another
/// directory).
fn local_path(uri: &str) -> Option<String> {
    if let Some(rest) = uri.strip_prefix("file:") {
        return Some(format!("/{}", rest.trim_start_matches('/')));
    }
    uri.starts_with('/').then(|| uri.to_string())
}

/// The object store holding `location` (a `file://` or `s3://` URI under the warehouse's
/// credentials) and the path of `location` inside it.
pub fn locate(config: &K2Config, location: &str) -> Result<Located, WarehouseError> {
    locate_inner(config, location).map_err(|message| unusable(config, location, message))
}

fn locate_inner(config: &K2Config, location: &str) -> Result<Located, String> {
    if let Some(dir) = local_path(location) {
        let dir = dir.as_str();
        // Rooted at the location itself: a store path would percent-encode characters such
        // as `~` in the directory's name, and the local store would then look elsewhere.
        let fs =
            LocalFileSystem::new_with_prefix(dir).map_err(|e| format!("cannot open {dir}: {e}"))?;
        return Ok(Located {
            store: Arc::new(fs),
            prefix: Path::default(),
            root: format!("file://{}/", dir.trim_end_matches('/')),
        });
    }
    let location = canonical_uri(location);
    let rest = location
        .strip_prefix("s3://")
        .ok_or_else(|| "expected file:// or s3://bucket/prefix".to_string())?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let s3 = config
        .warehouse
        .s3
        .as_ref()
        .ok_or_else(|| "an s3:// warehouse needs [warehouse.s3] (credentials)".to_string())?;
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region(&s3.region)
        .with_access_key_id(&s3.access_key_id)
        .with_secret_access_key(s3.secret_access_key.expose())
        .with_virtual_hosted_style_request(!s3.path_style);
    if let Some(endpoint) = &s3.endpoint {
        builder = builder
            .with_endpoint(endpoint)
            .with_allow_http(endpoint.starts_with("http://"));
    }
    let store = builder.build().map_err(|e| e.to_string())?;
    Ok(Located {
        store: Arc::new(store),
        prefix: Path::from(prefix),
        root: format!("s3://{bucket}/"),
    })
}

fn unusable(config: &K2Config, location: &str, message: String) -> WarehouseError {
    WarehouseError::Unusable {
        location: location.to_string(),
        endpoint: config
            .warehouse
            .s3
            .as_ref()
            .and_then(|s| s.endpoint.as_ref())
            .map(|e| format!(" (endpoint {e})"))
            .unwrap_or_default(),
        message,
    }
}

/// Writes and deletes a small object under `<warehouse>/_k2/`.
pub async fn probe(config: &K2Config) -> Result<(), WarehouseError> {
    let location = &config.warehouse.location;
    if let Some(dir) = local_path(location) {
        std::fs::create_dir_all(&dir)
            .map_err(|e| unusable(config, location, format!("cannot create {dir}: {e}")))?;
    }
    let Located { store, prefix, .. } = locate(config, location)?;
    let path = prefix
        .child("_k2")
        .child(format!("probe-{}", std::process::id()));
    store
        .put(&path, PutPayload::from_static(b"k2 warehouse probe"))
        .await
        .map_err(|e| unusable(config, location, format!("cannot write: {e}")))?;
    store.delete(&path).await.map_err(|e| {
        unusable(
            config,
            location,
            format!("cannot delete what it wrote: {e}"),
        )
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_a_file_is_one_uri() {
        assert_eq!(canonical_uri("s3a://b/k/x.parquet"), "s3://b/k/x.parquet");
        assert_eq!(canonical_uri("s3://b/k/x.parquet"), "s3://b/k/x.parquet");
        assert_eq!(canonical_uri("/tmp/w/x.parquet"), "file:///tmp/w/x.parquet");
        assert_eq!(
            canonical_uri("file:/tmp/w/x.parquet"),
            "file:///tmp/w/x.parquet"
        );
        assert_eq!(
            canonical_uri("file:///tmp/w/x.parquet"),
            "file:///tmp/w/x.parquet"
        );
        assert_eq!(
            canonical_uri("file:///tmp/w/config/../.k2/./x.parquet"),
            "file:///tmp/w/.k2/x.parquet"
        );
        assert_eq!(canonical_uri("/tmp/w/a/../b/"), "file:///tmp/w/b/");
        assert_eq!(
            canonical_uri("s3://b/a/../x"),
            "s3://b/a/../x",
            "a key, not a path"
        );
    }

    #[test]
    fn a_local_location_names_its_files_as_iceberg_does() {
        let dir = std::env::temp_dir().join(format!("k2-locate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = K2Config::default();
        let uri = format!("file://{}", dir.display());
        let located = locate(&config, &uri).unwrap();
        let file = located.prefix.child("data").child("a.parquet");
        assert_eq!(located.uri(&file), format!("{uri}/data/a.parquet"));
        // Characters a store path encodes come back as they are.
        let odd = located.prefix.child("day~1 #2%.parquet");
        assert_eq!(located.uri(&odd), format!("{uri}/day~1 #2%.parquet"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
