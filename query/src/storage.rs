//! How DuckDB reaches the warehouse: the local directory directly, an S3 bucket through
//! the httpfs extension with a secret built from the same `[warehouse.s3]` settings the
//! sink writes with. Either way the session may read only under the warehouse.

use std::path::PathBuf;

use duckdb::Connection;

use k2_common::config::{K2Config, S3Config};

use crate::error::{QueryError, Result};
use crate::plan;

/// The extension directory scripts/bootstrap fills beside the linked libduckdb.
const BUILT_IN_EXTENSION_DIR: Option<&str> = option_env!("K2_DUCKDB_EXTENSION_DIR");

#[derive(Debug, Clone)]
pub(crate) struct WarehouseAccess {
    /// The warehouse location (`file:///…` or `s3://bucket/prefix`).
    location: String,
    s3: Option<S3Config>,
    extension_dir: Option<PathBuf>,
}

/// A SQL string literal (for paths and settings from K2's configuration; never for user
/// values, which are bound).
pub(crate) fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl WarehouseAccess {
    pub(crate) fn from_config(config: &K2Config) -> Self {
        WarehouseAccess {
            location: config.warehouse.location.clone(),
            s3: config.warehouse.s3.clone(),
            extension_dir: config
                .query
                .duckdb_extension_dir
                .clone()
                .or_else(|| BUILT_IN_EXTENSION_DIR.map(PathBuf::from)),
        }
    }

    pub(crate) fn location(&self) -> &str {
        &self.location
    }

    fn is_s3(&self) -> bool {
        self.location.starts_with("s3://") || self.location.starts_with("s3a://")
    }

    /// What the session may read: the warehouse directory, or the whole bucket (a REST
    /// catalog chooses table locations anywhere in its warehouse bucket).
    fn readable_prefix(&self) -> String {
        if self.is_s3() {
            let rest = self.location.split_once("://").map_or("", |(_, r)| r);
            let bucket = rest.split('/').next().unwrap_or_default();
            format!("s3://{bucket}/")
        } else {
            plan::duckdb_path(&self.location)
        }
    }

    /// Makes the warehouse readable (S3: httpfs and a secret).
    pub(crate) fn connect(&self, conn: &Connection) -> Result<()> {
        if self.is_s3() {
            self.load_httpfs(conn)?;
            conn.execute_batch(&self.s3_secret()?)?;
        }
        Ok(())
    }

    /// Read-only from here on: no files outside the warehouse and the temp dir, no
    /// settings changes, no extension loading.
    pub(crate) fn lock_down(&self, conn: &Connection) -> Result<()> {
        let temp = std::env::temp_dir();
        conn.execute_batch(&format!(
            "SET TimeZone = 'UTC';
             SET allowed_directories = [{}, {}];
             SET enable_external_access = false;
             SET lock_configuration = true;",
            literal(&self.readable_prefix()),
            literal(&temp.display().to_string()),
        ))?;
        Ok(())
    }

    fn load_httpfs(&self, conn: &Connection) -> Result<()> {
        let dir = self.extension_dir.as_ref().ok_or_else(|| {
            QueryError::Invalid(
                "an S3 warehouse needs DuckDB's httpfs extension: set query.duckdb_extension_dir \
                 (scripts/bootstrap fetches it)"
                    .into(),
            )
        })?;
        conn.execute_batch(&format!(
            "SET extension_directory = {};
             SET autoinstall_known_extensions = false;
             SET autoload_known_extensions = false;",
            literal(&dir.display().to_string())
        ))?;
        conn.execute_batch("LOAD httpfs").map_err(|e| {
            QueryError::Invalid(format!(
                "cannot load DuckDB's httpfs extension from {} (run scripts/bootstrap, or set \
                 query.duckdb_extension_dir): {e}",
                dir.display()
            ))
        })
    }

    fn s3_secret(&self) -> Result<String> {
        let s3 = self.s3.as_ref().ok_or_else(|| {
            QueryError::Invalid(format!(
                "warehouse.location is {} but [warehouse.s3] (credentials, endpoint) is missing",
                self.location
            ))
        })?;
        let mut parts = vec![
            "TYPE s3".to_string(),
            format!("KEY_ID {}", literal(&s3.access_key_id)),
            format!("SECRET {}", literal(s3.secret_access_key.expose())),
            format!("REGION {}", literal(&s3.region)),
            format!(
                "URL_STYLE {}",
                literal(if s3.path_style { "path" } else { "vhost" })
            ),
        ];
        if let Some(endpoint) = &s3.endpoint {
            // DuckDB wants host:port and a separate TLS switch.
            let (tls, host) = match endpoint.split_once("://") {
                Some(("http", host)) => (false, host),
                Some((_, host)) => (true, host),
                None => (true, endpoint.as_str()),
            };
            parts.push(format!("ENDPOINT {}", literal(host.trim_end_matches('/'))));
            parts.push(format!("USE_SSL {tls}"));
        }
        Ok(format!("CREATE SECRET k2_warehouse ({})", parts.join(", ")))
    }
}
