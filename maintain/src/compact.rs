//! Compaction of closed day partitions: the many small files the sink writes for an
//! (exchange, day) become a few large ones sorted by `(symbol, exchange_timestamp)`, in one
//! atomic replace snapshot per partition ([`k2_table::stage::replace`]). Every row is kept as it was,
//! lineage columns included; a read of any snapshot before or after sees the same rows.
//!
//! A partition is closed once `maintenance.compact_after` has passed since the end of its
//! (UTC) day. Its live files are packed into groups of about `maintenance.target_file_size`
//! (files already that large are left alone), and each group is read, sorted and written
//! again — one group in memory at a time. Late data landing later is fine: it arrives as a
//! new file and the next run compacts the partition again.
//!
//! Beside a running sink: the replace requires `main` to be where it was planned; a sink
//! commit in between makes it conflict, and it is staged again on the new head (the
//! rewritten files stay valid: the sink only appends). The sink's own commit conflicts the
//! same way if compaction lands first, and retries. A crash before the catalog commit
//! leaves the table as it was and the written files as orphans for [`crate::orphans`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use iceberg::scan::FileScanTask;
use iceberg::spec::{DataContentType, DataFile, Literal, PrimitiveLiteral, Struct, Transform};
use iceberg::table::Table;
use iceberg::{Catalog, TableIdent};
use k2_common::config::MaintenanceConfig;
use k2_common::retry::Backoff;

use crate::progress::Progress;
use crate::{MaintainError, retry};
use k2_table::commit::{CommitError, MetadataCommitter};
use k2_table::stage::replace;
use k2_table::stage::{ManifestCache, StageError};

/// Commit attempts per partition before compaction leaves it for the next run.
const COMMIT_ATTEMPTS: usize = 8;

/// What compaction did to (or, in a dry run, would do to) one table.
#[derive(Debug, Clone, Default)]
pub struct Compacted {
    pub table: String,
    /// Partitions rewritten (or that would be).
    pub partitions: usize,
    pub files_before: usize,
    pub files_after: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub rows: u64,
    /// Partitions skipped because their inputs changed under them (another compaction).
    pub abandoned: usize,
    pub dry_run: bool,
}

impl fmt::Display for Compacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.dry_run {
            return write!(
                f,
                "{}: {} partitions would be compacted ({} files, {} bytes, {} rows)",
                self.table, self.partitions, self.files_before, self.bytes_before, self.rows
            );
        }
        write!(
            f,
            "{}: {} partitions compacted, {} files ({} bytes) -> {} files ({} bytes), {} rows",
            self.table,
            self.partitions,
            self.files_before,
            self.bytes_before,
            self.files_after,
            self.bytes_after,
            self.rows
        )?;
        if self.abandoned > 0 {
            write!(f, ", {} left for the next run", self.abandoned)?;
        }
        Ok(())
    }
}

/// Which partitions to compact and how.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// A partition is closed once this long has passed since its day ended; zero: every
    /// partition, today's included.
    pub closed_after: Duration,
    pub target_file_size: u64,
    /// Rewritten files older than this are not committed (see `orphan_min_age`).
    pub max_file_age: Duration,
}

impl Policy {
    pub fn new(config: &MaintenanceConfig, older_than: Option<Duration>) -> Self {
        Policy {
            closed_after: older_than.unwrap_or(config.compact_after),
            target_file_size: config.target_file_size.as_u64(),
            max_file_age: config.max_uncommitted_file_age(),
        }
    }
}

/// A live data file and where it sits.
struct Live {
    file: DataFile,
}

