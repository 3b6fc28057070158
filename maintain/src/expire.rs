//! Snapshot expiry by K2's retention policy (`k2_table::retention`, ADR-23): end-of-day
//! tags for the days that ended, refs past their `max-ref-age-ms` removed, snapshots
//! outside the window that no ref keeps expired — the same plan the sink applies in its
//! own commits, so running both is safe (each commits with requirements on what it saw).
//! The plan is committed through the catalog's compare-and-swap; once it has landed, the
//! manifest lists, manifests and replaced data files only expired snapshots reached are
//! deleted (what is missed, a crash in between, is left to [`crate::orphans`]).

use std::fmt;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use iceberg::{Catalog, TableIdent};
use k2_table::commit::{CommitError, CommitTarget, MetadataCommitter};
use k2_table::retention;
use k2_table::stage::Staged;

use crate::{MaintainError, retry};

/// What expiry did to (or, in a dry run, would do to) one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    pub table: String,
    pub snapshots_before: usize,
    /// Ids of the snapshots removed, ascending.
    pub removed: Vec<i64>,
    /// End-of-day tags created.
    pub tagged: Vec<String>,
    /// Refs removed for their age.
    pub untagged: Vec<String>,
    /// Files deleted because only expired snapshots reached them.
    pub files_deleted: usize,
    pub dry_run: bool,
}

impl fmt::Display for Expired {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.dry_run {
            "would expire"
        } else {
            "expired"
        };
        write!(
            f,
            "{}: {} of {} snapshots {verb}, {} kept",
            self.table,
            self.removed.len(),
            self.snapshots_before,
            self.snapshots_before - self.removed.len()
        )?;
        if !self.tagged.is_empty() {
            write!(f, "; tagged {}", self.tagged.join(", "))?;
        }
        if !self.untagged.is_empty() {
            write!(
                f,
                "; tags past their age removed: {}",
                self.untagged.join(", ")
            )?;
        }
        if self.files_deleted > 0 {
            write!(
                f,
                "; {} files no snapshot reaches deleted",
                self.files_deleted
            )?;
        }
        Ok(())
    }
}

/// Applies `policy` to the history of `ident` as of `now`.
pub async fn expire(
    catalog: &dyn Catalog,
    committer: &MetadataCommitter,
    ident: &TableIdent,
    policy: retention::Policy,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<Expired, MaintainError> {
    let name = ident.to_string();
    let now_ms = now.timestamp_millis();
    let (before, plan) = retry::catalog(&name, "expiring snapshots", || async {
        loop {
            let table = catalog.load_table(ident).await?;
            let plan = retention::plan(table.metadata(), &policy, now_ms);
            if dry_run || plan.is_empty() {
                return Ok((table, plan));
            }
            let (updates, requirements) = plan.changes();
            let mut requirements = requirements;
            requirements.push(iceberg::TableRequirement::UuidMatch {
                uuid: table.metadata().uuid(),
            });
            let staged = Staged {
                snapshot_id: 0,
                updates,
                requirements,
            };
            match committer.commit(&table, staged).await {
                Ok(()) => return Ok((table, plan)),
                // A sink commit landed in between: plan again on what is there now.
                Err(CommitError::Conflict) => continue,
                Err(CommitError::Iceberg(e)) => return Err(e),
                Err(e) => {
                    return Err(iceberg::Error::new(
                        iceberg::ErrorKind::Unexpected,
                        k2_common::report::chain(&e),
                    ));
                }
            }
        }
    })
    .await?;
    let mut files_deleted = 0;
    if !dry_run && !plan.expire.is_empty() {
        match retention::unreferenced(&before, &plan.expire).await {
            Ok(files) => {
                let io = before.file_io();
                files_deleted = futures::stream::iter(files)
                    .map(|path| async move { io.delete(&path).await.is_ok() })
                    .buffer_unordered(8)
                    .filter(|ok| std::future::ready(*ok))
                    .count()
                    .await;
            }
            Err(e) => {
                tracing::warn!(table = %name, error = %e, "finding the files expired snapshots left failed; orphan cleanup will delete them")
            }
        }
    }
    let expired = Expired {
        table: name,
        snapshots_before: before.metadata().snapshots().len(),
        removed: plan.expire.iter().copied().collect(),
        tagged: plan.tags.iter().map(|(n, _)| n.clone()).collect(),
        untagged: plan.untag.iter().map(|(n, _)| n.clone()).collect(),
        files_deleted,
        dry_run,
    };
    tracing::info!(
        table = %expired.table,
        removed = expired.removed.len(),
        before = expired.snapshots_before,
        tagged = expired.tagged.len(),
        files_deleted,
        dry_run,
        "snapshot expiry"
    );
    Ok(expired)
}
