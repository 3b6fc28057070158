//! The protocol's hard paths, made to happen on purpose over a real SQLite catalog: a commit
//! applied whose acknowledgement is lost, a competing commit landing between the offset
//! check and the commit, two committers racing over the same range, files too old to
//! commit; and history kept bounded in the commits themselves (merged manifests, expiry,
//! end-of-day tags) with the offsets recoverable and a restart continuing after each step.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};

use iceberg::table::Table;
use iceberg::{ErrorKind, TableCommit};
use k2_table::commit::{CommitError, CommitTarget, MetadataCommitter};
use k2_table::offsets::TableOffsets;
use k2_table::stage::Staged;

use super::*;
use crate::job::PartitionMap;
use crate::partition::{PartitionState, Position, Reading};
use crate::stages::test_support::{TOPIC, catalog, push_from, stages, trade};

/// `impl Catalog for $ty` with the given `load_table`, every other method forwarded to
/// `self.inner`.
macro_rules! wrapping_catalog {
    ($ty:ty { $($custom:tt)* }) => {
        #[async_trait::async_trait]
        impl ::iceberg::Catalog for $ty {
            $($custom)*

            async fn list_namespaces(&self, parent: Option<&::iceberg::NamespaceIdent>)
                -> ::iceberg::Result<Vec<::iceberg::NamespaceIdent>> {
                self.inner.list_namespaces(parent).await
            }
            async fn create_namespace(&self, namespace: &::iceberg::NamespaceIdent,
                properties: ::std::collections::HashMap<String, String>)
                -> ::iceberg::Result<::iceberg::Namespace> {
                self.inner.create_namespace(namespace, properties).await
            }
            async fn get_namespace(&self, namespace: &::iceberg::NamespaceIdent)
                -> ::iceberg::Result<::iceberg::Namespace> {
                self.inner.get_namespace(namespace).await
            }
            async fn namespace_exists(&self, namespace: &::iceberg::NamespaceIdent)
                -> ::iceberg::Result<bool> {
                self.inner.namespace_exists(namespace).await
            }
            async fn update_namespace(&self, namespace: &::iceberg::NamespaceIdent,
                properties: ::std::collections::HashMap<String, String>) -> ::iceberg::Result<()> {
                self.inner.update_namespace(namespace, properties).await
            }
            async fn drop_namespace(&self, namespace: &::iceberg::NamespaceIdent)
                -> ::iceberg::Result<()> {
                self.inner.drop_namespace(namespace).await
            }
            async fn list_tables(&self, namespace: &::iceberg::NamespaceIdent)
                -> ::iceberg::Result<Vec<::iceberg::TableIdent>> {
                self.inner.list_tables(namespace).await
            }
            async fn create_table(&self, namespace: &::iceberg::NamespaceIdent,
                creation: ::iceberg::TableCreation) -> ::iceberg::Result<::iceberg::table::Table> {
                self.inner.create_table(namespace, creation).await
            }
            async fn drop_table(&self, table: &::iceberg::TableIdent) -> ::iceberg::Result<()> {
                self.inner.drop_table(table).await
            }
            async fn purge_table(&self, table: &::iceberg::TableIdent) -> ::iceberg::Result<()> {
                self.inner.purge_table(table).await
            }
            async fn table_exists(&self, table: &::iceberg::TableIdent) -> ::iceberg::Result<bool> {
                self.inner.table_exists(table).await
            }
            async fn rename_table(&self, src: &::iceberg::TableIdent, dest: &::iceberg::TableIdent)
                -> ::iceberg::Result<()> {
                self.inner.rename_table(src, dest).await
            }
            async fn register_table(&self, table: &::iceberg::TableIdent, metadata_location: String)
                -> ::iceberg::Result<::iceberg::table::Table> {
                self.inner.register_table(table, metadata_location).await
            }
            async fn update_table(&self, commit: TableCommit) -> ::iceberg::Result<::iceberg::table::Table> {
                self.inner.update_table(commit).await
            }
        }
    };
}

/// The real catalog and its compare-and-swap, with one fault injected where a test asks.
struct Faulty {
    inner: Arc<dyn Catalog>,
    target: Arc<MetadataCommitter>,
    /// Apply the next commit, then answer as if the connection dropped.
    lose_ack: AtomicBool,
    /// Right after the next table load, let this competitor commit its job: the loaded
    /// table is then stale by one snapshot.
    competitor: Mutex<Option<(Committer, CommitJob)>>,
    /// Refuse this many commits (the catalog unreachable) before applying any.
    refuse: AtomicUsize,
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
});