/// Compacts the closed partitions of `ident`.
pub async fn compact(
    catalog: &dyn Catalog,
    committer: &MetadataCommitter,
    ident: &TableIdent,
    policy: Policy,
    now: DateTime<Utc>,
    dry_run: bool,
    progress: &dyn Progress,
) -> Result<Compacted, MaintainError> {
    let name = ident.to_string();
    let table = retry::catalog(&name, "loading the table", || catalog.load_table(ident)).await?;
    let mut done = Compacted {
        table: name.clone(),
        dry_run,
        ..Default::default()
    };
    let Some(day_field) = day_field(&table) else {
        // Not partitioned by day (reference data): nothing closes.
        return Ok(done);
    };
    let partitions =
        retry::catalog(&name, "reading the table's files", || live_files(&table)).await?;
    // Planned once: the scan tasks of every live file, to read any group from.
    let tasks = retry::catalog(&name, "planning the table's files", || plan_tasks(&table)).await?;
    let mut manifests = ManifestCache::default();
    let mut closed_groups = Vec::new();
    for (partition, files) in partitions {
        if !closed(&partition, day_field, policy.closed_after, now) {
            continue;
        }
        let groups = groups(files, policy.target_file_size);
        if groups.is_empty() {
            continue;
        }
        let inputs: Vec<&DataFile> = groups.iter().flatten().map(|l| &l.file).collect();
        done.partitions += 1;
        done.files_before += inputs.len();
        done.bytes_before += inputs.iter().map(|f| f.file_size_in_bytes()).sum::<u64>();
        done.rows += inputs.iter().map(|f| f.record_count()).sum::<u64>();
        closed_groups.push((partition, groups));
    }
    if dry_run {
        closed_groups.clear();
    } else {
        progress.started(&name, closed_groups.len(), done.bytes_before);
    }
    let finished = Finished(progress);
    let run = Run {
        catalog,
        committer,
        ident,
        policy,
        progress,
    };
    for (partition, groups) in closed_groups {
        let inputs: Vec<&DataFile> = groups.iter().flatten().map(|l| &l.file).collect();
        // Progress, one line per partition as it starts and ends (a day of a large exchange
        // takes minutes).
        let started = Instant::now();
        let (files, bytes) = (
            inputs.len(),
            inputs.iter().map(|f| f.file_size_in_bytes()).sum::<u64>(),
        );
        tracing::info!(table = %name, partition = %partition, files, bytes, groups = groups.len(), "compacting partition");
        progress.partition(&partition.to_string());
        let rewritten = run
            .rewrite_partition((&table, &tasks), &groups, &mut manifests)
            .await;
        match rewritten {
            Ok(Some(added)) => {
                tracing::info!(
                    table = %name,
                    partition = %partition,
                    files_after = added.len(),
                    seconds = started.elapsed().as_secs_f64(),
                    "compacted partition"
                );
                done.files_after += added.len();
                done.bytes_after += added.iter().map(DataFile::file_size_in_bytes).sum::<u64>();
            }
            Ok(None) => done.abandoned += 1,
            Err(e) => return Err(e),
        }
    }
    tracing::info!(
        table = %name,
        partitions = done.partitions,
        files_before = done.files_before,
        files_after = done.files_after,
        rows = done.rows,
        dry_run,
        "compaction"
    );
    drop(finished);
    Ok(done)
}

/// Tells the observer the run is over however it ends (an error returns early).
struct Finished<'a>(&'a dyn Progress);

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        self.0.finished();
    }
}

/// What rewriting a partition works with.
struct Run<'a> {
    catalog: &'a dyn Catalog,
    committer: &'a MetadataCommitter,
    ident: &'a TableIdent,
    policy: Policy,
    progress: &'a dyn Progress,
}

