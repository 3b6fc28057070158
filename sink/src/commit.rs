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

use arrow::array::AsArray;
use arrow::datatypes::{Int32Type, Int64Type};
use arrow_array::{BooleanArray, RecordBatch};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use iceberg::spec::DataFile;
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::{
    Catalog, ErrorKind, Namespace, NamespaceIdent, TableCommit, TableCreation, TableIdent,
};

use crate::buffer::{CommitJob, PartitionRange, TableJob, without_partitions};
use crate::dead_letters::PendingDeadLetters;
use crate::instrumentation::{Metrics, TableLabels};
use crate::offsets::{
    COMMIT_ID_PROPERTY, GROUP_PROPERTY, OFFSETS_PROPERTY, TableOffsets, TopicPartition,
    VERSION_PROPERTY, WRITER_PROPERTY, commit_landed,
};
use crate::table::{
    KAFKA_OFFSET, KAFKA_PARTITION, KAFKA_TOPIC, SEQUENCE_EVENTS, sequence_events_ident, table_ident,
};
use crate::writer::write_data_files;
use k2_common::topic::DataType;

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
}

impl Committer {
    pub fn new(catalog: Arc<dyn Catalog>, group: &str, writer_id: &str, metrics: Metrics) -> Self {
        Committer {
            catalog,
            group: group.to_string(),
            writer_id: writer_id.to_string(),
            metrics,
        }
    }

    /// Delivers the job's dead letters, then commits each table. Retries transient
    /// failures until they pass.
    pub async fn commit(
        &self,
        id: u64,
        job: CommitJob,
        dead_letters: PendingDeadLetters,
    ) -> Result<JobOutcome, CommitError> {
        let dead_letters = dead_letters.deliver().await;
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
        let mut delays = k2_common::retry::delays();
        let mut retry = |what: &str, e: &iceberg::Error| {
            self.metrics.storage_retries.inc();
            let delay = delays.next().unwrap_or(Duration::from_secs(10));
            tracing::warn!(error = %e, retry_in = ?delay, "{what} failed; retrying");
            delay
        };
        let fatal = |e: iceberg::Error| CommitError {
            table: ident.to_string(),
            message: format!("{e:#}"),
        };
        // Files written for a given set of fenced partitions, reused across attempts.
        let mut written: Option<(BTreeSet<TopicPartition>, Vec<DataFile>)> = None;
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
                    tokio::time::sleep(retry("loading the table", &e)).await;
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
                Some((f, files)) if *f == fenced => files.clone(),
                _ => {
                    let dropped = fenced.iter().cloned().collect();
                    let batches: Vec<_> = job
                        .batches
                        .iter()
                        .filter_map(|b| without_partitions(b, &dropped))
                        .collect();
                    let prefix = format!("{commit_id}-{}", uuid::Uuid::new_v4().simple());
                    let day_partitioned = job.data_type != DataType::ReferenceData;
                    match write_data_files(&table, day_partitioned, &batches, &prefix).await {
                        Ok(files) => {
                            written = Some((fenced.clone(), files.clone()));
                            files
                        }
                        Err(e) if is_fatal(&e) => return Err(fatal(e)),
                        Err(e) => {
                            tokio::time::sleep(retry("writing data files", &e)).await;
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
                    self.metrics.commit(&labels.table, "conflict");
                    tracing::info!(error = %e, "concurrent commit; re-checking offsets");
                }
                Err(e) if is_fatal(&e) => return Err(fatal(e)),
                Err(e) => {
                    self.metrics.commit(&labels.table, "error");
                    tokio::time::sleep(retry("the catalog commit", &e)).await;
                }
            }
        }
    }

    /// Appends sequence events, skipping those the table already holds: per partition,
    /// events at offsets below the recorded one were committed by an earlier job (or an
    /// earlier owner) and are final.
    #[tracing::instrument(skip_all, fields(table = SEQUENCE_EVENTS, job = id))]
    async fn commit_sequence_events(
        &self,
        id: u64,
        batches: &[RecordBatch],
        ranges: &BTreeMap<TopicPartition, i64>,
    ) -> Result<(), CommitError> {
        let ident = sequence_events_ident();
        let commit_id = format!("{}-{id}-events", self.writer_id);
        let mut delays = k2_common::retry::delays();
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
                    self.metrics.storage_retries.inc();
                    tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(10))).await;
                    tracing::warn!(error = %e, "loading sequence_events failed; retrying");
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
            let fresh: Vec<RecordBatch> = batches
                .iter()
                .filter_map(|b| not_yet_recorded(b, &recorded))
                .collect();
            if fresh.is_empty() {
                return Ok(());
            }
            let prefix = format!("{commit_id}-{}", uuid::Uuid::new_v4().simple());
            let files = match write_data_files(&table, true, &fresh, &prefix).await {
                Ok(f) => f,
                Err(e) if is_fatal(&e) => return Err(fatal(e)),
                Err(e) => {
                    self.metrics.storage_retries.inc();
                    tracing::warn!(error = %e, "writing sequence events failed; retrying");
                    tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(10))).await;
                    continue;
                }
            };
            let offsets = recorded.merged(ranges.iter().filter_map(|(tp, end)| {
                (recorded.get(tp).is_none_or(|r| r < *end)).then_some((tp, *end))
            }));
            match self.append(&table, files, &offsets, &commit_id).await {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == ErrorKind::CatalogCommitConflicts => {}
                Err(e) if is_fatal(&e) => return Err(fatal(e)),
                Err(e) => {
                    self.metrics.storage_retries.inc();
                    tracing::warn!(error = %e, "committing sequence events failed; retrying");
                    tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(10))).await;
                }
            }
        }
    }

    /// Appends `files` to `table` with the offsets and K2's properties in the snapshot
    /// summary, pinned to the snapshot `table` was loaded at (a concurrent commit makes it
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
        let pinned = PinnedCatalog {
            inner: self.catalog.clone(),
            table: table.clone(),
        };
        tx.commit(&pinned).await
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
        let dropped: std::collections::HashSet<TopicPartition> = fenced.iter().cloned().collect();
        let records: usize = job
            .batches
            .iter()
            .filter_map(|b| without_partitions(b, &dropped))
            .map(|b| b.num_rows())
            .sum();
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
            self.metrics
                .last_commit_timestamp
                .get_or_create(labels)
                .set(chrono::Utc::now().timestamp());
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