#[async_trait::async_trait]
impl CommitTarget for Faulty {
    async fn commit(&self, base: &Table, staged: Staged) -> Result<(), CommitError> {
        if self
            .refuse
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(CommitError::Iceberg(
                iceberg::Error::new(ErrorKind::Unexpected, "catalog unreachable").with_source(
                    std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused"),
                ),
            ));
        }
        self.target.commit(base, staged).await?;
        if self.lose_ack.swap(false, Ordering::SeqCst) {
            return Err(CommitError::Rest {
                status: None,
                message: "connection reset after the catalog applied the commit".into(),
            });
        }
        Ok(())
    }
}

/// A catalog and warehouse in a temporary directory, with the trades and events tables.
struct Lake {
    dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    catalog: Arc<dyn Catalog>,
    target: Arc<MetadataCommitter>,
}

impl Lake {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let catalog = catalog(dir.path(), &rt);
        let config = k2_common::K2Config::load(dir.path().join("k2.toml")).unwrap();
        let target = rt.block_on(MetadataCommitter::connect(&config)).unwrap();
        Lake {
            dir,
            rt,
            catalog,
            target,
        }
    }

    fn faulty(&self) -> Arc<Faulty> {
        Arc::new(Faulty {
            inner: self.catalog.clone(),
            target: self.target.clone(),
            lose_ack: AtomicBool::new(false),
            competitor: Mutex::new(None),
            refuse: AtomicUsize::new(0),
        })
    }

    fn committer(&self, writer: &str) -> Committer {
        Committer::new(
            self.catalog.clone(),
            self.target.clone(),
            "group",
            writer,
            Metrics::new(),
        )
    }

    fn committer_through(&self, faulty: &Arc<Faulty>, writer: &str) -> Committer {
        self.counted_through(faulty, writer, &Metrics::new())
    }

    fn counted_through(&self, faulty: &Arc<Faulty>, writer: &str, metrics: &Metrics) -> Committer {
        Committer::new(
            faulty.clone(),
            faulty.clone(),
            "group",
            writer,
            metrics.clone(),
        )
    }

    /// A job of `n` trades at offsets `first`.. of partition 0, expecting the table to
    /// have recorded `first` (`None` for 0: nothing yet).
    fn job(&self, first: i64, n: i64) -> CommitJob {
        let mut stages = stages(self.catalog.clone(), &self.rt);
        let values: Vec<Option<Vec<u8>>> = (first..first + n)
            .map(|seq| Some(trade("BHP", seq + 1, 40)))
            .collect();
        assert!(push_from(&mut stages, DataType::Trades, first, &values).is_empty());
        let mut partitions = PartitionMap::default();
        partitions.insert(
            TopicPartition::new(TOPIC, 0),
            PartitionState::Reading(Reading {
                epoch: 1,
                expected_recorded: (first > 0).then_some(first),
                position: Position::Next(first),
            }),
        );
        stages.buffer.seal(&mut partitions)
    }

    fn table(&self) -> Table {
        self.rt
            .block_on(self.catalog.load_table(&table_ident(DataType::Trades)))
            .unwrap()
    }

    /// (snapshots, total records, recorded offset of partition 0) of the trades table.
    fn state(&self) -> (usize, i64, Option<i64>) {
        let table = self.table();
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

    /// Manifests the trades table's current snapshot lists.
    fn manifests(&self) -> usize {
        let table = self.table();
        let snapshot = table.metadata().current_snapshot().unwrap().clone();
        self.rt
            .block_on(table.manifest_list_reader(&snapshot).load())
            .unwrap()
            .entries()
            .len()
    }

    /// Rows of the trades table as DataFusion-free as it gets: a scan through iceberg-rust.
    fn rows(&self) -> usize {
        use futures::TryStreamExt;
        let table = self.table();
        self.rt.block_on(async {
            let batches: Vec<arrow_array::RecordBatch> = table
                .scan()
                .select_all()
                .build()
                .unwrap()
                .to_arrow()
                .await
                .unwrap()
                .try_collect()
                .await
                .unwrap();
            batches.iter().map(|b| b.num_rows()).sum()
        })
    }

    fn files(&self, extension: &str) -> usize {
        files(self.dir.path(), extension)
    }
}

