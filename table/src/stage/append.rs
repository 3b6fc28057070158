//! The append snapshot, with Iceberg's merge-append: the new files get a manifest of their
//! own, and the manifest list is kept short by merging small manifests as appends go on,
//! so the cost of a commit and of planning a scan stays flat however many commits a table
//! has seen (fast appends add one manifest per commit forever).
//!
//! The merge follows Iceberg Java's `MergingSnapshotProducer` / `ManifestMergeManager`,
//! with its table properties and defaults (`commit.manifest-merge.enabled`,
//! `commit.manifest.target-size-bytes` = 8 MiB, `commit.manifest.min-count-to-merge` =
//! 100), and one K2 refinement: manifests are grouped by partition spec *and* by the value
//! of the spec's first partition field when a manifest holds a single one — the day, for
//! K2's day-partitioned tables — so a merged manifest never spans days and planning a day
//! still prunes every other day's manifests by their partition summaries. Within a group,
//! manifests (newest first) are packed from the oldest end into bins of about the target
//! size; a bin of several manifests is rewritten as one once it has `min-count-to-merge`
//! manifests in a group this commit appends to (so merging happens every `min-count`
//! commits, not on every one), and at once in a group it does not (a second refinement,
//! see [`bins`]). Live entries keep their snapshot id and
//! sequence numbers (`EXISTING`); deleted entries are dropped; this commit's own entries
//! stay `ADDED`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use iceberg::spec::{
    DataContentType, DataFile, FormatVersion, ManifestEntry, ManifestFile, ManifestListWriter,
    ManifestStatus, ManifestWriterBuilder, Operation, PartitionSpec, Snapshot, SnapshotReference,
    SnapshotRetention, SnapshotSummaryCollector, Summary, TableMetadata,
};
use iceberg::table::Table;
use iceberg::{ErrorKind, TableRequirement, TableUpdate};

use super::{StageError, Staged, manifest_list_path, metadata_file, new_snapshot_id, totals};

/// Iceberg's property names and defaults for manifest merging.
pub const MERGE_ENABLED: &str = "commit.manifest-merge.enabled";
pub const TARGET_SIZE_BYTES: &str = "commit.manifest.target-size-bytes";
pub const MIN_COUNT_TO_MERGE: &str = "commit.manifest.min-count-to-merge";

/// How an append keeps the manifest list short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManifestMerge {
    pub enabled: bool,
    pub target_size_bytes: u64,
    pub min_count_to_merge: usize,
}

impl Default for ManifestMerge {
    fn default() -> Self {
        ManifestMerge {
            enabled: true,
            target_size_bytes: 8 * 1024 * 1024,
            min_count_to_merge: 100,
        }
    }
}

/// The entries of the manifests this process's appends wrote, by path, until a merge takes
/// them: a merge then reads from storage only the manifests others wrote (or that a
/// restart forgot). A 1-s sink's merge is a hundred one-commit manifests of a couple of
/// entries each, and reading one — an Avro header carrying the table's schema, parsed every
/// time — cost more than its entries: ~0.4 s of a hundred-manifest merge, on the commit's
/// path (`bench/soak`). Least recently written go first past a budget of entries, so the
/// manifests of a day no longer written cannot pile up.
pub struct WrittenManifests {
    inner: Mutex<Written>,
}

struct Written {
    by_path: lru::LruCache<String, Vec<ManifestEntry>>,
    entries: usize,
    budget: usize,
}

impl WrittenManifests {
    /// Room for about a merge's worth of one-commit manifests for each of a few tables.
    pub const DEFAULT_BUDGET: usize = 4_096;

    pub fn new(budget_entries: usize) -> Self {
        WrittenManifests {
            inner: Mutex::new(Written {
                by_path: lru::LruCache::unbounded(),
                entries: 0,
                budget: budget_entries,
            }),
        }
    }

    fn insert(&self, path: String, entries: Vec<ManifestEntry>) {
        let mut w = self.inner.lock().expect("written manifests lock");
        w.entries += entries.len();
        if let Some(old) = w.by_path.put(path, entries) {
            w.entries -= old.len();
        }
        while w.entries > w.budget {
            match w.by_path.pop_lru() {
                Some((_, gone)) => w.entries -= gone.len(),
                None => break,
            }
        }
    }