impl Run<'_> {
    /// Reads, sorts and writes each group again, then commits the partition's replacement.
    /// `None` when the inputs changed under it (left for the next run; what it wrote is an
    /// orphan).
    async fn rewrite_partition(
        &self,
        (table, tasks): (&Table, &HashMap<String, FileScanTask>),
        groups: &[Vec<Live>],
        manifests: &mut ManifestCache,
    ) -> Result<Option<Vec<DataFile>>, MaintainError> {
        let Run {
            catalog,
            committer,
            ident,
            policy,
            progress,
        } = *self;
        let name = ident.to_string();
        let started = Instant::now();
        let prefix = format!("k2-compact-{}", uuid::Uuid::new_v4().simple());
        let mut added = Vec::new();
        let mut removed = HashSet::new();
        for (n, group) in groups.iter().enumerate() {
            let paths: HashSet<String> = group
                .iter()
                .map(|l| l.file.file_path().to_string())
                .collect();
            let batches = read_files(table, tasks, &paths)
                .await
                .map_err(|e| catalog_error(&name, "reading files to compact", e))?;
            let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
            let expected: u64 = group.iter().map(|l| l.file.record_count()).sum();
            if rows != expected {
                return Err(MaintainError::Table {
                    table: name,
                    message: format!(
                        "read {rows} rows from files that hold {expected}: not compacting"
                    ),
                });
            }
            let written = k2_table::writer::write_sorted(
                table,
                &batches,
                &format!("{prefix}-{n}"),
                policy.target_file_size as usize,
            )
            .await
            .map_err(|e| catalog_error(&name, "writing compacted files", e))?;
            let written_rows: u64 = written.iter().map(DataFile::record_count).sum();
            if written_rows != expected {
                return Err(MaintainError::Table {
                    table: name,
                    message: format!("wrote {written_rows} rows for {expected}: not committing"),
                });
            }
            added.extend(written);
            removed.extend(paths);
            progress.advanced(group.iter().map(|l| l.file.file_size_in_bytes()).sum());
        }
        k2_table::fail_point!("compact-after-write");
        let mut backoff = Backoff::new();
        // The table as it is now (earlier partitions of this run have committed since it was
        // first loaded).
        let mut current = reload(catalog, ident).await?;
        // The snapshot of an attempt whose outcome is unknown (its reply lost): if the table
        // has it now, that attempt landed.
        let mut unsure: Option<i64> = None;
        for attempt in 1..=COMMIT_ATTEMPTS {
            if unsure.is_some_and(|id| current.metadata().snapshot_by_id(id).is_some()) {
                tracing::info!(table = %name, "an earlier attempt landed; not committing again");
                return Ok(Some(added));
            }
            if started.elapsed() > policy.max_file_age {
                tracing::warn!(table = %name, "compacted files are too old to commit safely; left for the next run");
                return Ok(None);
            }
            let staged = match replace::stage(&current, &removed, added.clone(), manifests).await {
                Ok(s) => s,
                Err(StageError::InputGone(file)) => {
                    tracing::warn!(table = %name, file, "an input file is gone; partition left for the next run");
                    return Ok(None);
                }
                Err(StageError::Iceberg(e))
                    if k2_common::catalog::is_transient(&e) && attempt < COMMIT_ATTEMPTS =>
                {
                    backoff
                        .wait(&format!("{name}: staging the compaction"), &e)
                        .await;
                    current = reload(catalog, ident).await?;
                    continue;
                }
                Err(e) => {
                    return Err(MaintainError::Table {
                        table: name,
                        message: format!("staging the compaction: {e}"),
                    });
                }
            };
            k2_table::fail_point!("compact-after-stage");
            let snapshot_id = staged.snapshot_id;
            match committer.commit_to(catalog, ident, staged).await {
                Ok(()) => return Ok(Some(added)),
                Err(CommitError::Conflict) => {
                    tracing::info!(table = %name, attempt, "compaction conflicted with another commit; staging again");
                }
                Err(e) if attempt < COMMIT_ATTEMPTS => {
                    unsure = Some(snapshot_id);
                    backoff
                        .wait(&format!("{name}: committing the compaction"), &e)
                        .await;
                }
                Err(e) => {
                    return Err(MaintainError::Table {
                        table: name,
                        message: format!(
                            "committing the compaction: {}",
                            k2_common::report::chain(&e)
                        ),
                    });
                }
            }
            current = reload(catalog, ident).await?;
        }
        Ok(None)
    }
}

