//! The fenced append loop, the one way the sink commits to any table:
//!
//! load the table → did an earlier attempt of this commit land (its reply lost)? → read the
//! offsets the table records → plan against them ([`super::plan`]) → write the data files
//! (reused while the plan and the files are unchanged and young) → append them with the
//! merged offsets, pinned to the snapshot just checked → on a conflict, back to the start;
//! on a transient failure, back off and back to the start; on anything else, stop.

use std::time::Instant;

use iceberg::TableIdent;
use iceberg::spec::DataFile;

use k2_common::report::chain;
use k2_table::offsets::{TableOffsets, TopicPartition, commit_landed};
use k2_table::writer::write_data_files;

use super::append::AppendError;
use super::plan::{AppendPlan, Planned};
use super::retrying::{Retrying, TROUBLE_AFTER};
use super::{CommitError, Committer};
use crate::instrumentation::{Operation, TableLabels};

/// What one table's commit came to.
#[derive(Debug)]
pub struct Appended {
    /// The decision that was committed (or, when nothing was, the last one made).
    pub planned: Planned,
    /// The snapshot that recorded it; `None` when there was nothing to commit.
    pub snapshot_id: Option<i64>,
}

/// The files written for one plan, and when.
struct Written {
    /// The recorded offsets the plan was made against.
    key: Vec<(TopicPartition, Option<i64>)>,
    at: Instant,
    files: Vec<DataFile>,
}

impl Written {
    fn stats(files: &[DataFile]) -> (u64, u64) {
        (
            files.len() as u64,
            files.iter().map(DataFile::file_size_in_bytes).sum(),
        )
    }
}

impl Committer {
    /// Commits what `plan` decides to `ident`, under `commit_id`, retrying until it lands,
    /// is fenced out entirely, or fails in a way retrying cannot fix.
    pub(super) async fn append_fenced(
        &self,
        ident: &TableIdent,
        commit_id: &str,
        plan: &dyn AppendPlan,
    ) -> Result<Appended, CommitError> {
        let labels = TableLabels {
            table: ident.name().to_string(),
        };
        let started = Instant::now();
        let mut retrying = Retrying::new(&self.metrics, ident.to_string(), TROUBLE_AFTER);
        let fatal = |message: String| CommitError {
            table: ident.to_string(),
            message,
        };
        let mut written: Option<Written> = None;
        // The snapshot current before the first attempt: a later snapshot carrying our
        // commit id means an attempt landed even though its reply was lost.
        let mut base_snapshot: Option<Option<i64>> = None;
        // The last attempt that reached the catalog, with its files' count and bytes.
        let mut sent: Option<(Planned, (u64, u64))> = None;
        loop {
            let table = match self.catalog.load_table(ident).await {
                Ok(t) => t,
                Err(e) if is_fatal(&e) => return Err(fatal(format!("{e:#}"))),
                Err(e) => {
                    retrying
                        .again(Operation::CatalogLoad, "loading the table", &e)
                        .await;
                    continue;
                }
            };
            let metadata = table.metadata();
            match base_snapshot {
                Some(base) if commit_landed(metadata, base, commit_id) => {
                    let (planned, files) = sent
                        .take()
                        .expect("a commit landed only after an attempt was sent");
                    tracing::info!("an earlier attempt landed; not committing again");
                    let snapshot_id = metadata.current_snapshot().map(|s| s.snapshot_id());
                    return Ok(self.landed(&labels, plan, planned, snapshot_id, files, started));
                }
                Some(_) => {}
                None => base_snapshot = Some(metadata.current_snapshot().map(|s| s.snapshot_id())),
            }
            let recorded = TableOffsets::from_metadata(metadata).map_err(|e| fatal(chain(&e)))?;
            let planned = plan.plan(&recorded).map_err(|e| fatal(chain(&e)))?;
            if !planned.commit {
                return Ok(self.landed(&labels, plan, planned, None, (0, 0), started));
            }
            let key: Vec<(TopicPartition, Option<i64>)> = plan
                .partitions()
                .into_iter()
                .map(|tp| {
                    let r = recorded.get(&tp);
                    (tp, r)
                })
                .collect();
            let files = match &written {
                Some(w) if w.key == key && w.at.elapsed() < self.max_file_age => w.files.clone(),
                _ => {
                    let prefix = format!("{commit_id}-{}", uuid::Uuid::new_v4().simple());
                    let at = Instant::now();
                    match write_data_files(&table, &planned.batches, &prefix).await {
                        Ok(files) => {
                            written = Some(Written {
                                key,
                                at,
                                files: files.clone(),
                            });
                            files
                        }
                        Err(e) if is_fatal(&e) => return Err(fatal(format!("{e:#}"))),
                        Err(e) => {
                            retrying
                                .again(Operation::DataFileWrite, "writing data files", &e)
                                .await;
                            continue;
                        }
                    }
                }
            };
            let stats = Written::stats(&files);
            sent = Some((planned.clone(), stats));
            match self
                .append(&table, files, &planned.offsets, commit_id)
                .await
            {
                Ok(snapshot_id) => {
                    return Ok(self.landed(
                        &labels,
                        plan,
                        planned,
                        Some(snapshot_id),
                        stats,
                        started,
                    ));
                }
                Err(AppendError::Conflict) => {
                    // Another writer committed first: re-check the offsets, after a
                    // jittered wait so two committers do not keep colliding in step.
                    self.metrics.commit(&labels.table, "conflict");
                    retrying
                        .again(
                            Operation::CommitConflict,
                            "the catalog commit (another writer committed first; re-checking offsets)",
                            &AppendError::Conflict,
                        )
                        .await;
                }
                Err(AppendError::Fatal(message)) => return Err(fatal(message)),
                Err(e @ AppendError::Transient(_)) => {
                    self.metrics.commit(&labels.table, "error");
                    retrying
                        .again(Operation::Commit, "the catalog commit", &e)
                        .await;
                }
            }
        }
    }

    /// Accounts for a table's commit (the same whether its reply came back or it was
    /// recognised later) and logs it.
    fn landed(
        &self,
        labels: &TableLabels,
        plan: &dyn AppendPlan,
        planned: Planned,
        snapshot_id: Option<i64>,
        (files, bytes): (u64, u64),
        started: Instant,
    ) -> Appended {
        self.metrics
            .fenced_partitions
            .inc_by(planned.fenced.len() as u64);
        if let Some(snapshot_id) = snapshot_id {
            let records = planned.records();
            let seconds = started.elapsed().as_secs_f64();
            self.metrics.commit(&labels.table, "ok");
            self.metrics.data_files.get_or_create(labels).inc_by(files);
            self.metrics
                .data_file_bytes
                .get_or_create(labels)
                .inc_by(bytes);
            self.metrics
                .records_written
                .get_or_create(labels)
                .inc_by(records as u64);
            self.metrics
                .commit_seconds
                .get_or_create(labels)
                .observe(seconds);
            self.metrics.committed(labels);
            if plan.tracks_freshness() {
                self.metrics.data_committed(labels, &planned.batches);
            }
            tracing::info!(snapshot_id, records, files, seconds, "committed");
        }
        Appended {
            planned,
            snapshot_id,
        }
    }
}

/// Errors retrying cannot fix: bad data or schema, a missing table, unsupported features.
pub(crate) fn is_fatal(e: &iceberg::Error) -> bool {
    !k2_common::catalog::is_transient(e)
}
