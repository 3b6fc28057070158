//! Committing staged metadata updates ([`crate::stage::Staged`]) atomically through the
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

use crate::stage::Staged;

mod rest;

/// Iceberg's table property asking writers to delete metadata files as they drop out of
/// the metadata log (whose length `write.metadata.previous-versions-max` bounds).
pub const DELETE_AFTER_COMMIT: &str = "write.metadata.delete-after-commit.enabled";

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// Another commit landed since the update was staged: stage again on the new head.
    #[error("another commit landed first")]
    Conflict,
    #[error(transparent)]
    Iceberg(#[from] iceberg::Error),
    #[error("catalog database")]
    Sql(#[from] sqlx::Error),
    #[error("REST catalog: {message}")]
    Rest {
        /// The HTTP status, when the server answered.
        status: Option<u16>,
        message: String,
    },
}

impl CommitError {
    /// Whether trying again (after staging again) may succeed: a conflict, a catalog or
    /// store that did not answer or answered with a server error. A refused request (bad
    /// updates, no such table, not authorised) is not.
    pub fn is_transient(&self) -> bool {
        match self {
            CommitError::Conflict => true,
            CommitError::Iceberg(e) => k2_common::catalog::is_transient(e),
            CommitError::Sql(e) => k2_common::catalog::sqlx_transient(e),
            CommitError::Rest { status, .. } => status.is_none_or(|s| s >= 500 || s == 429),
        }
    }
}

/// Somewhere staged updates can be committed atomically: the catalog itself
/// ([`MetadataCommitter`]), or in tests a wrapper that injects a fault.
#[async_trait::async_trait]
pub trait CommitTarget: Send + Sync {
    /// Commits `staged`, staged on `base` (the table as the caller loaded it), to that
    /// table; [`CommitError::Conflict`] if a requirement no longer holds or another commit
    /// won.
    async fn commit(&self, base: &Table, staged: Staged) -> Result<(), CommitError>;
}

/// Where staged updates are committed.
pub enum MetadataCommitter {
    Sql {
        pool: AnyPool,
        catalog_name: String,
        /// `?` placeholders (SQLite) rather than `$n` (PostgreSQL).
        qmark: bool,
    },
    Rest(rest::RestCommitter),
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
                rest::RestCommitter::new(config)?,
            ))),
        }
    }

    /// Commits `staged` to `ident` as it is now (loaded first); [`CommitError::Conflict`]
    /// if a requirement no longer holds or another commit won the swap.
    pub async fn commit_to(
        &self,
        catalog: &dyn Catalog,
        ident: &TableIdent,
        staged: Staged,
    ) -> Result<(), CommitError> {
        let current = catalog.load_table(ident).await?;
        CommitTarget::commit(self, &current, staged).await
    }
}

#[async_trait::async_trait]
impl CommitTarget for MetadataCommitter {
    async fn commit(&self, current: &Table, staged: Staged) -> Result<(), CommitError> {
        let ident = current.identifier();
        match self {
            MetadataCommitter::Sql {
                pool,
                catalog_name,
                qmark,
            } => {
                let next = next_metadata(current, staged).await?;
                let Some(Next {
                    current_location,
                    next,
                    dropped,
                }) = next
                else {
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
                crate::fail_point!("commit-lost-reply", |_| Err(CommitError::Rest {
                    status: None,
                    message: "the reply was lost (injected)".into()
                }));
                delete_dropped(current, &dropped).await;
                Ok(())
            }
            MetadataCommitter::Rest(rest) => rest.commit(ident, staged).await,
        }
    }
}

/// Deletes the metadata files that dropped out of the metadata log, when the table asks for
/// it (the REST catalog's server does the same on its side). A failure leaves them to
/// orphan cleanup: the commit itself has landed.
async fn delete_dropped(table: &Table, dropped: &[String]) {
    let enabled = table
        .metadata()
        .properties()
        .get(DELETE_AFTER_COMMIT)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if !enabled {
        return;
    }
    for path in dropped {
        if let Err(e) = table.file_io().delete(path).await {
            tracing::warn!(path, error = %e, "deleting a metadata file that left the metadata log failed; orphan cleanup will");
        }
    }
}

/// The metadata a commit writes.
struct Next {
    current_location: String,
    next: MetadataLocation,
    /// Metadata files that dropped out of the log (`write.metadata.previous-versions-max`).
    dropped: Vec<String>,
}

/// Checks the requirements against `current`, then writes the metadata the updates make of
/// it. `None` when a requirement does not hold.
async fn next_metadata(current: &Table, staged: Staged) -> Result<Option<Next>, CommitError> {
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
    let built = builder.build()?;
    let next = built.metadata;
    let next_location = MetadataLocation::from_str(&location)?
        .with_next_version()
        .with_new_metadata(&next);
    next.write_to(current.file_io(), &next_location).await?;
    Ok(Some(Next {
        current_location: location,
        next: next_location,
        dropped: built
            .expired_metadata_logs
            .into_iter()
            .map(|l| l.metadata_file)
            .collect(),
    }))
}
