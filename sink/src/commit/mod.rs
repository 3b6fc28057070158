//! Commit: one Iceberg append per table per cycle, recording the Kafka offsets of the rows
//! it adds, and only if those offsets continue exactly from what the table recorded.
//!
//! The protocol (docs/exactly-once.md): every table of a job — the data tables and
//! `sequence_events` alike — goes through the one fenced append loop ([`fenced`]), fed with
//! a plan of what the job asks of that table ([`plan`]). The append is committed through
//! [`pinned_catalog::PinnedCatalog`], so iceberg-rust cannot rebase it onto a newer
//! snapshot: a concurrent commit surfaces as a conflict and the loop re-checks offsets.
//! Retries are counted and turned into readiness trouble by [`retrying`]; the poll loop
//! hands jobs over through [`task`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use iceberg::Catalog;
use iceberg::spec::DataFile;
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use tracing::Instrument;

use k2_common::config::MaintenanceConfig;
use k2_common::data_type::DataType;
use k2_table::layout::{sequence_events_ident, table_ident};
use k2_table::offsets::{
    COMMIT_ID_PROPERTY, GROUP_PROPERTY, OFFSETS_PROPERTY, TableOffsets, TopicPartition,
    VERSION_PROPERTY, WRITER_PROPERTY,
};

use crate::dead_letters::PendingDeadLetters;
use crate::instrumentation::Metrics;
use crate::job::{CommitJob, PartitionRange, TableJob};
use pinned_catalog::PinnedCatalog;
use plan::{DataPlan, EventsPlan};

mod fenced;
pub(crate) mod pinned_catalog;
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

/// Commits jobs; one per sink process.
#[derive(Clone)]
pub struct Committer {
    catalog: Arc<dyn Catalog>,
    group: String,
    writer_id: String,
    metrics: Metrics,
    max_file_age: Duration,
}

impl Committer {
    pub fn new(catalog: Arc<dyn Catalog>, group: &str, writer_id: &str, metrics: Metrics) -> Self {
        Committer {
            catalog,
            group: group.to_string(),
            writer_id: writer_id.to_string(),
            metrics,
            max_file_age: MaintenanceConfig::default().max_uncommitted_file_age(),
        }
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
            message: e.to_string(),
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

    /// Appends `files` to `table` with the offsets and K2's properties in the snapshot
    /// summary and the offsets and commit id in the table properties, pinned to the
    /// snapshot `table` was loaded at (a concurrent commit makes it fail with
    /// `CatalogCommitConflicts`).
    async fn append(
        &self,
        table: &Table,
        files: Vec<DataFile>,
        offsets: &TableOffsets,
        commit_id: &str,
    ) -> iceberg::Result<Table> {
        let tx = Transaction::new(table);
        let append = tx
            .fast_append()
            // File names are unique per attempt and a landed attempt is detected by its
            // commit id, so the O(table) duplicate-file scan buys nothing.
            .with_check_duplicate(false)
            .add_data_files(files)
            .set_snapshot_properties(HashMap::from([
                (OFFSETS_PROPERTY.to_string(), offsets.to_json()),
                (GROUP_PROPERTY.to_string(), self.group.clone()),
                (WRITER_PROPERTY.to_string(), self.writer_id.clone()),
                (COMMIT_ID_PROPERTY.to_string(), commit_id.to_string()),
                (VERSION_PROPERTY.to_string(), k2_common::VERSION.to_string()),
            ]));
        let tx = append.apply(tx)?;
        // The same offsets as a table property, in the same metadata update: properties
        // outlive snapshots, so expiring K2's snapshots cannot make the offsets vanish.
        let tx = tx
            .update_table_properties()
            .set(OFFSETS_PROPERTY.to_string(), offsets.to_json())
            .set(COMMIT_ID_PROPERTY.to_string(), commit_id.to_string())
            .apply(tx)?;
        tx.commit(&PinnedCatalog::new(self.catalog.clone(), table.clone()))
            .await
    }
}

#[cfg(test)]
mod tests {
    //! The protocol's hard paths, made to happen on purpose over a real SQLite catalog: a
    //! commit applied whose acknowledgement is lost, a competing commit landing between the
    //! offset check and the commit, and two committers racing over the same range.
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use iceberg::{ErrorKind, TableCommit};

