//! Commit: one Iceberg transaction per table per cycle, recording the Kafka offsets of the
//! rows it adds, and only if those offsets continue exactly from what the table recorded.
//!
//! The protocol (docs/exactly-once.md): load the table; every partition of the job whose
//! recorded offset is not the one this writer expected was advanced by another writer, so
//! its rows are dropped and the partition is reported back for a re-seek; write the rest;
//! append with the merged offsets in the snapshot summary. The append is committed
//! through [`PinnedCatalog`], so iceberg-rust cannot rebase it onto a newer snapshot: a
//! concurrent commit surfaces as a conflict and the loop here re-checks offsets.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use iceberg::spec::DataFile;
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::{Catalog, ErrorKind};

use crate::dead_letters::PendingDeadLetters;
use crate::instrumentation::{Metrics, Operation, TableLabels};
use crate::job::{
    CommitJob, LineageError, PartitionRange, TableJob, batches_without_partitions, not_yet_recorded,
};
use crate::offsets::{
    COMMIT_ID_PROPERTY, GROUP_PROPERTY, OFFSETS_PROPERTY, TableOffsets, TopicPartition,
    VERSION_PROPERTY, WRITER_PROPERTY, commit_landed,
};
use crate::pinned_catalog::PinnedCatalog;
use crate::table::{sequence_events_ident, table_ident};
use crate::writer::write_data_files;
use k2_common::config::MaintenanceConfig;
use k2_common::data_type::{DataType, SEQUENCE_EVENTS_TABLE};
use k2_common::retry::Backoff;

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

/// The committer as the poll loop sees it: a task on the runtime that commits one job at
/// a time and hands results back without blocking the poll thread.
pub struct CommitTask {
    jobs: tokio::sync::mpsc::UnboundedSender<(u64, CommitJob, PendingDeadLetters)>,
    results: std::sync::mpsc::Receiver<Result<JobOutcome, CommitError>>,
    in_flight: Option<u64>,
    next_job: u64,
}

/// The committer task is gone (it ended after an error already reported, or the runtime
/// shut down).
#[derive(Debug, thiserror::Error)]
#[error("the committer task ended")]
pub struct CommitTaskEnded;

impl CommitTask {
    pub fn spawn(committer: Committer, runtime: &tokio::runtime::Handle) -> Self {
        let (jobs_tx, mut jobs_rx) = tokio::sync::mpsc::unbounded_channel();
        let (results_tx, results_rx) = std::sync::mpsc::channel();
        runtime.spawn(async move {
            while let Some((id, job, dead_letters)) = jobs_rx.recv().await {
                let result = committer.commit(id, job, dead_letters).await;
                if results_tx.send(result).is_err() {
                    break;
                }
            }
        });
        CommitTask {
            jobs: jobs_tx,
            results: results_rx,
            in_flight: None,
            next_job: 1,
        }
    }