    /// The entries of the manifest at `path`, if this process wrote it and still has them;
    /// taken out (a merged manifest is not merged again).
    fn take(&self, path: &str) -> Option<Vec<ManifestEntry>> {
        let mut w = self.inner.lock().expect("written manifests lock");
        let entries = w.by_path.pop(path)?;
        w.entries -= entries.len();
        Some(entries)
    }

    /// Entries held (for tests and the curious).
    pub fn len(&self) -> usize {
        self.inner.lock().expect("written manifests lock").entries
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for WrittenManifests {
    fn default() -> Self {
        WrittenManifests::new(Self::DEFAULT_BUDGET)
    }
}

impl ManifestMerge {
    /// The policy the table's properties ask for (Iceberg's defaults where they are absent
    /// or unreadable).
    pub fn of(m: &TableMetadata) -> Self {
        let d = ManifestMerge::default();
        let p = m.properties();
        ManifestMerge {
            enabled: p
                .get(MERGE_ENABLED)
                .and_then(|v| v.parse().ok())
                .unwrap_or(d.enabled),
            target_size_bytes: p
                .get(TARGET_SIZE_BYTES)
                .and_then(|v| v.parse().ok())
                .unwrap_or(d.target_size_bytes),
            min_count_to_merge: p
                .get(MIN_COUNT_TO_MERGE)
                .and_then(|v| v.parse().ok())
                .unwrap_or(d.min_count_to_merge)
                .max(1),
        }
    }
}

/// What one append adds.
#[derive(Debug, Clone)]
pub struct Append {
    pub files: Vec<DataFile>,
    /// Properties of the snapshot summary beside the counts and totals (K2's offsets…).
    pub properties: HashMap<String, String>,
    /// The snapshot's commit time (raised to the table's last update if the clock is
    /// behind it).
    pub timestamp_ms: i64,
}

/// Stages `append` on `table`'s current snapshot (or as its first snapshot).
pub async fn stage(
    table: &Table,
    append: Append,
    merge: ManifestMerge,
    written: Option<&WrittenManifests>,
) -> Result<Staged, StageError> {
    let m = table.metadata();
    // Entries are kept for merges only.
    let written = written.filter(|_| merge.enabled);
    if m.format_version() != FormatVersion::V2 {
        return Err(StageError::Unsupported(format!(
            "appends are written for format version 2 tables, not {:?}",
            m.format_version()
        )));
    }
    if let Some(f) = append
        .files
        .iter()
        .find(|f| f.content_type() != DataContentType::Data)
    {
        return Err(StageError::Unsupported(format!(
            "only data files are appended, not {}",
            f.file_path()
        )));
    }
    let snapshot_id = new_snapshot_id(m);
    let sequence_number = m.next_sequence_number();
    let base = m.current_snapshot();
    let spec = m.default_partition_spec().as_ref().clone();

    let mut summary = SnapshotSummaryCollector::default();
    for f in &append.files {
        summary.add_file(
            f,
            m.current_schema().clone(),
            m.default_partition_spec().clone(),
        );
    }
    let added = (
        append.files.len(),
        append.files.iter().map(DataFile::record_count).sum::<u64>(),
        append
            .files
            .iter()
            .map(DataFile::file_size_in_bytes)
            .sum::<u64>(),
    );

    // The new files, one manifest per group, newest first like Java's list.
    let mut new_manifests = Vec::new();
    let mut by_group: Vec<(Option<Vec<u8>>, Vec<DataFile>)> = Vec::new();
    for f in append.files {
        let key = first_partition_value(&spec, &f);
        match by_group.iter_mut().find(|(k, _)| *k == key) {
            Some((_, files)) => files.push(f),
            None => by_group.push((key, vec![f])),
        }
    }
    for (_, files) in by_group {
        let mut writer = ManifestWriterBuilder::new(
            table
                .file_io()
                .new_output(metadata_file(m, "k2-append-m"))?,
            Some(snapshot_id),
            m.current_schema().clone(),
            spec.clone(),
        )
        .build_v2_data();
        // What reading the manifest back would give (ADDED, this snapshot, inherited
        // sequence numbers), kept only when someone will ask.
        let entries: Vec<ManifestEntry> = match written {
            Some(_) => files
                .iter()
                .map(|f| {
                    ManifestEntry::builder()
                        .status(ManifestStatus::Added)
                        .snapshot_id(snapshot_id)
                        .sequence_number(sequence_number)
                        .file_sequence_number(sequence_number)
                        .data_file(f.clone())
                        .build()
                })
                .collect(),
            None => Vec::new(),
        };
        for f in files {
            writer.add_file(f, sequence_number)?;
        }
        let mf = writer.write_manifest_file().await?;
        if let Some(w) = written {
            w.insert(mf.manifest_path.clone(), entries);
        }
        new_manifests.push(mf);
    }

    let existing: Vec<ManifestFile> = match base {
        Some(base) => table
            .manifest_list_reader(base)
            .load()
            .await?
            .entries()
            .iter()
            .filter(|mf| mf.has_added_files() || mf.has_existing_files())
            .cloned()
            .collect(),
        None => Vec::new(),
    };
    let new_paths: Vec<String> = new_manifests
        .iter()
        .map(|mf| mf.manifest_path.clone())
        .collect();
    let mut manifests = new_manifests;
    manifests.extend(existing);
    let manifests = if merge.enabled {
        merged(table, manifests, &new_paths, snapshot_id, merge, written).await?
    } else {
        manifests
    };

    let list_path = manifest_list_path(m, snapshot_id);
    let mut list = ManifestListWriter::v2(
        table.file_io().new_output(&list_path)?.writer().await?,
        snapshot_id,
        base.map(|b| b.snapshot_id()),
        sequence_number,
    );
    list.add_manifests(manifests.into_iter())?;
    list.close().await?;

    let mut properties = append.properties;
    properties.extend(summary.build());
    properties.extend(totals(
        base.map(|b| &b.summary().additional_properties),
        added,
        (0, 0, 0),
    ));
    let snapshot = Snapshot::builder()
        .with_snapshot_id(snapshot_id)
        .with_parent_snapshot_id(base.map(|b| b.snapshot_id()))
        .with_sequence_number(sequence_number)
        .with_timestamp_ms(append.timestamp_ms.max(m.last_updated_ms()))
        .with_manifest_list(list_path)
        .with_schema_id(m.current_schema_id())
        .with_summary(Summary {
            operation: Operation::Append,
            additional_properties: properties,
        })
        .build();
    Ok(Staged {
        snapshot_id,
        updates: vec![
            TableUpdate::AddSnapshot { snapshot },
            TableUpdate::SetSnapshotRef {
                ref_name: iceberg::spec::MAIN_BRANCH.to_string(),
                reference: SnapshotReference::new(
                    snapshot_id,
                    SnapshotRetention::branch(None, None, None),
                ),
            },
        ],
        requirements: vec![
            TableRequirement::UuidMatch { uuid: m.uuid() },
            TableRequirement::RefSnapshotIdMatch {
                r#ref: iceberg::spec::MAIN_BRANCH.to_string(),
                snapshot_id: base.map(|b| b.snapshot_id()),
            },
        ],
    })
}

/// The serialized value of the spec's first partition field for a data file, the grouping
/// key of its manifest.
fn first_partition_value(spec: &PartitionSpec, f: &DataFile) -> Option<Vec<u8>> {
    if spec.fields().is_empty() {
        return None;
    }
    let field = f.partition().fields().first()?.as_ref()?;
    Some(format!("{field:?}").into_bytes())
}

/// A partition spec, and the serialised value of its first partition field if single.
type GroupKey = (i32, Option<Vec<u8>>);

/// The grouping key of a manifest: its spec, and the single value of the spec's first
/// partition field when all its entries share one (from the manifest's partition summary).
fn group_key(mf: &ManifestFile) -> GroupKey {
    let single = mf
        .partitions
        .as_ref()
        .and_then(|p| p.first())
        .filter(|s| !s.contains_null && s.lower_bound.is_some() && s.lower_bound == s.upper_bound)
        .and_then(|s| s.lower_bound.as_ref().map(|b| b.to_vec()));
    (mf.partition_spec_id, single)
}

/// `manifests` (newest first; the first `new` of them written by this commit) with every
/// bin the policy merges rewritten as one manifest. Order is kept.
async fn merged(
    table: &Table,
    manifests: Vec<ManifestFile>,
    new_paths: &[String],
    snapshot_id: i64,
    policy: ManifestMerge,
    written: Option<&WrittenManifests>,
) -> Result<Vec<ManifestFile>, StageError> {
    // Groups in order of first appearance, each newest first.
    let mut groups: Vec<(GroupKey, Vec<ManifestFile>)> = Vec::new();
    for mf in manifests {
        // A new manifest's partition summary is that of its group by construction.
        let key = group_key(&mf);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, g)) => g.push(mf),
            None => groups.push((key, vec![mf])),
        }
    }
    let mut out = Vec::new();
    for ((spec_id, _), group) in groups {
        for (bin, merge) in bins(group, new_paths, policy) {
            if !merge {
                out.extend(bin);
            } else {
                // A merge is the one step of an append whose cost grows with the bin (up to
                // the target size): logged, so a slow commit can be told from a slow store.
                let started = std::time::Instant::now();
                let merged = merge_bin(table, &bin, spec_id, snapshot_id, written).await?;
                tracing::info!(
                    manifests = bin.len(),
                    bytes = bin.iter().map(|mf| mf.manifest_length.max(0)).sum::<i64>(),
                    entries = merged.existing_files_count.unwrap_or(0)
                        + merged.added_files_count.unwrap_or(0),
                    seconds = started.elapsed().as_secs_f64(),
                    "manifests merged"
                );
                out.push(merged);
                // This commit's own manifest, merged before any list named it: nothing
                // references it, now or ever.
                for mf in bin
                    .iter()
                    .filter(|mf| new_paths.contains(&mf.manifest_path))
                {
                    if let Err(e) = table.file_io().delete(&mf.manifest_path).await {
                        tracing::debug!(path = %mf.manifest_path, error = %e, "deleting a manifest merged at once failed; orphan cleanup will");
                    }
                }
            }
        }
    }
    Ok(out)
}