    use super::*;

    use crate::commit::pinned_catalog::wrapping_catalog;
    use crate::job::PartitionMap;
    use crate::partition::{PartitionState, Position, Reading};
    use crate::stages::test_support::{TOPIC, catalog, push_from, stages, trade};

    /// The real catalog, with one fault injected into the next commit.
    struct Faulty {
        inner: Arc<dyn Catalog>,
        /// Apply the next commit, then answer as if the connection dropped.
        lose_ack: AtomicBool,
        /// Right after the next table load, let this competitor commit its job: the loaded
        /// table is then stale by one snapshot.
        competitor: Mutex<Option<(Committer, CommitJob)>>,
        /// Refuse this many commits (the catalog unreachable) before applying any.
        refuse: std::sync::atomic::AtomicUsize,
    }

    impl std::fmt::Debug for Faulty {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Faulty")
        }
    }

    wrapping_catalog!(Faulty {
        async fn load_table(&self, table: &iceberg::TableIdent) -> iceberg::Result<Table> {
            let loaded = self.inner.load_table(table).await?;
            let competitor = self.competitor.lock().unwrap().take();
            if let Some((committer, job)) = competitor {
                committer.commit_tables(99, job).await.unwrap();
            }
            Ok(loaded)
        }

        async fn update_table(&self, commit: TableCommit) -> iceberg::Result<Table> {
            let refuse = &self.refuse;
            if refuse.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
                return Err(iceberg::Error::new(
                    ErrorKind::Unexpected,
                    "catalog unreachable",
                ));
            }
            let table = self.inner.update_table(commit).await?;
            if self.lose_ack.swap(false, Ordering::SeqCst) {
                return Err(iceberg::Error::new(
                    ErrorKind::Unexpected,
                    "connection reset after the catalog applied the commit",
                ));
            }
            Ok(table)
        }
    });

    fn faulty(inner: Arc<dyn Catalog>) -> Arc<Faulty> {
        Arc::new(Faulty {
            inner,
            lose_ack: AtomicBool::new(false),
            competitor: Mutex::new(None),
            refuse: Default::default(),
        })
    }

    fn committer(catalog: Arc<dyn Catalog>, writer: &str) -> Committer {
        Committer::new(catalog, "group", writer, Metrics::new())
    }

    /// A job of `n` trades at offsets `first`.. of partition 0, expecting the table to have
    /// recorded `first` (`None` for 0: nothing yet).
    fn job(
        catalog: &Arc<dyn Catalog>,
        rt: &tokio::runtime::Runtime,
        first: i64,
        n: i64,
    ) -> CommitJob {
        let mut stages = stages(catalog.clone(), rt);
        let values: Vec<Option<Vec<u8>>> = (first..first + n)
            .map(|seq| Some(trade("BHP", seq + 1, 40)))
            .collect();
        assert!(push_from(&mut stages, DataType::Trades, first, &values).is_empty());
        let mut partitions = PartitionMap::default();
        if first > 0 {
            partitions.insert(
                TopicPartition::new(TOPIC, 0),
                PartitionState::Reading(Reading {
                    epoch: 1,
                    expected_recorded: Some(first),
                    position: Position::Next(first),
                }),
            );
        }
        stages.buffer.seal(&mut partitions)
    }

    /// (data snapshots, total records, recorded offset of partition 0) of the trades table.
    fn table_state(
        catalog: &Arc<dyn Catalog>,
        rt: &tokio::runtime::Runtime,
    ) -> (usize, i64, Option<i64>) {
        let table = rt
            .block_on(catalog.load_table(&table_ident(DataType::Trades)))
            .unwrap();
        let m = table.metadata();
        let total = m.current_snapshot().map_or(0, |s| {
            s.summary().additional_properties["total-records"]
                .parse()
                .unwrap()
        });
        let recorded = TableOffsets::from_metadata(m)
            .unwrap()
            .get(&TopicPartition::new(TOPIC, 0));
        (m.snapshots().count(), total, recorded)
    }

    fn outcome(tables: &[TableOutcome]) -> &RangeOutcome {
        &tables[0].partitions[0].2
    }

    #[test]
    fn a_commit_whose_acknowledgement_was_lost_is_recognised_not_repeated() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let real = catalog(dir.path(), &rt);
        let wrapped = faulty(real.clone());
        wrapped.lose_ack.store(true, Ordering::SeqCst);
        let tables = rt
            .block_on(committer(wrapped.clone(), "a").commit_tables(1, job(&real, &rt, 0, 6)))
            .unwrap();
        assert!(!wrapped.lose_ack.load(Ordering::SeqCst), "the fault fired");
        assert_eq!(outcome(&tables), &RangeOutcome::Committed);
        assert_eq!(
            table_state(&real, &rt),
            (1, 6, Some(6)),
            "one snapshot, six rows"
        );
        // The next job follows on from the landed one.
        let tables = rt
            .block_on(committer(wrapped, "a").commit_tables(2, job(&real, &rt, 6, 4)))
            .unwrap();
        assert_eq!(outcome(&tables), &RangeOutcome::Committed);
        assert_eq!(table_state(&real, &rt), (2, 10, Some(10)));
    }

    #[test]
    fn a_competing_commit_between_check_and_commit_fences_the_partition() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let real = catalog(dir.path(), &rt);
        let wrapped = faulty(real.clone());
        // Another writer commits offsets 0..4 right after this committer loaded the table
        // to check its offsets (nothing recorded). Unpinned, iceberg-rust would reload and
        // re-apply the append on top of it: ten rows, four of them twice.
        *wrapped.competitor.lock().unwrap() =
            Some((committer(real.clone(), "b"), job(&real, &rt, 0, 4)));
        let tables = rt
            .block_on(committer(wrapped.clone(), "a").commit_tables(1, job(&real, &rt, 0, 6)))
            .unwrap();
        assert!(
            wrapped.competitor.lock().unwrap().is_none(),
            "the competitor ran"
        );
        assert_eq!(
            outcome(&tables),
            &RangeOutcome::Fenced { recorded: Some(4) }
        );
        assert_eq!(tables[0].records, 0);
        assert_eq!(
            table_state(&real, &rt),
            (1, 4, Some(4)),
            "only the competitor's rows"
        );
    }

    #[test]
    fn two_committers_over_the_same_range_land_it_once_and_the_other_is_fenced() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let real = catalog(dir.path(), &rt);
        let (a, b) = (committer(real.clone(), "a"), committer(real.clone(), "b"));
        let (ja, jb) = (job(&real, &rt, 0, 6), job(&real, &rt, 0, 6));
        let (ra, rb) =
            rt.block_on(async { tokio::join!(a.commit_tables(1, ja), b.commit_tables(1, jb)) });
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        let mut outcomes = [outcome(&ra).clone(), outcome(&rb).clone()];
        outcomes.sort_by_key(|o| matches!(o, RangeOutcome::Fenced { .. }));
        assert_eq!(
            outcomes,
            [
                RangeOutcome::Committed,
                RangeOutcome::Fenced { recorded: Some(6) }
            ]
        );
        assert_eq!(table_state(&real, &rt), (1, 6, Some(6)));
    }

    /// Parquet files under `dir`, at any depth.
    fn parquet_files(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| {
                let p = e.path();
                if p.is_dir() {
                    parquet_files(&p)
                } else {
                    usize::from(p.extension().is_some_and(|x| x == "parquet"))
                }
            })
            .sum()
    }

    #[test]
    fn files_too_old_for_orphan_cleanup_are_written_again_before_the_commit() {
        for (max_age, written) in [(Duration::from_secs(3600), 1), (Duration::ZERO, 2)] {
            let dir = tempfile::tempdir().unwrap();
            let rt = tokio::runtime::Runtime::new().unwrap();
            let real = catalog(dir.path(), &rt);
            let wrapped = faulty(real.clone());
            // The first commit fails; the retry reuses its files only while they are young.
            wrapped.refuse.store(1, Ordering::SeqCst);
            let committer = committer(wrapped.clone(), "a").with_max_file_age(max_age);
            let tables = rt
                .block_on(committer.commit_tables(1, job(&real, &rt, 0, 6)))
                .unwrap();
            assert_eq!(outcome(&tables), &RangeOutcome::Committed);
            assert_eq!(table_state(&real, &rt), (1, 6, Some(6)));
            assert_eq!(parquet_files(dir.path()), written, "max age {max_age:?}");
        }
    }
}
