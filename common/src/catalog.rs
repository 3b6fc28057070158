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
    /// (An iceberg error prints its own cause: it is part of the message, not a source.)
    #[error("cannot connect to the {kind} catalog at {uri}: {error}")]
    Connect {
        kind: &'static str,
        uri: String,
        error: iceberg::Error,
    },
    #[error("cannot create {path}")]
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
                .map_err(|error| CatalogError::Connect {
                    kind: "sql",
                    uri: uri.redacted(),
                    error,
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
                .map_err(|error| CatalogError::Connect {
                    kind: "rest",
                    uri: uri.clone(),
                    error,
                })?;
            Ok(Arc::new(catalog))
        }
    }
}

/// Whether a catalog or table I/O error may pass if the operation is tried again, by an
/// allow-list: iceberg says so (a commit conflict, an error its catalog marks retryable), or
/// the error's cause is one a catalog or store that is unreachable, overloaded or briefly
/// refusing produces — an I/O or connection failure, a timeout, a pool exhausted, a server
/// error or throttling, a locked SQLite database, credentials refused (an operator fixes
/// them without restarting the sink). Anything else — invalid data, an unsupported
/// feature, a missing table or file, a table that already exists, and any error kind
/// iceberg adds later — is permanent: the caller stops with its reason rather than retry
/// forever.
pub fn is_transient(e: &iceberg::Error) -> bool {
    if e.retryable() || e.kind() == iceberg::ErrorKind::CatalogCommitConflicts {
        return true;
    }
    if e.kind() != iceberg::ErrorKind::Unexpected {
        return false;
    }
    // The REST client puts the HTTP status of an unexpected answer in the error's context
    // (other errors' text may mention a status too: a storage error's response).
    if e.message() == "Received response with unexpected status code"
        && let Some(status) = rest_status(&e.to_string())
    {
        return status >= 500 || status == 429 || status == 408;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(o) = s.downcast_ref::<opendal::Error>() {
            return o.is_temporary()
                || matches!(
                    o.kind(),
                    opendal::ErrorKind::Unexpected
                        | opendal::ErrorKind::RateLimited
                        | opendal::ErrorKind::PermissionDenied
                );
        }
        if let Some(x) = s.downcast_ref::<sqlx::Error>() {
            return sqlx_transient(x);
        }
        if let Some(r) = s.downcast_ref::<reqwest::Error>() {
            return r.is_connect()
                || r.is_timeout()
                || r.is_request()
                || r.is_body()
                || r.status()
                    .is_some_and(|s| s.is_server_error() || s.as_u16() == 429);
        }
        if s.downcast_ref::<std::io::Error>().is_some() {
            return true;
        }
        source = s.source();
    }
    false
}

/// The status of a REST catalog's unexpected answer (`status: 503 Service Unavailable` in
/// the error's context), if the error is one.
fn rest_status(text: &str) -> Option<u16> {
    let rest = text.split("status: ").nth(1)?;
    rest.get(..3)?.parse().ok()
}

/// Whether a catalog database error may pass (see [`is_transient`]).
pub fn sqlx_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // SQLite: busy, locked (another process holds the database); PostgreSQL:
            // connection exceptions (08…), serialisation failures and deadlocks (40…),
            // insufficient resources (53…), the server shutting down (57P…).
            matches!(code.as_ref(), "5" | "6" | "261" | "262" | "517")
                || ["08", "40", "53", "57P"]
                    .iter()
                    .any(|p| code.starts_with(p))
                || db.message().contains("database is locked")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(kind: opendal::ErrorKind) -> iceberg::Error {
        iceberg::Error::new(
            iceberg::ErrorKind::Unexpected,
            "Failure in doing io operation",
        )
        .with_source(opendal::Error::new(kind, "from the store"))
    }

    #[test]
    fn only_what_an_outage_produces_is_retried() {
        use iceberg::ErrorKind as K;
        // Iceberg's own verdicts.
        assert!(is_transient(&iceberg::Error::new(
            K::CatalogCommitConflicts,
            "x"
        )));
        assert!(is_transient(
            &iceberg::Error::new(K::Unexpected, "x").with_retryable(true)
        ));
        for kind in [
            K::DataInvalid,
            K::FeatureUnsupported,
            K::PreconditionFailed,
            K::TableNotFound,
            K::NamespaceNotFound,
            K::TableAlreadyExists,
            K::NamespaceAlreadyExists,
        ] {
            assert!(!is_transient(&iceberg::Error::new(kind, "x")), "{kind:?}");
        }
        // An unexpected error is retried only for a cause an outage explains.
        assert!(!is_transient(&iceberg::Error::new(K::Unexpected, "a bug")));
        assert!(is_transient(&io(opendal::ErrorKind::Unexpected)));
        assert!(is_transient(&io(opendal::ErrorKind::RateLimited)));
        assert!(is_transient(&io(opendal::ErrorKind::PermissionDenied)));
        assert!(!is_transient(&io(opendal::ErrorKind::NotFound)));
        assert!(!is_transient(&io(opendal::ErrorKind::ConfigInvalid)));
        let sql = |e: sqlx::Error| iceberg::Error::new(K::Unexpected, "sqlx").with_source(e);
        assert!(is_transient(&sql(sqlx::Error::PoolTimedOut)));
        assert!(is_transient(&sql(sqlx::Error::Io(std::io::Error::other(
            "reset"
        )))));
        assert!(!is_transient(&sql(sqlx::Error::RowNotFound)));
        let rest = |status: &str| {
            iceberg::Error::new(
                K::Unexpected,
                "Received response with unexpected status code",
            )
            .with_context("status", status)
        };
        assert!(is_transient(&rest("503 Service Unavailable")));
        assert!(is_transient(&rest("429 Too Many Requests")));
        assert!(!is_transient(&rest("403 Forbidden")));
        // A storage error whose text mentions an HTTP status is judged by its cause.
        let refused_key = iceberg::Error::new(K::Unexpected, "Failure in doing io operation")
            .with_context("response", "Parts { status: 403 }")
            .with_source(opendal::Error::new(
                opendal::ErrorKind::PermissionDenied,
                "InvalidAccessKeyId",
            ));
        assert!(is_transient(&refused_key), "credentials an operator fixes");
    }
}