/// A group's manifests in bins, each with whether it is merged now; order kept.
///
/// A group this commit does not append to (a day no longer written) is merged as Java
/// merges it: every bin of several manifests, once.
///
/// In a group this commit appends to, only young manifests merge (under half the target
/// size: one-commit manifests and small merges of them); a settled one stays as it is.
/// Java packs the whole group, and two things go wrong at short commit intervals. Its rule
/// (merge every bin but the newest one below `min-count`) rewrites a full manifest for the
/// one small manifest that spilled beside it, commit after commit (`bench/soak`, 4a4a2b4).
/// Waiting for `min-count` in every bin instead leaves the small manifests packed beside a
/// full one unmerged for as long as the day is written — about 20 in every 300 commits,
/// each with its entries held for merging (`bench/soak`, a1950ab). Packing only the young
/// avoids both: the newest young bin merges at `min-count`, an older one (full by
/// construction) at once, and the result is soon settled.
fn bins(
    group: Vec<ManifestFile>,
    new_paths: &[String],
    policy: ManifestMerge,
) -> Vec<(Vec<ManifestFile>, bool)> {
    let target = policy.target_size_bytes;
    if !group.iter().any(|mf| new_paths.contains(&mf.manifest_path)) {
        return pack_end(group, target)
            .into_iter()
            .map(|bin| {
                let merge = bin.len() > 1;
                (bin, merge)
            })
            .collect();
    }
    let settled = |mf: &ManifestFile| mf.manifest_length.max(0) as u64 >= target / 2;
    let young: Vec<ManifestFile> = group.iter().filter(|mf| !settled(mf)).cloned().collect();
    // Newest first, so the first bin is the under-filled one the next commits fill.
    let mut young_bins: Vec<Option<(Vec<ManifestFile>, bool)>> = pack_end(young, target)
        .into_iter()
        .enumerate()
        .map(|(i, bin)| {
            let merge = bin.len() > 1 && (i > 0 || bin.len() >= policy.min_count_to_merge);
            Some((bin, merge))
        })
        .collect();
    let bin_of: HashMap<String, usize> = young_bins
        .iter()
        .enumerate()
        .filter_map(|(i, b)| Some((b.as_ref()?.0.first()?.manifest_path.clone(), i)))
        .collect();
    // A settled manifest where it was, a bin of young ones where its newest member was.
    let mut out = Vec::new();
    for mf in group {
        if settled(&mf) {
            out.push((vec![mf], false));
        } else if let Some(bin) = bin_of
            .get(&mf.manifest_path)
            .and_then(|&i| young_bins[i].take())
        {
            out.push(bin);
        }
    }
    out
}