/// Files with `extension` under `dir`, at any depth.
fn files(dir: &std::path::Path, extension: &str) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                files(&p, extension)
            } else {
                usize::from(p.extension().is_some_and(|x| x == extension))
            }
        })
        .sum()
}

fn outcome(tables: &[TableOutcome]) -> &RangeOutcome {
    &tables[0].partitions[0].2
}

#[test]
fn a_commit_whose_acknowledgement_was_lost_is_recognised_not_repeated() {
    let lake = Lake::new();
    let faulty = lake.faulty();
    faulty.lose_ack.store(true, Ordering::SeqCst);
    let metrics = Metrics::new();
    let committer = lake.counted_through(&faulty, "a", &metrics);
    let tables = lake
        .rt
        .block_on(committer.commit_tables(1, lake.job(0, 6)))
        .unwrap();
    assert!(!faulty.lose_ack.load(Ordering::SeqCst), "the fault fired");
    assert_eq!(outcome(&tables), &RangeOutcome::Committed);
    assert_eq!(lake.state(), (1, 6, Some(6)), "one snapshot, six rows");
    // Recognised later, the commit is accounted for as if its reply had come back.
    let text = metrics.encode();
    for counted in [
        "k2_data_files_total{table=\"trades\"} 1",
        "k2_records_written_total{table=\"trades\"} 6",
    ] {
        assert!(text.contains(counted), "{counted} in:\n{text}");
    }
    assert!(
        text.lines().any(
            |l| l.starts_with("k2_data_file_bytes_total{table=\"trades\"} ") && !l.ends_with(" 0")
        ),
        "{text}"
    );
    // The next job follows on from the landed one.
    let tables = lake
        .rt
        .block_on(committer.commit_tables(2, lake.job(6, 4)))
        .unwrap();
    assert_eq!(outcome(&tables), &RangeOutcome::Committed);
    assert_eq!(lake.state(), (2, 10, Some(10)));
}

#[test]
fn a_competing_commit_between_check_and_commit_fences_the_partition() {
    let lake = Lake::new();
    let faulty = lake.faulty();
    // Another writer commits offsets 0..4 right after this committer loaded the table to
    // check its offsets (nothing recorded). Staged on a newer head, the append would land
    // ten rows, four of them twice; staged on what was checked, it conflicts.
    *faulty.competitor.lock().unwrap() = Some((lake.committer("b"), lake.job(0, 4)));
    let metrics = Metrics::new();
    let tables = lake
        .rt
        .block_on(
            lake.counted_through(&faulty, "a", &metrics)
                .commit_tables(1, lake.job(0, 6)),
        )
        .unwrap();
    // The lost compare-and-swap is a retry like any other: counted, visible.
    let text = metrics.encode();
    assert!(
        text.contains("k2_retries_total{operation=\"commit_conflict\"} 1"),
        "{text}"
    );
    assert!(
        faulty.competitor.lock().unwrap().is_none(),
        "the competitor ran"
    );
    assert_eq!(
        outcome(&tables),
        &RangeOutcome::Fenced { recorded: Some(4) }
    );
    assert_eq!(tables[0].records, 0);
    assert_eq!(lake.state(), (1, 4, Some(4)), "only the competitor's rows");
}

#[test]
fn two_committers_over_the_same_range_land_it_once_and_the_other_is_fenced() {
    let lake = Lake::new();
    let (a, b) = (lake.committer("a"), lake.committer("b"));
    let (ja, jb) = (lake.job(0, 6), lake.job(0, 6));
    let (ra, rb) = lake
        .rt
        .block_on(async { tokio::join!(a.commit_tables(1, ja), b.commit_tables(1, jb)) });
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
    assert_eq!(lake.state(), (1, 6, Some(6)));
}

#[test]
fn files_too_old_for_orphan_cleanup_are_written_again_before_the_commit() {
    for (max_age, written) in [(Duration::from_secs(3600), 1), (Duration::ZERO, 2)] {
        let lake = Lake::new();
        let faulty = lake.faulty();
        // The first commit fails; the retry reuses its files only while they are young.
        faulty.refuse.store(1, Ordering::SeqCst);
        let committer = lake
            .committer_through(&faulty, "a")
            .with_max_file_age(max_age);
        let tables = lake
            .rt
            .block_on(committer.commit_tables(1, lake.job(0, 6)))
            .unwrap();
        assert_eq!(outcome(&tables), &RangeOutcome::Committed);
        assert_eq!(lake.state(), (1, 6, Some(6)));
        assert_eq!(lake.files("parquet"), written, "max age {max_age:?}");
    }
}

