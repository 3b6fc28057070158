//! Direct access to the warehouse's object storage, for what K2 does outside Iceberg table
//! I/O (which iceberg-rust does through OpenDAL): here, the probe at sink start that the
//! warehouse is writable with the configured credentials, so a wrong secret or bucket is
//! one clear line instead of an error deep inside the first table write.

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

/// The object store holding `location` and the path of `location` inside it.
fn store(config: &K2Config) -> Result<(Arc<dyn ObjectStore>, Path), String> {
    let location = &config.warehouse.location;
    if let Some(dir) = location.strip_prefix("file://") {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {dir}: {e}"))?;
        let fs = LocalFileSystem::new_with_prefix(dir).map_err(|e| e.to_string())?;
        return Ok((Arc::new(fs), Path::default()));
    }
    let rest = location
        .strip_prefix("s3://")
        .or_else(|| location.strip_prefix("s3a://"))
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
    Ok((Arc::new(store), Path::from(prefix)))
}

/// Writes and deletes a small object under `<warehouse>/_k2/`.
pub async fn probe(config: &K2Config) -> Result<(), WarehouseError> {
    let unusable = |message: String| WarehouseError::Unusable {
        location: config.warehouse.location.clone(),
        endpoint: config
            .warehouse
            .s3
            .as_ref()
            .and_then(|s| s.endpoint.as_ref())
            .map(|e| format!(" (endpoint {e})"))
            .unwrap_or_default(),
        message,
    };
    let (store, prefix) = store(config).map_err(unusable)?;
    let path = prefix
        .child("_k2")
        .child(format!("probe-{}", std::process::id()));
    store
        .put(&path, PutPayload::from_static(b"k2 warehouse probe"))
        .await
        .map_err(|e| unusable(format!("cannot write: {e}")))?;
    store
        .delete(&path)
        .await
        .map_err(|e| unusable(format!("cannot delete what it wrote: {e}")))?;
    Ok(())
}
