//! Committing staged metadata updates ([`crate::replace::Staged`]) atomically through the
//! catalog, without iceberg-rust's `Transaction` (whose `TableCommit` cannot be built
//! outside the crate):
//! - SQL catalog: check the requirements against the current metadata, write the next
//!   metadata file, and swap the table's row to it only if it still points at the metadata
//!   the check read — the same compare-and-swap the SQL catalog itself does, on the same
//!   `iceberg_tables` row, so it and K2's sink serialise against each other;
//! - REST catalog: the `updateTable` endpoint with the requirements, which the server checks
//!   atomically (409 on a conflict).

use std::str::FromStr;
use std::sync::Arc;

use iceberg::table::Table;
use iceberg::{Catalog, MetadataLocation, TableIdent};
use k2_common::config::{CatalogConfig, K2Config};
use sqlx::AnyPool;

use crate::replace::Staged;

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// Another commit landed since the update was staged: stage again on the new head.
    #[error("another commit landed first")]
    Conflict,
    #[error(transparent)]
    Iceberg(#[from] iceberg::Error),
    #[error("catalog database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("REST catalog: {0}")]
    Rest(String),
}

/// Where staged updates are committed.
pub enum MetadataCommitter {
    Sql {
        pool: AnyPool,
        catalog_name: String,
        /// `?` placeholders (SQLite) rather than `$n` (PostgreSQL).
        qmark: bool,
    },
    Rest(crate::rest_commit::RestCommitter),
}

impl MetadataCommitter {
    pub async fn connect(config: &K2Config) -> Result<Arc<Self>, CommitError> {
        match &config.catalog {
            CatalogConfig::Sql { name, uri, .. } => {
                sqlx::any::install_default_drivers();
                let pool = sqlx::any::AnyPoolOptions::new()
                    .max_connections(2)
                    .connect(uri.expose())
                    .await?;
                Ok(Arc::new(MetadataCommitter::Sql {
                    pool,
                    catalog_name: name.clone(),
                    qmark: uri.expose().starts_with("sqlite:"),
                }))
            }
            CatalogConfig::Rest { .. } => Ok(Arc::new(MetadataCommitter::Rest(
                crate::rest_commit::RestCommitter::new(config)?,
            ))),
        }
    }

    /// Commits `staged` to `ident`; [`CommitError::Conflict`] if a requirement no longer
    /// holds or another commit won the swap.
    pub async fn commit(
        &self,
        catalog: &dyn Catalog,
        ident: &TableIdent,
        staged: Staged,
    ) -> Result<(), CommitError> {
        match self {
            MetadataCommitter::Sql {
                pool,
                catalog_name,
                qmark,
            } => {
                let current = catalog.load_table(ident).await?;
                let next = next_metadata(&current, staged).await?;
                let Some((current_location, next)) = next else {
                    return Err(CommitError::Conflict);
                };
                crate::fail_point!("commit-after-metadata-write");
                let sql = if *qmark {
                    "UPDATE iceberg_tables SET metadata_location = ?, previous_metadata_location = ? \
                     WHERE catalog_name = ? AND table_name = ? AND table_namespace = ? \
                     AND (iceberg_type = 'TABLE' OR iceberg_type IS NULL) AND metadata_location = ?"
                } else {
                    "UPDATE iceberg_tables SET metadata_location = $1, previous_metadata_location = $2 \
                     WHERE catalog_name = $3 AND table_name = $4 AND table_namespace = $5 \
                     AND (iceberg_type = 'TABLE' OR iceberg_type IS NULL) AND metadata_location = $6"
                };
                let done = sqlx::query(sql)
                    .bind(next.to_string())
                    .bind(current_location.clone())
                    .bind(catalog_name.clone())
                    .bind(ident.name().to_string())
                    .bind(ident.namespace().join("."))
                    .bind(current_location)
                    .execute(pool)
                    .await?;
                if done.rows_affected() == 0 {
                    // The metadata file written for it is an orphan for cleanup.
                    return Err(CommitError::Conflict);
                }
                // A test can make the reply of an applied commit get lost here.
                fail::fail_point!("commit-lost-reply", |_| Err(CommitError::Rest(
                    "the reply was lost (injected)".into()
                )));
                Ok(())
            }
            MetadataCommitter::Rest(rest) => rest.commit(ident, staged).await,
        }
    }
}

/// Checks the requirements against `current`, then writes the metadata the updates make of
/// it. `None` when a requirement does not hold.
async fn next_metadata(
    current: &Table,
    staged: Staged,
) -> Result<Option<(String, MetadataLocation)>, CommitError> {
    for r in &staged.requirements {
        if r.check(Some(current.metadata())).is_err() {
            return Ok(None);
        }
    }
    let location = current.metadata_location_result()?.to_string();
    let mut builder = current
        .metadata()
        .clone()
        .into_builder(Some(location.clone()));
    for u in staged.updates {
        builder = u.apply(builder)?;
    }
    let next = builder.build()?.metadata;
    let next_location = MetadataLocation::from_str(&location)?
        .with_next_version()
        .with_new_metadata(&next);
    next.write_to(current.file_io(), &next_location).await?;
    Ok(Some((location, next_location)))
}