/// Sets the trades table's `commit.manifest.min-count-to-merge` (Iceberg's property).
fn merge_every(lake: &Lake, manifests: usize) {
    let table = lake.table();
    let tx = iceberg::transaction::Transaction::new(&table);
    let tx = iceberg::transaction::ApplyTransactionAction::apply(
        tx.update_table_properties().set(
            k2_table::stage::append::MIN_COUNT_TO_MERGE.into(),
            manifests.to_string(),
        ),
        tx,
    )
    .unwrap();
    lake.rt.block_on(tx.commit(lake.catalog.as_ref())).unwrap();
}

/// A committer on a simulated clock starting at `start` (ms), moved by `clock`.
fn on_clock(
    lake: &Lake,
    writer: &str,
    clock: &Arc<AtomicI64>,
    policy: retention::Policy,
) -> Committer {
    let c = clock.clone();
    lake.committer(writer)
        .with_clock(Arc::new(move || c.load(Ordering::SeqCst)))
        .with_retention(policy)
}

#[test]
fn history_stays_bounded_by_merging_expiry_and_tags_and_a_restart_continues_after_each_step() {
    let lake = Lake::new();
    // Merge every 4 manifests (Iceberg's own property), so a few dozen commits show it.
    merge_every(&lake, 4);

    let hour = 3_600_000;
    let policy = retention::Policy {
        window_ms: 2 * hour,
        max_snapshots: 1_000,
        min_snapshots: 3,
        tag_max_age_ms: Some(30 * 24 * hour),
    };
    // A midnight ahead of the wall clock (snapshots never go back before the table's last
    // update), then a commit every 10 simulated minutes for 30 hours; a new committer (a
    // restart) every 7 commits, each continuing from what the table recorded.
    let day_ms = 86_400_000;
    let start = (chrono::Utc::now().timestamp_millis() / day_ms + 1) * day_ms;
    let first_day = retention::eod_tag(
        chrono::DateTime::from_timestamp_millis(start)
            .unwrap()
            .date_naive(),
    );
    let clock = Arc::new(AtomicI64::new(start));
    let mut committer = on_clock(&lake, "w0", &clock, policy);
    let mut offset = 0;
    let mut max_manifests = 0;
    for n in 1..=180 {
        clock.store(start + n * 600_000, Ordering::SeqCst);
        if n % 7 == 0 {
            lake.rt.block_on(committer.settle());
            committer = on_clock(&lake, &format!("w{n}"), &clock, policy);
        }
        let recorded = lake.state().2;
        assert_eq!(
            recorded,
            (offset > 0).then_some(offset),
            "before commit {n}"
        );
        let tables = lake
            .rt
            .block_on(committer.commit_tables(n as u64, lake.job(offset, 3)))
            .unwrap();
        assert_eq!(outcome(&tables), &RangeOutcome::Committed, "commit {n}");
        offset += 3;
        max_manifests = max_manifests.max(lake.manifests());
    }
    lake.rt.block_on(committer.settle());
    // Every row once, the offsets where they should be.
    assert_eq!(lake.rows(), 540);
    assert_eq!(lake.state().1, 540);
    assert_eq!(lake.state().2, Some(540));
    // Bounded: the window (2 h at 10 min: 12, plus housekeeping's period) and one tag.
    let table = lake.table();
    let m = table.metadata();
    let refs = retention::refs(m);
    let tags: Vec<&str> = refs
        .iter()
        .filter(|r| !r.is_branch)
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(tags, [first_day.as_str()]);
    assert!(
        m.snapshots().len() <= 16,
        "{} snapshots",
        m.snapshots().len()
    );
    // Manifests: a day's worth merged, today's below the merge count.
    assert!(max_manifests <= 6, "{max_manifests} manifests at most");
    // The tag still reads the whole first day: 144 commits of 3 rows.
    let tagged = m.snapshot_for_ref(&first_day).unwrap();
    assert_eq!(
        tagged.summary().additional_properties["total-records"],
        "432"
    );
    // Files only expired snapshots reached are gone: manifest lists of the snapshots still
    // there, and nothing else of the kind.
    let metadata = lake
        .dir
        .path()
        .join("warehouse/market_data/trades/metadata");
    let lists = std::fs::read_dir(&metadata)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("snap-"))
        .count();
    assert_eq!(
        lists,
        m.snapshots().len(),
        "one manifest list per remaining snapshot"
    );
    let avro: Vec<String> = std::fs::read_dir(&metadata)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".avro"))
        .collect();
    assert!(
        avro.len() < 40,
        "manifests dropped and expired are deleted: {avro:#?}"
    );
    // Metadata files are pruned as they are replaced.
    let json = std::fs::read_dir(&metadata)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".metadata.json"))
        .count();
    assert!(
        json <= k2_table::layout::METADATA_VERSIONS_KEPT + 1,
        "{json} metadata files"
    );
}