    /// True while a job is being committed.
    pub fn is_busy(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Hands a job to the committer; returns its id. Only one job is in flight at a time.
    pub fn submit(
        &mut self,
        job: CommitJob,
        dead_letters: PendingDeadLetters,
    ) -> Result<u64, CommitTaskEnded> {
        debug_assert!(self.in_flight.is_none(), "one job in flight at a time");
        let id = self.next_job;
        self.next_job += 1;
        self.jobs
            .send((id, job, dead_letters))
            .map_err(|_| CommitTaskEnded)?;
        self.in_flight = Some(id);
        Ok(id)
    }

    /// The result of the job in flight, if it has finished.
    pub fn try_result(
        &mut self,
    ) -> Result<Option<Result<JobOutcome, CommitError>>, CommitTaskEnded> {
        match self.results.try_recv() {
            Ok(r) => {
                self.in_flight = None;
                Ok(Some(r))
            }
            Err(std::sync::mpsc::TryRecvError::Empty) => Ok(None),
            Err(std::sync::mpsc::TryRecvError::Disconnected) => Err(CommitTaskEnded),
        }
    }
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
            let ranges: BTreeMap<TopicPartition, i64> = job
                .tables
                .iter()
                .flat_map(|t| t.partitions.iter().map(|(tp, r)| (tp.clone(), r.end)))
                .collect();
            self.commit_sequence_events(id, &job.sequence_events, &ranges)
                .await?;
        }
        let mut tables = Vec::with_capacity(job.tables.len());
        for table_job in job.tables {
            tables.push(self.commit_table(id, table_job).await?);
        }
        Ok(tables)
    }

    #[tracing::instrument(skip_all, fields(table = job.data_type.table_name(), job = id, records = job.records))]
    async fn commit_table(&self, id: u64, job: TableJob) -> Result<TableOutcome, CommitError> {
        let ident = table_ident(job.data_type);
        let labels = TableLabels {
            table: job.data_type.table_name().to_string(),
        };
        let commit_id = format!("{}-{id}", self.writer_id);
        let started = Instant::now();
        let mut retrying = Retrying::new(&self.metrics, ident.to_string(), TROUBLE_AFTER);
        let fatal = |e: iceberg::Error| CommitError {
            table: ident.to_string(),
            message: format!("{e:#}"),
        };
        // Files written for a given set of fenced partitions, reused across attempts while
        // they are young enough to be safe from orphan cleanup.
        let mut written: Option<(BTreeSet<TopicPartition>, Instant, Vec<DataFile>)> = None;
        // The snapshot current before the first attempt: a later snapshot carrying our
        // commit id means an attempt landed even though its reply was lost.
        let mut base_snapshot: Option<Option<i64>> = None;
        let mut fenced: BTreeSet<TopicPartition> = BTreeSet::new();
        let mut recorded = TableOffsets::default();
        loop {
            let table = match self.catalog.load_table(&ident).await {
                Ok(t) => t,
                Err(e) if is_fatal(&e) => return Err(fatal(e)),
                Err(e) => {
                    retrying
                        .again(Operation::CatalogLoad, "loading the table", &e)
                        .await;
                    continue;
                }
            };
            let metadata = table.metadata();
            match base_snapshot {
                Some(base) if commit_landed(metadata, base, &commit_id) => {
                    tracing::info!("an earlier attempt landed; not committing again");
                    let snapshot_id = metadata.current_snapshot().map(|s| s.snapshot_id());
                    return Ok(self.finish(job, &fenced, &recorded, snapshot_id, started, &labels));
                }
                Some(_) => {}
                None => base_snapshot = Some(metadata.current_snapshot().map(|s| s.snapshot_id())),
            }
            recorded = TableOffsets::from_metadata(metadata).map_err(|e| CommitError {
                table: ident.to_string(),
                message: e.to_string(),
            })?;
            fenced = job
                .partitions
                .iter()
                .filter(|(tp, r)| recorded.get(tp) != r.expected_recorded)
                .map(|(tp, _)| tp.clone())
                .collect();
            for tp in &fenced {
                tracing::warn!(
                    partition = %tp,
                    expected = ?job.partitions[tp].expected_recorded,
                    recorded = ?recorded.get(tp),
                    "another writer advanced this partition; dropping its rows and re-reading"
                );
            }
            if fenced.len() == job.partitions.len() {
                return Ok(self.finish(job, &fenced, &recorded, None, started, &labels));
            }
            let files = match &written {
                Some((f, at, files)) if *f == fenced && at.elapsed() < self.max_file_age => {
                    files.clone()
                }
                _ => {
                    let dropped = fenced.iter().cloned().collect();
                    let batches = batches_without_partitions(&job.batches, &dropped)
                        .map_err(|e| lineage(&ident, e))?;
                    let prefix = format!("{commit_id}-{}", uuid::Uuid::new_v4().simple());
                    let day_partitioned = job.data_type.describe().day_partitioned;
                    let at = Instant::now();
                    match write_data_files(&table, day_partitioned, &batches, &prefix).await {
                        Ok(files) => {
                            written = Some((fenced.clone(), at, files.clone()));
                            files
                        }
                        Err(e) if is_fatal(&e) => return Err(fatal(e)),
                        Err(e) => {
                            retrying
                                .again(Operation::DataFileWrite, "writing data files", &e)
                                .await;
                            continue;
                        }
                    }
                }
            };
            let offsets = recorded.merged(
                job.partitions
                    .iter()
                    .filter(|(tp, _)| !fenced.contains(*tp))
                    .map(|(tp, r)| (tp, r.end)),
            );
            let file_count = files.len() as u64;
            let file_bytes: u64 = files.iter().map(|f| f.file_size_in_bytes()).sum();
            match self.append(&table, files, &offsets, &commit_id).await {
                Ok(committed) => {
                    let snapshot_id = committed
                        .metadata()
                        .current_snapshot()
                        .map(|s| s.snapshot_id());
                    self.metrics
                        .data_files
                        .get_or_create(&labels)
                        .inc_by(file_count);
                    self.metrics
                        .data_file_bytes
                        .get_or_create(&labels)
                        .inc_by(file_bytes);
                    return Ok(self.finish(job, &fenced, &recorded, snapshot_id, started, &labels));
                }
                Err(e) if e.kind() == ErrorKind::CatalogCommitConflicts => {
                    // Another writer committed first. Back off (jittered) before
                    // re-checking, so two committers do not keep colliding in step.
                    self.metrics.commit(&labels.table, "conflict");
                    retrying
                        .backoff
                        .wait(
                            "the catalog commit (concurrent commit; re-checking offsets)",
                            &e,
                        )
                        .await;
                }
                Err(e) if is_fatal(&e) => return Err(fatal(e)),
                Err(e) => {
                    self.metrics.commit(&labels.table, "error");
                    retrying
                        .again(Operation::Commit, "the catalog commit", &e)
                        .await;
                }
            }
        }
    }

    /// Appends sequence events, skipping those the table already holds: per partition,
    /// events at offsets below the recorded one were committed by an earlier job (or an
    /// earlier owner) and are final.
    #[tracing::instrument(skip_all, fields(table = SEQUENCE_EVENTS_TABLE, job = id))]
    async fn commit_sequence_events(
        &self,
        id: u64,
        batches: &[RecordBatch],
        ranges: &BTreeMap<TopicPartition, i64>,
    ) -> Result<(), CommitError> {
        let ident = sequence_events_ident();
        let commit_id = format!("{}-{id}-events", self.writer_id);
        let mut retrying = Retrying::new(&self.metrics, ident.to_string(), TROUBLE_AFTER);
        let fatal = |e: iceberg::Error| CommitError {
            table: ident.to_string(),
            message: format!("{e:#}"),
        };
        let mut base_snapshot: Option<Option<i64>> = None;
        loop {
            let table = match self.catalog.load_table(&ident).await {
                Ok(t) => t,
                Err(e) if is_fatal(&e) => return Err(fatal(e)),
                Err(e) => {
                    retrying
                        .again(Operation::CatalogLoad, "loading sequence_events", &e)
                        .await;
                    continue;
                }
            };
            let metadata = table.metadata();
            match base_snapshot {
                Some(base) if commit_landed(metadata, base, &commit_id) => return Ok(()),
                Some(_) => {}
                None => base_snapshot = Some(metadata.current_snapshot().map(|s| s.snapshot_id())),
            }
            let recorded = TableOffsets::from_metadata(metadata).map_err(|e| CommitError {
                table: ident.to_string(),
                message: e.to_string(),
            })?;
            let mut fresh: Vec<RecordBatch> = Vec::with_capacity(batches.len());
            for b in batches {
                fresh.extend(not_yet_recorded(b, &recorded).map_err(|e| lineage(&ident, e))?);
            }
            if fresh.is_empty() {
                return Ok(());
            }
            let prefix = format!("{commit_id}-{}", uuid::Uuid::new_v4().simple());
            let files = match write_data_files(&table, true, &fresh, &prefix).await {
                Ok(f) => f,
                Err(e) if is_fatal(&e) => return Err(fatal(e)),
                Err(e) => {
                    retrying
                        .again(Operation::DataFileWrite, "writing sequence events", &e)
                        .await;
                    continue;
                }
            };
            let offsets = recorded.merged(ranges.iter().filter_map(|(tp, end)| {
                (recorded.get(tp).is_none_or(|r| r < *end)).then_some((tp, *end))
            }));
            match self.append(&table, files, &offsets, &commit_id).await {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == ErrorKind::CatalogCommitConflicts => {
                    retrying
                        .backoff
                        .wait("committing sequence events (concurrent commit)", &e)
                        .await;
                }
                Err(e) if is_fatal(&e) => return Err(fatal(e)),
                Err(e) => {
                    retrying
                        .again(Operation::Commit, "committing sequence events", &e)
                        .await;
                }
            }
        }
    }

    /// Appends `files` to `table` with the offsets and K2's properties in the snapshot
    /// summary and the offsets and commit id in the table properties, pinned to the snapshot `table` was loaded at (a concurrent commit makes it
    /// fail with `CatalogCommitConflicts`).
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

    fn finish(
        &self,
        job: TableJob,
        fenced: &BTreeSet<TopicPartition>,
        recorded: &TableOffsets,
        snapshot_id: Option<i64>,
        started: Instant,
        labels: &TableLabels,
    ) -> TableOutcome {
        // Rows of fenced partitions were not written (the committer filtered them before
        // writing, so their lineage is known to be readable).
        let dropped: std::collections::HashSet<TopicPartition> = fenced.iter().cloned().collect();
        let written = batches_without_partitions(&job.batches, &dropped).unwrap_or_default();
        let records: usize = written.iter().map(RecordBatch::num_rows).sum();
        if snapshot_id.is_some() {
            self.metrics.data_committed(labels, &written);
        }
        let partitions = job
            .partitions
            .into_iter()
            .map(|(tp, range)| {
                let outcome = if fenced.contains(&tp) {
                    self.metrics.fenced_partitions.inc();
                    RangeOutcome::Fenced {
                        recorded: recorded.get(&tp),
                    }
                } else {
                    RangeOutcome::Committed
                };
                (tp, range, outcome)
            })
            .collect();
        if snapshot_id.is_some() {
            self.metrics.commit(&labels.table, "ok");
            self.metrics
                .records_written
                .get_or_create(labels)
                .inc_by(records as u64);
            self.metrics
                .commit_seconds
                .get_or_create(labels)
                .observe(started.elapsed().as_secs_f64());
            self.metrics.committed(labels);
            tracing::info!(
                snapshot_id,
                records,
                seconds = started.elapsed().as_secs_f64(),
                "committed"
            );
        }
        TableOutcome {
            data_type: job.data_type,
            records: if snapshot_id.is_some() { records } else { 0 },
            snapshot_id,
            partitions,
        }
    }
}