/// Java's `ListPacker.packEnd` with a lookback of 1: `items` packed greedily from the end
/// into bins of at most `target` bytes (an item larger than that alone), bins and items
/// returned in the original order. The under-filled bin is then the newest one, which the
/// next commits fill.
fn pack_end(items: Vec<ManifestFile>, target: u64) -> Vec<Vec<ManifestFile>> {
    let mut bins: Vec<Vec<ManifestFile>> = Vec::new();
    let mut weight = 0u64;
    for item in items.into_iter().rev() {
        let w = item.manifest_length.max(0) as u64;
        match bins.last_mut() {
            Some(bin) if weight + w <= target => {
                bin.push(item);
                weight += w;
            }
            _ => {
                bins.push(vec![item]);
                weight = w;
            }
        }
    }
    for bin in &mut bins {
        bin.reverse();
    }
    bins.reverse();
    bins
}

/// One manifest with the live entries of `bin`. The writer holds every entry until it
/// writes, so the bin's manifests are read one at a time and their entries moved into it:
/// a merge then holds the bin's entries once, not twice (a bin is up to the target size of
/// Avro, several times that decoded — the sink's largest transient allocation). Manifests
/// this process wrote come from `written` instead of storage.
async fn merge_bin(
    table: &Table,
    bin: &[ManifestFile],
    spec_id: i32,
    snapshot_id: i64,
    written: Option<&WrittenManifests>,
) -> Result<ManifestFile, StageError> {
    let m = table.metadata();
    let spec = m.partition_spec_by_id(spec_id).ok_or_else(|| {
        StageError::Unsupported(format!(
            "a manifest names partition spec {spec_id}, which the table does not have"
        ))
    })?;
    let mut writer = ManifestWriterBuilder::new(
        table
            .file_io()
            .new_output(metadata_file(m, "k2-merged-m"))?,
        Some(snapshot_id),
        m.current_schema().clone(),
        spec.as_ref().clone(),
    )
    .build_v2_data();
    for mf in bin {
        let entries = match written.and_then(|w| w.take(&mf.manifest_path)) {
            Some(entries) => entries,
            None => {
                let (entries, _) = mf.load_manifest(table.file_io()).await?.into_parts();
                // Freshly read, so nothing else holds an entry: moved, not copied.
                entries
                    .into_iter()
                    .map(|e| Arc::try_unwrap(e).unwrap_or_else(|shared| (*shared).clone()))
                    .collect()
            }
        };
        for entry in entries {
            if !entry.is_alive() {
                continue;
            }
            let Some(seq) = entry.sequence_number else {
                return Err(missing_sequence(entry.file_path()));
            };
            match entry.snapshot_id {
                Some(id) if id == snapshot_id => writer.add_file(entry.data_file, seq)?,
                Some(id) => writer.add_existing_file(
                    entry.data_file,
                    id,
                    seq,
                    entry.file_sequence_number,
                )?,
                None => return Err(missing_sequence(entry.file_path())),
            }
        }
    }
    Ok(writer.write_manifest_file().await?)
}