#[test]
fn at_one_second_commits_the_window_holds_its_count_not_its_hour() {
    let lake = Lake::new();
    let policy = retention::Policy {
        window_ms: 3_600_000,
        max_snapshots: 24,
        min_snapshots: 3,
        tag_max_age_ms: Some(30 * 86_400_000),
    };
    // Housekeeping by age waits for its period (5 min of a 1-h window); by count it may
    // not: 120 commits a second apart stay within the count and its slack (2) throughout.
    // (Before the count existed, all 120 stayed: the hour had not passed.)
    let start = chrono::Utc::now().timestamp_millis() + 60_000;
    let clock = Arc::new(AtomicI64::new(start));
    let committer = on_clock(&lake, "w0", &clock, policy);
    let mut most = 0;
    for n in 1..=120i64 {
        clock.store(start + n * 1_000, Ordering::SeqCst);
        let tables = lake
            .rt
            .block_on(committer.commit_tables(n as u64, lake.job((n - 1) * 3, 3)))
            .unwrap();
        assert_eq!(outcome(&tables), &RangeOutcome::Committed, "commit {n}");
        most = most.max(lake.table().metadata().snapshots().len());
    }
    lake.rt.block_on(committer.settle());
    // The count, its slack, and the commit that expires them (it adds its own snapshot).
    assert!(
        most <= 24 + policy.count_slack() + 1,
        "{most} snapshots at most"
    );
    assert!(most > 24, "the count was reached ({most})");
    // Nothing lost: every row once, the offsets where they should be.
    assert_eq!(lake.rows(), 360);
    assert_eq!(lake.state().2, Some(360));
}

/// A merge of manifests the committer wrote itself (from memory) writes what a merge of
/// the same manifests read from storage writes: every entry once, with the snapshot and
/// sequence numbers of the commit that added it. One committer merges from memory, a fresh
/// committer for every commit (a restart each time) from storage.
#[test]
fn a_merge_from_what_the_committer_wrote_equals_one_read_from_storage() {
    let merged = |fresh_each_commit: bool| {
        let lake = Lake::new();
        merge_every(&lake, 4);
        let mut committer = lake.committer("w0");
        for n in 1..=4i64 {
            if fresh_each_commit {
                committer = lake.committer(&format!("w{n}"));
            }
            let tables = lake
                .rt
                .block_on(committer.commit_tables(n as u64, lake.job((n - 1) * 3, 3)))
                .unwrap();
            assert_eq!(outcome(&tables), &RangeOutcome::Committed, "commit {n}");
        }
        if !fresh_each_commit {
            assert!(
                committer.written.is_empty(),
                "the merge took what it merged"
            );
        }
        assert_eq!(lake.manifests(), 1, "four commits, merged");
        let table = lake.table();
        let m = table.metadata();
        let snapshot = m.current_snapshot().unwrap().clone();
        let list = lake
            .rt
            .block_on(table.manifest_list_reader(&snapshot).load())
            .unwrap();
        let manifest = lake
            .rt
            .block_on(list.entries()[0].load_manifest(table.file_io()))
            .unwrap();
        // (sequence number, file sequence number, status, added by the snapshot of that
        // sequence number, records) per entry.
        let mut entries: Vec<_> = manifest
            .entries()
            .iter()
            .map(|e| {
                let seq = e.sequence_number().unwrap();
                let by = m
                    .snapshots()
                    .find(|s| s.sequence_number() == seq)
                    .map(|s| s.snapshot_id());
                (
                    seq,
                    e.file_sequence_number,
                    e.status(),
                    by == e.snapshot_id(),
                    e.data_file().record_count(),
                )
            })
            .collect();
        entries.sort_by_key(|e| e.0);
        assert_eq!(lake.rows(), 12);
        entries
    };
    let from_memory = merged(false);
    assert_eq!(from_memory.len(), 4);
    assert_eq!(from_memory, merged(true));
}