fn lineage(table: &iceberg::TableIdent, e: LineageError) -> CommitError {
    CommitError {
        table: table.to_string(),
        message: e.to_string(),
    }
}

/// Errors retrying cannot fix: bad data or schema, a missing table, unsupported features.
pub(crate) fn is_fatal(e: &iceberg::Error) -> bool {
    !k2_common::catalog::is_transient(e)
}

/// A commit's retries of one table: counted, waited out with backoff, and reported as
/// trouble (`/readyz` false, with the error) once they have gone on for
/// [`TROUBLE_AFTER`]; the report ends with the commit, however it ends.
struct Retrying<'a> {
    metrics: &'a Metrics,
    table: String,
    backoff: Backoff,
    since: Option<Instant>,
    /// How long failures may go on before they are trouble.
    budget: Duration,
    /// The episode has outlasted its budget (counted once as exhausted).
    exhausted: bool,
}

/// How long a table's storage or catalog may keep failing before the sink says it is not
/// ready (the outage is real, not a blip).
const TROUBLE_AFTER: Duration = Duration::from_secs(30);

impl<'a> Retrying<'a> {
    fn new(metrics: &'a Metrics, table: String, budget: Duration) -> Self {
        Retrying {
            metrics,
            table,
            backoff: Backoff::new(),
            since: None,
            budget,
            exhausted: false,
        }
    }