async fn reload(catalog: &dyn Catalog, ident: &TableIdent) -> Result<Table, MaintainError> {
    retry::catalog(&ident.to_string(), "loading the table", || {
        catalog.load_table(ident)
    })
    .await
}

fn catalog_error(table: &str, what: &'static str, e: iceberg::Error) -> MaintainError {
    MaintainError::Catalog {
        table: table.to_string(),
        what,
        error: Box::new(e),
    }
}

/// The scan task of every live data file of the table's current snapshot, by path.
async fn plan_tasks(table: &Table) -> iceberg::Result<HashMap<String, FileScanTask>> {
    table
        .scan()
        .select_all()
        .build()?
        .plan_files()
        .await?
        .map_ok(|t| (t.data_file_path.clone(), t))
        .try_collect()
        .await
}

/// The rows of these data files, in the table's current schema.
async fn read_files(
    table: &Table,
    tasks: &HashMap<String, FileScanTask>,
    paths: &HashSet<String>,
) -> iceberg::Result<Vec<arrow_array::RecordBatch>> {
    let mut chosen = Vec::with_capacity(paths.len());
    for p in paths {
        let task = tasks.get(p).ok_or_else(|| {
            iceberg::Error::new(
                iceberg::ErrorKind::DataInvalid,
                format!("{p} is not in the planned scan"),
            )
        })?;
        chosen.push(Ok(task.clone()));
    }
    table
        .reader_builder()
        .build()
        .read(futures::stream::iter(chosen).boxed())?
        .stream()
        .try_collect()
        .await
}

/// Position of the partition field that is `day(...)` of the current spec.
fn day_field(table: &Table) -> Option<usize> {
    table
        .metadata()
        .default_partition_spec()
        .fields()
        .iter()
        .position(|f| f.transform == Transform::Day)
}

/// Live data files of the current snapshot, by partition (only the current spec's).
async fn live_files(table: &Table) -> iceberg::Result<BTreeMap<PartitionKey, Vec<Live>>> {
    let m = table.metadata();
    let mut out: BTreeMap<PartitionKey, Vec<Live>> = BTreeMap::new();
    let Some(snapshot) = m.current_snapshot() else {
        return Ok(out);
    };
    let spec_id = m.default_partition_spec_id();
    let list = table.manifest_list_reader(snapshot).load().await?;
    for manifest_file in list.entries() {
        if manifest_file.partition_spec_id != spec_id {
            continue;
        }
        let manifest = manifest_file.load_manifest(table.file_io()).await?;
        for entry in manifest.entries() {
            if entry.is_alive() && entry.content_type() == DataContentType::Data {
                let file = entry.data_file().clone();
                out.entry(PartitionKey(file.partition().clone()))
                    .or_default()
                    .push(Live { file });
            }
        }
    }
    Ok(out)
}

/// The paths of the live data files of the current snapshot, by partition.
pub(crate) async fn live_paths(table: &Table) -> iceberg::Result<Vec<(Struct, Vec<String>)>> {
    Ok(live_files(table)
        .await?
        .into_iter()
        .map(|(k, files)| {
            let paths = files
                .iter()
                .map(|l| l.file.file_path().to_string())
                .collect();
            (k.0, paths)
        })
        .collect())
}

/// A partition tuple, ordered by its debug form (Struct has no Ord).
#[derive(Debug, Clone, PartialEq, Eq)]
struct PartitionKey(Struct);

impl PartialOrd for PartitionKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for PartitionKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        format!("{:?}", self.0).cmp(&format!("{:?}", other.0))
    }
}

impl fmt::Display for PartitionKey {
    /// The partition's values, `/`-separated (`asx/16191`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let values: Vec<String> = self
            .0
            .fields()
            .iter()
            .map(|v| match v {
                Some(Literal::Primitive(PrimitiveLiteral::String(s))) => s.clone(),
                Some(Literal::Primitive(PrimitiveLiteral::Int(i))) => i.to_string(),
                Some(other) => format!("{other:?}"),
                None => "null".into(),
            })
            .collect();
        f.write_str(&values.join("/"))
    }
}