fn missing_sequence(path: &str) -> StageError {
    iceberg::Error::new(
        ErrorKind::DataInvalid,
        format!("manifest entry of {path} lacks its snapshot or sequence number"),
    )
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(path: &str, length: i64) -> ManifestFile {
        ManifestFile {
            manifest_path: path.to_string(),
            manifest_length: length,
            partition_spec_id: 0,
            content: iceberg::spec::ManifestContentType::Data,
            sequence_number: 1,
            min_sequence_number: 1,
            added_snapshot_id: 1,
            added_files_count: Some(1),
            existing_files_count: Some(0),
            deleted_files_count: Some(0),
            added_rows_count: Some(1),
            existing_rows_count: Some(0),
            deleted_rows_count: Some(0),
            partitions: None,
            key_metadata: None,
            first_row_id: None,
        }
    }

    fn paths(bins: &[Vec<ManifestFile>]) -> Vec<Vec<&str>> {
        bins.iter()
            .map(|b| b.iter().map(|m| m.manifest_path.as_str()).collect())
            .collect()
    }

    #[test]
    fn bins_are_packed_from_the_oldest_end_and_keep_their_order() {
        // Newest first: n (new), a, b, c (oldest).
        let items = vec![
            manifest("n", 3),
            manifest("a", 4),
            manifest("b", 5),
            manifest("c", 5),
        ];
        let bins = pack_end(items, 10);
        assert_eq!(paths(&bins), [vec!["n", "a"], vec!["b", "c"]]);
        // One larger than the target stands alone.
        let bins = pack_end(
            vec![manifest("n", 1), manifest("big", 50), manifest("c", 1)],
            10,
        );
        assert_eq!(paths(&bins), [vec!["n"], vec!["big"], vec!["c"]]);
    }

    fn policy(target: u64, min_count: usize) -> ManifestMerge {
        ManifestMerge {
            enabled: true,
            target_size_bytes: target,
            min_count_to_merge: min_count,
        }
    }

    fn decided(items: Vec<ManifestFile>, policy: ManifestMerge) -> Vec<(String, bool)> {
        bins(items, &["n".to_string()], policy)
            .into_iter()
            .map(|(bin, merge)| (paths(&[bin])[0].join(","), merge))
            .collect()
    }

    fn owned(v: &[(&str, bool)]) -> Vec<(String, bool)> {
        v.iter().map(|(p, m)| (p.to_string(), *m)).collect()
    }

    #[test]
    fn a_group_being_appended_to_merges_only_its_young_manifests() {
        let policy = policy(100, 3);
        // The new manifest beside an almost full merged one: nothing is rewritten for it,
        // where Java would rewrite the full one.
        let spilled = vec![manifest("n", 5), manifest("prev", 5), manifest("full", 92)];
        assert_eq!(
            decided(spilled, policy),
            owned(&[("n,prev", false), ("full", false)])
        );
        // The young reaching min-count merge, whatever settled manifests lie between them.
        let due = vec![
            manifest("n", 5),
            manifest("a", 5),
            manifest("full", 92),
            manifest("b", 5),
        ];
        assert_eq!(
            decided(due, policy),
            owned(&[("n,a,b", true), ("full", false)])
        );
        // A full bin of young ones (larger than one min-count's worth) merges at once.
        let many = vec![manifest("n", 30), manifest("a", 40), manifest("b", 40)];
        assert_eq!(decided(many, policy), owned(&[("n", false), ("a,b", true)]));
        // A group this commit does not append to (a day no longer written): merged now.
        let closed = vec![manifest("prev", 5), manifest("full", 92)];
        assert_eq!(decided(closed, policy), owned(&[("prev,full", true)]));
    }

    /// A day written by one-commit manifests: the list a commit reads stays within one
    /// settled manifest per `target/2` of entries plus `min-count` young ones, and every
    /// one-commit manifest is merged within `min-count` commits of being written.
    #[test]
    fn a_day_of_small_commits_keeps_its_list_bounded_and_merges_every_manifest() {
        let policy = policy(1 << 20, 100);
        let (small, per_entry, header) = (7_500i64, 800i64, 6_000i64);
        // Oldest-first commit numbers of what each listed manifest holds.
        let mut list: Vec<(ManifestFile, Vec<u32>)> = Vec::new();
        let mut longest_wait = 0;
        for commit in 0..20_000u32 {
            let mut group = vec![manifest(&format!("c{commit}"), small)];
            group.extend(list.iter().map(|(m, _)| m.clone()));
            let mut held: HashMap<String, Vec<u32>> =
                list.drain(..).map(|(m, c)| (m.manifest_path, c)).collect();
            held.insert(format!("c{commit}"), vec![commit]);
            for (i, (bin, merge)) in bins(group, &[format!("c{commit}")], policy)
                .into_iter()
                .enumerate()
            {
                if merge {
                    let commits: Vec<u32> = bin
                        .iter()
                        .flat_map(|m| held.remove(&m.manifest_path).unwrap())
                        .collect();
                    let len = header + per_entry * commits.len() as i64;
                    list.push((manifest(&format!("m{commit}-{i}"), len), commits));
                } else {
                    for m in bin {
                        let c = held.remove(&m.manifest_path).unwrap();
                        if c.len() == 1 {
                            longest_wait = longest_wait.max(commit - c[0]);
                        }
                        list.push((m, c));
                    }
                }
            }
            let settled = list
                .iter()
                .filter(|(m, _)| m.manifest_length as u64 >= policy.target_size_bytes / 2)
                .count();
            let entries: usize = list.iter().map(|(_, c)| c.len()).sum();
            assert_eq!(entries, commit as usize + 1, "every commit listed once");
            let bound = entries / ((policy.target_size_bytes / 2) as usize / per_entry as usize)
                + policy.min_count_to_merge
                + 4;
            assert!(
                list.len() <= bound,
                "commit {commit}: {} manifests listed ({settled} settled), bound {bound}",
                list.len()
            );
        }
        assert!(
            longest_wait < 100,
            "a one-commit manifest waited {longest_wait} commits"
        );
    }

    #[test]
    fn the_policy_comes_from_iceberg_table_properties() {
        assert_eq!(
            ManifestMerge::default(),
            ManifestMerge {
                enabled: true,
                target_size_bytes: 8 << 20,
                min_count_to_merge: 100
            }
        );
    }
}