    async fn again(&mut self, op: Operation, what: &str, e: &iceberg::Error) {
        self.metrics.retried(op);
        let since = *self.since.get_or_insert_with(Instant::now);
        if since.elapsed() >= self.budget {
            if !self.exhausted {
                self.exhausted = true;
                self.metrics.retries_exhausted(op);
            }
            self.metrics.health().trouble(
                &format!("storage ({})", self.table),
                Some(format!(
                    "{what} has failed for {:.0}s: {e}",
                    since.elapsed().as_secs_f64()
                )),
            );
        }
        self.backoff.wait(what, e).await;
    }
}

impl Drop for Retrying<'_> {
    fn drop(&mut self) {
        if self.since.is_some() {
            self.metrics
                .health()
                .trouble(&format!("storage ({})", self.table), None);
        }
    }
}

#[cfg(test)]
mod tests {
    //! The protocol's hard paths, made to happen on purpose over a real SQLite catalog: a
    //! commit applied whose acknowledgement is lost, a competing commit landing between the
    //! offset check and the commit, and two committers racing over the same range.
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use iceberg::TableCommit;

    use super::*;

    use crate::offsets::PartitionMap;
    use crate::pinned_catalog::wrapping_catalog;
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
                crate::job::PartitionState {
                    expected_recorded: Some(first),
                    ..Default::default()
                },
            );
        }
        stages.buffer.seal(|_| DataType::Trades, &mut partitions)
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

    #[tokio::test]
    async fn retries_past_their_budget_are_counted_once_and_make_the_sink_unready() {
        use k2_common::health::Probe;
        let metrics = Metrics::new();
        let health = metrics.health().clone();
        health.beat();
        health.joined();
        let e = iceberg::Error::new(ErrorKind::Unexpected, "connection refused");
        {
            let mut r = Retrying::new(&metrics, "market_data.trades".into(), Duration::ZERO);
            r.again(Operation::Commit, "the catalog commit", &e).await;
            r.again(Operation::Commit, "the catalog commit", &e).await;
            let reason = health.ready().unwrap_err();
            assert!(
                reason.contains("storage (market_data.trades): the catalog commit has failed")
                    && reason.contains("connection refused"),
                "{reason}"
            );
        }
        assert_eq!(health.ready(), Ok(()), "the episode is over");
        let text = metrics.encode();
        assert!(
            text.contains("k2_retries_total{operation=\"commit\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("k2_retries_exhausted_total{operation=\"commit\"} 1"),
            "{text}"
        );

        // Within the budget: counted, not trouble.
        let mut r = Retrying::new(&metrics, "market_data.quotes".into(), TROUBLE_AFTER);
        r.again(Operation::CatalogLoad, "loading the table", &e)
            .await;
        assert_eq!(health.ready(), Ok(()));
    }
}
