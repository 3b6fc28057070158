//! The replace commit: one snapshot, operation `replace`, that removes a set of data files
//! and adds the files their rows were rewritten into, atomically.
//!
//! iceberg-rust 0.10 has no rewrite action, and its `TableCommit` cannot be built outside
//! the crate, so K2 stages the snapshot from the crate's public pieces (manifest writers,
//! the manifest list writer, the metadata builder) and commits the new metadata through the
//! catalog's own compare-and-swap ([`crate::commit_metadata`]). The requirements are the
//! ones a rewrite needs: same table, and `main` still at the snapshot the rewrite was
//! planned on; any other commit in between (a sink append) makes this one conflict, and
//! the caller stages it again on the new head. ADR-20 says why; this module is the one to
//! swap for the upstream action when it ships.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use iceberg::spec::{
    DataContentType, DataFile, FormatVersion, Manifest, ManifestFile, ManifestListWriter,
    ManifestWriterBuilder, Operation, Snapshot, SnapshotReference, SnapshotRetention, Summary,
};
use iceberg::table::Table;
use iceberg::{ErrorKind, TableRequirement, TableUpdate};

/// Why a rewrite cannot be staged on the table as it is.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(
        "{0} is no longer in the table (compacted or removed by another writer); the rewrite is abandoned"
    )]
    InputGone(String),
    #[error("{0}")]
    Unsupported(String),
    #[error(transparent)]
    Iceberg(#[from] iceberg::Error),
}

/// Manifests already read, by path: a manifest file never changes once written, and the
/// partitions of one run are staged over mostly the same manifests.
#[derive(Default)]
pub struct ManifestCache(HashMap<String, Arc<Manifest>>);

impl ManifestCache {
    async fn load(&mut self, table: &Table, file: &ManifestFile) -> iceberg::Result<Arc<Manifest>> {
        if let Some(m) = self.0.get(&file.manifest_path) {
            return Ok(m.clone());
        }
        let m = Arc::new(file.load_manifest(table.file_io()).await?);
        self.0.insert(file.manifest_path.clone(), m.clone());
        Ok(m)
    }
}

/// A snapshot ready to commit: what the metadata gains and what must still hold.
pub struct Staged {
    pub snapshot_id: i64,
    pub updates: Vec<TableUpdate>,
    pub requirements: Vec<TableRequirement>,
}

