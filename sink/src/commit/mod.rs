//! Commit: one Iceberg append per table per cycle, recording the Kafka offsets of the rows
//! it adds, and only if those offsets continue exactly from what the table recorded.
//!
//! The protocol (docs/exactly-once.md): every table of a job — the data tables and
//! `sequence_events` alike — goes through the one fenced append loop ([`fenced`]), fed with
//! a plan of what the job asks of that table ([`plan`]). The append is staged by
//! `k2_table::stage::append` (merge-append: the manifest list stays short) on the snapshot
//! the loop checked, and committed through the catalog's own compare-and-swap with the
//! requirement that `main` is still there ([`k2_table::commit`]): a concurrent commit
//! surfaces as a conflict and the loop re-checks offsets. The same commit carries the
//! table's housekeeping when it is due ([`k2_table::retention`]: end-of-day tags, expiry of
//! snapshots outside the window), so the history stays bounded without a scheduled job.
//! Retries are counted and turned into readiness trouble by [`retrying`]; the poll loop
//! hands jobs over through [`task`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iceberg::Catalog;
use tracing::Instrument;

use k2_common::config::MaintenanceConfig;
use k2_common::data_type::DataType;
use k2_table::commit::CommitTarget;
use k2_table::layout::{sequence_events_ident, table_ident};
use k2_table::offsets::TopicPartition;
use k2_table::retention;
use k2_table::stage::append::WrittenManifests;

use crate::dead_letters::PendingDeadLetters;
use crate::instrumentation::Metrics;
use crate::job::{CommitJob, PartitionRange, TableJob};
use plan::{DataPlan, EventsPlan};

mod append;
mod fenced;
pub mod plan;
mod retrying;
mod task;

pub(crate) use fenced::is_fatal;
pub use task::{CommitTask, CommitTaskEnded};

/// A failure that retrying will not fix; the process exits and a restart resumes from
/// the offsets the tables recorded.
#[derive(Debug, thiserror::Error)]
#[error("committing {table}: {message}")]
pub struct CommitError {
    pub table: String,
    pub message: String,
}

/// What became of one partition's range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeOutcome {
    /// Recorded in the table: the next offset to read is `range.end`.
    Committed,
    /// Another writer advanced the partition; the table records `recorded`.
    Fenced { recorded: Option<i64> },
}

#[derive(Debug)]
pub struct TableOutcome {
    pub data_type: DataType,
    pub records: usize,
    pub snapshot_id: Option<i64>,
    pub partitions: Vec<(TopicPartition, PartitionRange, RangeOutcome)>,
}

#[derive(Debug)]
pub struct JobOutcome {
    pub id: u64,
    pub tables: Vec<TableOutcome>,
    pub dead_letters: usize,
}

/// Milliseconds since the epoch: when a snapshot is committed, and what the retention
/// policy measures ages against. The wall clock, except in `bench/history`, which simulates
/// a week of commits in minutes.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// Commits jobs; one per sink process.
#[derive(Clone)]
pub struct Committer {
    catalog: Arc<dyn Catalog>,
    target: Arc<dyn CommitTarget>,
    group: String,
    writer_id: String,
    metrics: Metrics,
    max_file_age: Duration,
    clock: Clock,
    retention: Option<retention::Policy>,
    /// When each table's housekeeping last ran (by [`Self::clock`]).
    housekept: Arc<Mutex<HashMap<String, i64>>>,
    /// Deletions of what expired snapshots left, running in the background.
    cleanups: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    /// The manifests this committer's appends wrote, until a merge takes them.
    written: Arc<WrittenManifests>,
}

impl Committer {
    /// A committer loading tables from `catalog` and committing through `target` (the
    /// same catalog's compare-and-swap: `k2_table::commit::MetadataCommitter`).
    pub fn new(
        catalog: Arc<dyn Catalog>,
        target: Arc<dyn CommitTarget>,
        group: &str,
        writer_id: &str,
        metrics: Metrics,
    ) -> Self {
        Committer {
            catalog,
            target,
            group: group.to_string(),
            writer_id: writer_id.to_string(),
            metrics,
            max_file_age: MaintenanceConfig::default().max_uncommitted_file_age(),
            clock: Arc::new(k2_table::clock::now_ms),
            retention: None,
            housekept: Arc::default(),
            cleanups: Arc::default(),
            written: Arc::default(),
        }
    }