/// Whether the partition's day ended at least `after` before `now` (always, for zero).
fn closed(partition: &PartitionKey, day_field: usize, after: Duration, now: DateTime<Utc>) -> bool {
    if after.is_zero() {
        return true;
    }
    let Some(Some(Literal::Primitive(PrimitiveLiteral::Int(day)))) =
        partition.0.fields().get(day_field).cloned()
    else {
        return false;
    };
    day_closed(day, after, now)
}

/// Whether the day (days since the epoch) ended at least `after` before `now`.
pub(crate) fn day_closed(day: i32, after: Duration, now: DateTime<Utc>) -> bool {
    if after.is_zero() {
        return true;
    }
    let day_end_ms = (i64::from(day) + 1) * 86_400_000;
    let after_ms = i64::try_from(after.as_millis()).unwrap_or(i64::MAX);
    now.timestamp_millis() >= day_end_ms.saturating_add(after_ms)
}

/// Packs a partition's files into groups of at most `target` bytes, smallest first; files
/// already at the target and groups of one file are left alone (nothing to gain).
fn groups(mut files: Vec<Live>, target: u64) -> Vec<Vec<Live>> {
    files.retain(|l| l.file.file_size_in_bytes() < target);
    files.sort_by_key(|l| l.file.file_size_in_bytes());
    let mut groups: Vec<Vec<Live>> = Vec::new();
    let mut size = 0;
    for l in files {
        let s = l.file.file_size_in_bytes();
        match groups.last_mut() {
            Some(g) if size + s <= target => {
                size += s;
                g.push(l);
            }
            _ => {
                size = s;
                groups.push(vec![l]);
            }
        }
    }
    groups.retain(|g| g.len() > 1);
    groups
}

#[cfg(test)]
mod tests {
    use iceberg::spec::{DataFileBuilder, DataFileFormat};

    use super::*;

    fn live(size: u64) -> Live {
        Live {
            file: DataFileBuilder::default()
                .content(DataContentType::Data)
                .file_path(format!("f-{size}.parquet"))
                .file_format(DataFileFormat::Parquet)
                .partition(Struct::empty())
                .record_count(1)
                .file_size_in_bytes(size)
                .build()
                .unwrap(),
        }
    }

    fn sizes(groups: &[Vec<Live>]) -> Vec<Vec<u64>> {
        groups
            .iter()
            .map(|g| g.iter().map(|l| l.file.file_size_in_bytes()).collect())
            .collect()
    }

    #[test]
    fn files_are_packed_up_to_the_target_and_lone_or_large_files_left_alone() {
        let files: Vec<Live> = [50, 10, 100, 30, 60, 20, 90]
            .into_iter()
            .map(live)
            .collect();
        // 100 is at the target; 10+20+30 ≤ 100, then 50 (+60 would exceed), 60 (+90
        // exceeds), 90: groups of one are dropped.
        assert_eq!(sizes(&groups(files, 100)), vec![vec![10, 20, 30]]);
        assert!(groups(vec![live(5)], 100).is_empty());
    }

    #[test]
    fn a_day_is_closed_once_the_wait_after_its_end_has_passed() {
        let day = |d: i32| {
            PartitionKey(Struct::from_iter([
                Some(Literal::string("asx")),
                Some(Literal::int(d)),
            ]))
        };
        // 2014-05-01 is day 16191; it ends at 2014-05-02T00:00Z.
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let six_hours = Duration::from_secs(6 * 3600);
        assert!(!closed(
            &day(16191),
            1,
            six_hours,
            at("2014-05-02T05:59:59Z")
        ));
        assert!(closed(
            &day(16191),
            1,
            six_hours,
            at("2014-05-02T06:00:00Z")
        ));
        assert!(closed(
            &day(16191),
            1,
            Duration::ZERO,
            at("2014-05-01T12:00:00Z")
        ));
    }
}
