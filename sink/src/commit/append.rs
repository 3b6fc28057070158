//! One attempt to append a table's files: stage the snapshot on the table as the loop
//! checked it (K2's offsets in its summary and in the table properties, the table's
//! housekeeping when due), commit it with the requirement that `main` has not moved, and
//! after it lands delete what the housekeeping left unreferenced.

use std::collections::HashMap;

use futures::StreamExt;
use iceberg::TableUpdate;
use iceberg::spec::DataFile;
use iceberg::table::Table;

use k2_common::report::chain;
use k2_table::commit::CommitError;
use k2_table::layout::property_upgrades;
use k2_table::offsets::{
    COMMIT_ID_PROPERTY, GROUP_PROPERTY, OFFSETS_PROPERTY, TableOffsets, VERSION_PROPERTY,
};
use k2_table::retention;
use k2_table::stage::StageError;
use k2_table::stage::append::{Append, ManifestMerge};

use super::Committer;
use crate::instrumentation::TableLabels;

/// Why an attempt did not land.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Another writer committed first: check the offsets again.
    #[error("another writer committed first")]
    Conflict,
    /// The catalog or storage may recover: try again after a while.
    #[error("{0}")]
    Transient(String),
    /// Retrying cannot help.
    #[error("{0}")]
    Fatal(String),
}

impl From<CommitError> for AppendError {
    fn from(e: CommitError) -> Self {
        match e {
            CommitError::Conflict => AppendError::Conflict,
            e if e.is_transient() => AppendError::Transient(chain(&e)),
            e => AppendError::Fatal(chain(&e)),
        }
    }
}

impl From<StageError> for AppendError {
    fn from(e: StageError) -> Self {
        match e {
            StageError::Iceberg(e) if k2_common::catalog::is_transient(&e) => {
                AppendError::Transient(chain(&e))
            }
            e => AppendError::Fatal(chain(&e)),
        }
    }
}

impl Committer {
    /// Appends `files` to `table` (as loaded and checked) with `offsets`; the new snapshot's
    /// id once it landed.
    pub(super) async fn append(
        &self,
        table: &Table,
        files: Vec<DataFile>,
        offsets: &TableOffsets,
        commit_id: &str,
    ) -> Result<i64, AppendError> {
        let m = table.metadata();
        let now = (self.clock)();
        let offsets_json = offsets.to_json();
        let append = Append {
            files,
            properties: HashMap::from([
                (OFFSETS_PROPERTY.to_string(), offsets_json.clone()),
                (GROUP_PROPERTY.to_string(), self.group.clone()),
                (COMMIT_ID_PROPERTY.to_string(), commit_id.to_string()),
                (VERSION_PROPERTY.to_string(), k2_common::VERSION.to_string()),
            ]),
            timestamp_ms: now,
        };
        let mut staged = k2_table::stage::append::stage(
            table,
            append,
            ManifestMerge::of(m),
            Some(&self.written),
        )
        .await?;
        // The offsets as a table property too, in the same metadata update: properties
        // outlive snapshots, so expiring K2's snapshots cannot make the offsets vanish.
        let (mut set, remove) = property_upgrades(m.properties());
        set.insert(OFFSETS_PROPERTY.to_string(), offsets_json);
        set.insert(COMMIT_ID_PROPERTY.to_string(), commit_id.to_string());
        staged
            .updates
            .push(TableUpdate::SetProperties { updates: set });
        if !remove.is_empty() {
            staged
                .updates
                .push(TableUpdate::RemoveProperties { removals: remove });
        }
        let housekeeping = self.housekeeping(table, now);
        if let Some(plan) = &housekeeping {
            let (updates, requirements) = plan.changes();
            staged.updates.extend(updates);
            staged.requirements.extend(requirements);
        }
        let snapshot_id = staged.snapshot_id;
        self.target.commit(table, staged).await?;
        if let Some(plan) = housekeeping {
            self.housekept(table, &plan);
        }
        Ok(snapshot_id)
    }

    /// The table's housekeeping, if the policy asks for any and it is due: what has aged
    /// out at most every few minutes (each run expires what has since the last), a history
    /// grown past the window's count as soon as it has (the count bounds the metadata).
    fn housekeeping(&self, table: &Table, now: i64) -> Option<retention::Plan> {
        let policy = self.retention?;
        let name = table.identifier().to_string();
        let mut last = self.housekept.lock().expect("housekeeping lock");
        let period = (policy.window_ms / 12).clamp(1_000, 600_000);
        let recently = last.get(&name).is_some_and(|&at| now - at < period);
        match retention::due(table.metadata(), &policy, now) {
            retention::Due::No => return None,
            retention::Due::Aged if recently => return None,
            retention::Due::Aged | retention::Due::Overfull => {}
        }
        last.insert(name, now);
        let plan = retention::plan(table.metadata(), &policy, now);
        (!plan.is_empty()).then_some(plan)
    }

    /// After a commit carrying `plan` landed: counts it, and deletes the files only the
    /// expired snapshots reached — in the background, so the next commit does not wait for
    /// storage deletes ([`Committer::settle`] waits for them). A failure there loses
    /// nothing (orphan cleanup deletes what is left).
    fn housekept(&self, before: &Table, plan: &retention::Plan) {
        let labels = TableLabels {
            table: before.identifier().name().to_string(),
        };
        self.metrics
            .tags_created
            .get_or_create(&labels)
            .inc_by(plan.tags.len() as u64);
        self.metrics
            .snapshots_expired
            .get_or_create(&labels)
            .inc_by(plan.expire.len() as u64);
        if plan.expire.is_empty() {
            return;
        }
        let before = before.clone();
        let expired = plan.expire.clone();
        let tags = plan.tags.len();
        let metrics = self.metrics.clone();
        let task = tokio::spawn(async move {
            let files = match retention::unreferenced(&before, &expired).await {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(error = %e, "finding the files the expired snapshots left failed; orphan cleanup will delete them");
                    return;
                }
            };
            let io = before.file_io();
            let deleted = futures::stream::iter(files)
                .map(|path| async move {
                    match io.delete(&path).await {
                        Ok(()) => 1u64,
                        Err(e) => {
                            tracing::warn!(path, error = %e, "deleting a file the expired snapshots left failed; orphan cleanup will");
                            0
                        }
                    }
                })
                .buffer_unordered(8)
                .fold(0u64, |n, d| async move { n + d })
                .await;
            metrics
                .expired_files_deleted
                .get_or_create(&labels)
                .inc_by(deleted);
            tracing::info!(
                table = %labels.table,
                tags,
                expired = expired.len(),
                files_deleted = deleted,
                "history kept within the retention policy"
            );
        });
        let mut pending = self.cleanups.lock().expect("cleanups lock");
        pending.retain(|t| !t.is_finished());
        pending.push(task);
    }

    /// Waits until the deletions earlier commits started are done.
    pub async fn settle(&self) {
        let pending: Vec<_> = std::mem::take(&mut *self.cleanups.lock().expect("cleanups lock"));
        for t in pending {
            let _ = t.await;
        }
    }
}