    /// Keep each table's history by `policy` in the commits themselves (end-of-day tags,
    /// expiry of snapshots outside the window, deletion of what only they referenced).
    pub fn with_retention(mut self, policy: retention::Policy) -> Self {
        self.retention = Some(policy);
        self
    }

    /// The clock snapshots are stamped with and ages measured by.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Data files written longer ago than this are written again before a commit
    /// references them: table maintenance deletes unreferenced files only when they are
    /// twice as old, so it never deletes a file this committer is about to commit.
    pub fn with_max_file_age(mut self, age: Duration) -> Self {
        self.max_file_age = age;
        self
    }

    /// Delivers the job's dead letters, then commits each table. Retries transient
    /// failures until they pass.
    pub async fn commit(
        &self,
        id: u64,
        job: CommitJob,
        dead_letters: PendingDeadLetters,
    ) -> Result<JobOutcome, CommitError> {
        let dead_letters = dead_letters.deliver().await.map_err(|e| CommitError {
            table: "the dead-letter topic".to_string(),
            message: k2_common::report::chain(&e),
        })?;
        let tables = self.commit_tables(id, job).await?;
        Ok(JobOutcome {
            id,
            tables,
            dead_letters,
        })
    }

    /// Commits the job's tables (its dead letters already delivered): sequence events
    /// first, then each data table, each with its offsets fenced. Retries transient
    /// failures until they pass.
    pub async fn commit_tables(
        &self,
        id: u64,
        job: CommitJob,
    ) -> Result<Vec<TableOutcome>, CommitError> {
        // Sequence events go first: if the process dies between the two, the data is
        // re-read and its events found again, and those already committed are filtered.
        if !job.sequence_events.is_empty() {
            let plan = EventsPlan {
                batches: &job.sequence_events,
                ends: job
                    .tables
                    .iter()
                    .flat_map(|t| t.partitions.iter().map(|(tp, r)| (tp.clone(), r.end)))
                    .collect(),
            };
            let ident = sequence_events_ident();
            let commit_id = format!("{}-{id}-events", self.writer_id);
            self.append_fenced(&ident, &commit_id, &plan)
                .instrument(tracing::info_span!(
                    "commit",
                    table = ident.name(),
                    job = id
                ))
                .await?;
        }
        let mut tables = Vec::with_capacity(job.tables.len());
        for table_job in job.tables {
            tables.push(self.commit_table(id, table_job).await?);
        }
        Ok(tables)
    }

    async fn commit_table(&self, id: u64, job: TableJob) -> Result<TableOutcome, CommitError> {
        let ident = table_ident(job.data_type);
        let commit_id = format!("{}-{id}", self.writer_id);
        let plan = DataPlan {
            batches: &job.batches,
            partitions: &job.partitions,
        };
        let appended = self
            .append_fenced(&ident, &commit_id, &plan)
            .instrument(tracing::info_span!(
                "commit",
                table = ident.name(),
                job = id
            ))
            .await?;
        let fenced = &appended.planned.fenced;
        let records = appended.planned.records();
        // Only what a snapshot recorded counts as committed.
        let committed = appended.snapshot_id.is_some();
        let recorded = &appended.planned.offsets;
        let partitions = job
            .partitions
            .into_iter()
            .map(|(tp, range)| {
                let outcome = if fenced.contains(&tp) {
                    RangeOutcome::Fenced {
                        recorded: recorded.get(&tp),
                    }
                } else {
                    RangeOutcome::Committed
                };
                (tp, range, outcome)
            })
            .collect();
        Ok(TableOutcome {
            data_type: job.data_type,
            records: if committed { records } else { 0 },
            snapshot_id: appended.snapshot_id,
            partitions,
        })
    }
}

#[cfg(test)]
mod tests;
