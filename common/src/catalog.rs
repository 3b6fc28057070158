//! Connects to the Iceberg catalog the configuration names. The sink and the query module
//! both go through here so they always see the same tables.

use std::collections::HashMap;
use std::sync::Arc;

use iceberg::io::{
    S3_ACCESS_KEY_ID, S3_ENDPOINT, S3_PATH_STYLE_ACCESS, S3_REGION, S3_SECRET_ACCESS_KEY,
};
use iceberg::{Catalog, CatalogBuilder};
use iceberg_catalog_rest::RestCatalogBuilder;
use iceberg_catalog_sql::{SqlBindStyle, SqlCatalogBuilder};
use iceberg_storage_opendal::OpenDalResolvingStorageFactory;

use crate::config::{CatalogConfig, K2Config};

/// The namespace holding every K2 table.
pub const NAMESPACE: &str = "market_data";

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot connect to the {kind} catalog at {uri}: {source}")]
    Connect {
        kind: &'static str,
        uri: String,
        #[source]
        source: iceberg::Error,
    },
    #[error("cannot create {path}: {source}")]
    LocalDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Storage properties for table I/O (OpenDAL picks the backend by the URL scheme).
pub fn storage_properties(config: &K2Config) -> HashMap<String, String> {
    let mut props = HashMap::new();
    if let Some(s3) = &config.warehouse.s3 {
        if let Some(endpoint) = &s3.endpoint {
            props.insert(S3_ENDPOINT.to_string(), endpoint.clone());
        }
        props.insert(S3_REGION.to_string(), s3.region.clone());
        props.insert(S3_PATH_STYLE_ACCESS.to_string(), s3.path_style.to_string());
        props.insert(S3_ACCESS_KEY_ID.to_string(), s3.access_key_id.clone());
        props.insert(
            S3_SECRET_ACCESS_KEY.to_string(),
            s3.secret_access_key.expose().to_string(),
        );
    }
    props
}

/// Opens the configured catalog. For the embedded default this also creates the state
/// directory and the local warehouse directory.
pub async fn connect(config: &K2Config) -> Result<Arc<dyn Catalog>, CatalogError> {
    let storage = Arc::new(OpenDalResolvingStorageFactory::new());
    let mut props = storage_properties(config);
    if let Some(dir) = config.warehouse.location.strip_prefix("file://") {
        std::fs::create_dir_all(dir).map_err(|source| CatalogError::LocalDir {
            path: dir.to_string(),
            source,
        })?;
    }
    match &config.catalog {
        CatalogConfig::Sql {
            name,
            uri,
            properties,
        } => {
            if let Some(file) = uri.expose().strip_prefix("sqlite:") {
                let file = file.split('?').next().unwrap_or_default();
                if let Some(parent) = std::path::Path::new(file).parent() {
                    std::fs::create_dir_all(parent).map_err(|source| CatalogError::LocalDir {
                        path: parent.display().to_string(),
                        source,
                    })?;
                }
            }
            props.extend(
                properties
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string())),
            );
            props.insert("uri".into(), uri.expose().to_string());
            props.insert("warehouse".into(), config.warehouse.location.clone());
            let bind = if uri.expose().starts_with("sqlite:") {
                SqlBindStyle::QMark
            } else {
                SqlBindStyle::DollarNumeric
            };
            props.insert("sql_bind_style".into(), bind.to_string());
            let catalog = SqlCatalogBuilder::default()
                .with_storage_factory(storage)
                .load(name.clone(), props)
                .await
                .map_err(|source| CatalogError::Connect {
                    kind: "sql",
                    uri: uri.redacted(),
                    source,
                })?;
            Ok(Arc::new(catalog))
        }
        CatalogConfig::Rest {
            name,
            uri,
            credential,
            warehouse,
            properties,
        } => {
            props.extend(
                properties
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string())),
            );
            props.insert("uri".into(), uri.clone());
            props.insert(
                "warehouse".into(),
                warehouse
                    .clone()
                    .unwrap_or_else(|| config.warehouse.location.clone()),
            );
            if let Some(c) = credential {
                props.insert("credential".into(), c.expose().to_string());
            }
            let catalog = RestCatalogBuilder::default()
                .with_storage_factory(storage)
                .load(name.clone(), props)
                .await
                .map_err(|source| CatalogError::Connect {
                    kind: "rest",
                    uri: uri.clone(),
                    source,
                })?;
            Ok(Arc::new(catalog))
        }
    }
}

/// Whether a catalog or table I/O error may pass if the operation is tried again (the
/// catalog or storage unreachable, a commit conflict), as opposed to one that retrying
/// cannot change (invalid data, an unsupported feature, a missing table).
pub fn is_transient(e: &iceberg::Error) -> bool {
    !matches!(
        e.kind(),
        iceberg::ErrorKind::DataInvalid
            | iceberg::ErrorKind::FeatureUnsupported
            | iceberg::ErrorKind::PreconditionFailed
            | iceberg::ErrorKind::TableNotFound
            | iceberg::ErrorKind::NamespaceNotFound
    )
}