/// Stages the replacement of `removed` (data file paths, all live in the current snapshot)
/// by `added` on `table`'s current snapshot: a manifest of the added files, the manifests
/// that listed a removed file written again (the removed as deleted, the rest as existing,
/// with their original sequence numbers), every other manifest carried over as it is.
pub async fn stage(
    table: &Table,
    removed: &HashSet<String>,
    added: Vec<DataFile>,
    manifests_read: &mut ManifestCache,
) -> Result<Staged, StageError> {
    let m = table.metadata();
    if m.format_version() != FormatVersion::V2 {
        return Err(StageError::Unsupported(format!(
            "replace commits are written for format version 2 tables, not {:?}",
            m.format_version()
        )));
    }
    let base = m
        .current_snapshot()
        .ok_or_else(|| StageError::Unsupported("the table has no snapshot".into()))?;
    let snapshot_id = loop {
        let id = (uuid::Uuid::new_v4().as_u64_pair().0 & i64::MAX as u64) as i64;
        if id != 0 && m.snapshot_by_id(id).is_none() {
            break id;
        }
    };
    let sequence_number = m.next_sequence_number();
    let schema = m.current_schema().clone();
    let file_io = table.file_io();
    let manifest_path = |n: usize| {
        format!(
            "{}/metadata/{}-k2-replace-m{n}.avro",
            m.location(),
            uuid::Uuid::new_v4()
        )
    };

    let mut manifests: Vec<ManifestFile> = Vec::new();
    // The manifests that list a replaced file are merged into one per partition spec: the
    // replaced files as deleted, the others as existing. Merging (rather than one new
    // manifest per old one) makes each compaction shrink the manifest list.
    let mut merged: HashMap<i32, iceberg::spec::ManifestWriter> = HashMap::new();
    let mut found = HashSet::new();
    let (mut deleted_rows, mut deleted_bytes) = (0u64, 0u64);
    let list = table.manifest_list_reader(base).load().await?;
    for manifest_file in list.entries() {
        let manifest = manifests_read.load(table, manifest_file).await?;
        let touched = manifest
            .entries()
            .iter()
            .any(|e| e.is_alive() && removed.contains(e.file_path()));
        if !touched {
            manifests.push(manifest_file.clone());
            continue;
        }
        let spec_id = manifest_file.partition_spec_id;
        let writer = match merged.entry(spec_id) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let spec = m.partition_spec_by_id(spec_id).ok_or_else(|| {
                    StageError::Unsupported(format!(
                        "manifest {} names partition spec {spec_id} the table does not have",
                        manifest_file.manifest_path
                    ))
                })?;
                v.insert(
                    ManifestWriterBuilder::new(
                        file_io.new_output(manifest_path(spec_id as usize + 1))?,
                        Some(snapshot_id),
                        schema.clone(),
                        spec.as_ref().clone(),
                    )
                    .build_v2_data(),
                )
            }
        };
        for entry in manifest.entries() {
            if !entry.is_alive() {
                // Deleted in an earlier snapshot: a rewritten manifest drops it.
                continue;
            }
            let file = entry.data_file().clone();
            let (Some(added_in), Some(seq)) = (entry.snapshot_id, entry.sequence_number) else {
                return Err(iceberg::Error::new(
                    ErrorKind::DataInvalid,
                    format!(
                        "manifest entry of {} lacks its snapshot or sequence number",
                        entry.file_path()
                    ),
                )
                .into());
            };
            if removed.contains(entry.file_path()) {
                found.insert(entry.file_path().to_string());
                deleted_rows += file.record_count();
                deleted_bytes += file.file_size_in_bytes();
                writer.add_delete_file(file, seq, entry.file_sequence_number)?;
            } else {
                writer.add_existing_file(file, added_in, seq, entry.file_sequence_number)?;
            }
        }
    }
    for (_, writer) in merged {
        manifests.push(writer.write_manifest_file().await?);
    }
    if let Some(gone) = removed.iter().find(|p| !found.contains(*p)) {
        return Err(StageError::InputGone(gone.clone()));
    }
    for f in &added {
        if f.content_type() != DataContentType::Data {
            return Err(StageError::Unsupported("only data files are added".into()));
        }
    }

    let (added_rows, added_bytes, added_files) = (
        added.iter().map(DataFile::record_count).sum::<u64>(),
        added.iter().map(DataFile::file_size_in_bytes).sum::<u64>(),
        added.len(),
    );
    if !added.is_empty() {
        let mut writer = ManifestWriterBuilder::new(
            file_io.new_output(manifest_path(0))?,
            Some(snapshot_id),
            schema.clone(),
            m.default_partition_spec().as_ref().clone(),
        )
        .build_v2_data();
        for f in added {
            writer.add_file(f, sequence_number)?;
        }
        manifests.insert(0, writer.write_manifest_file().await?);
    }

    let list_path = format!(
        "{}/metadata/snap-{snapshot_id}-0-{}.avro",
        m.location(),
        uuid::Uuid::new_v4()
    );
    let mut list = ManifestListWriter::v2(
        file_io.new_output(&list_path)?.writer().await?,
        snapshot_id,
        Some(base.snapshot_id()),
        sequence_number,
    );
    list.add_manifests(manifests.into_iter())?;
    list.close().await?;

    let summary = Summary {
        operation: Operation::Replace,
        additional_properties: summary(
            &base.summary().additional_properties,
            (added_files, added_rows, added_bytes),
            (removed.len(), deleted_rows, deleted_bytes),
        ),
    };
    let snapshot = Snapshot::builder()
        .with_snapshot_id(snapshot_id)
        .with_parent_snapshot_id(Some(base.snapshot_id()))
        .with_sequence_number(sequence_number)
        .with_timestamp_ms(
            chrono::Utc::now()
                .timestamp_millis()
                .max(m.last_updated_ms()),
        )
        .with_manifest_list(list_path)
        .with_schema_id(m.current_schema_id())
        .with_summary(summary)
        .build();
    Ok(Staged {
        snapshot_id,
        updates: vec![
            TableUpdate::AddSnapshot { snapshot },
            TableUpdate::SetSnapshotRef {
                ref_name: "main".into(),
                reference: SnapshotReference::new(
                    snapshot_id,
                    SnapshotRetention::branch(None, None, None),
                ),
            },
        ],
        requirements: vec![
            TableRequirement::UuidMatch { uuid: m.uuid() },
            TableRequirement::RefSnapshotIdMatch {
                r#ref: "main".into(),
                snapshot_id: Some(base.snapshot_id()),
            },
        ],
    })
}

/// The snapshot summary of a replace: what was added and deleted, and the table totals
/// carried over from the parent's summary (unchanged rows, changed file counts).
fn summary(
    parent: &HashMap<String, String>,
    (added_files, added_rows, added_bytes): (usize, u64, u64),
    (deleted_files, deleted_rows, deleted_bytes): (usize, u64, u64),
) -> HashMap<String, String> {
    let mut s = HashMap::from([
        ("added-data-files".to_string(), added_files.to_string()),
        ("added-records".to_string(), added_rows.to_string()),
        ("added-files-size".to_string(), added_bytes.to_string()),
        ("deleted-data-files".to_string(), deleted_files.to_string()),
        ("deleted-records".to_string(), deleted_rows.to_string()),
        ("removed-files-size".to_string(), deleted_bytes.to_string()),
        ("k2.operation".to_string(), "compaction".to_string()),
    ]);
    let total = |key: &str, add: u64, remove: u64| {
        let before: u64 = parent.get(key)?.parse().ok()?;
        Some((before + add).saturating_sub(remove).to_string())
    };
    for (key, add, remove) in [
        ("total-records", added_rows, deleted_rows),
        ("total-data-files", added_files as u64, deleted_files as u64),
        ("total-files-size", added_bytes, deleted_bytes),
    ] {
        if let Some(v) = total(key, add, remove) {
            s.insert(key.to_string(), v);
        }
    }
    for key in [
        "total-delete-files",
        "total-position-deletes",
        "total-equality-deletes",
    ] {
        if let Some(v) = parent.get(key) {
            s.insert(key.to_string(), v.clone());
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replace_summary_keeps_totals_right() {
        let parent = HashMap::from([
            ("total-records".to_string(), "1000".to_string()),
            ("total-data-files".to_string(), "12".to_string()),
            ("total-files-size".to_string(), "5000".to_string()),
            ("total-delete-files".to_string(), "0".to_string()),
        ]);
        let s = summary(&parent, (1, 600, 2000), (10, 600, 2600));
        assert_eq!(s["total-records"], "1000");
        assert_eq!(s["total-data-files"], "3");
        assert_eq!(s["total-files-size"], "4400");
        assert_eq!(s["deleted-data-files"], "10");
        assert_eq!(s["total-delete-files"], "0");
    }
}