/// The rows of `batch` whose `(kafka_topic, kafka_partition, kafka_offset)` is at or past
/// the offset `recorded` holds for their partition.
fn not_yet_recorded(batch: &RecordBatch, recorded: &TableOffsets) -> Option<RecordBatch> {
    let topics = batch.column_by_name(KAFKA_TOPIC)?.as_string_opt::<i32>()?;
    let partitions = batch
        .column_by_name(KAFKA_PARTITION)?
        .as_primitive_opt::<Int32Type>()?;
    let offsets = batch
        .column_by_name(KAFKA_OFFSET)?
        .as_primitive_opt::<Int64Type>()?;
    let keep: BooleanArray = (0..batch.num_rows())
        .map(|i| {
            let tp = TopicPartition::new(topics.value(i), partitions.value(i));
            Some(recorded.get(&tp).is_none_or(|r| offsets.value(i) >= r))
        })
        .collect();
    match keep.true_count() {
        0 => None,
        n if n == batch.num_rows() => Some(batch.clone()),
        _ => arrow::compute::filter_record_batch(batch, &keep).ok(),
    }
}

/// Errors retrying cannot fix: bad data or schema, a missing table, unsupported features.
fn is_fatal(e: &iceberg::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::DataInvalid
            | ErrorKind::FeatureUnsupported
            | ErrorKind::PreconditionFailed
            | ErrorKind::TableNotFound
            | ErrorKind::NamespaceNotFound
    )
}

/// A catalog whose `load_table` returns the table the offsets were checked against.
///
/// iceberg-rust's `Transaction::commit` reloads the table and re-applies the append onto
/// whatever is current, which would commit stale offsets on top of another writer's.
/// Pinned, the append keeps its `RefSnapshotIdMatch` requirement on the checked snapshot,
/// so the real catalog rejects it as a conflict if anything was committed in between.
#[derive(Debug)]
struct PinnedCatalog {
    inner: Arc<dyn Catalog>,
    table: Table,
}

#[async_trait]
impl Catalog for PinnedCatalog {
    async fn list_namespaces(
        &self,
        parent: Option<&NamespaceIdent>,
    ) -> iceberg::Result<Vec<NamespaceIdent>> {
        self.inner.list_namespaces(parent).await
    }

    async fn create_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> iceberg::Result<Namespace> {
        self.inner.create_namespace(namespace, properties).await
    }

    async fn get_namespace(&self, namespace: &NamespaceIdent) -> iceberg::Result<Namespace> {
        self.inner.get_namespace(namespace).await
    }

    async fn namespace_exists(&self, namespace: &NamespaceIdent) -> iceberg::Result<bool> {
        self.inner.namespace_exists(namespace).await
    }

    async fn update_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> iceberg::Result<()> {
        self.inner.update_namespace(namespace, properties).await
    }

    async fn drop_namespace(&self, namespace: &NamespaceIdent) -> iceberg::Result<()> {
        self.inner.drop_namespace(namespace).await
    }

    async fn list_tables(&self, namespace: &NamespaceIdent) -> iceberg::Result<Vec<TableIdent>> {
        self.inner.list_tables(namespace).await
    }

    async fn create_table(
        &self,
        namespace: &NamespaceIdent,
        creation: TableCreation,
    ) -> iceberg::Result<Table> {
        self.inner.create_table(namespace, creation).await
    }

    async fn load_table(&self, table: &TableIdent) -> iceberg::Result<Table> {
        if table == self.table.identifier() {
            Ok(self.table.clone())
        } else {
            self.inner.load_table(table).await
        }
    }

    async fn drop_table(&self, table: &TableIdent) -> iceberg::Result<()> {
        self.inner.drop_table(table).await
    }

    async fn purge_table(&self, table: &TableIdent) -> iceberg::Result<()> {
        self.inner.purge_table(table).await
    }

    async fn table_exists(&self, table: &TableIdent) -> iceberg::Result<bool> {
        self.inner.table_exists(table).await
    }

    async fn rename_table(&self, src: &TableIdent, dest: &TableIdent) -> iceberg::Result<()> {
        self.inner.rename_table(src, dest).await
    }

    async fn register_table(
        &self,
        table: &TableIdent,
        metadata_location: String,
    ) -> iceberg::Result<Table> {
        self.inner.register_table(table, metadata_location).await
    }

    async fn update_table(&self, commit: TableCommit) -> iceberg::Result<Table> {
        self.inner.update_table(commit).await
    }
}
