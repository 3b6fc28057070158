//! The replace commit: one snapshot, operation `replace`, that removes a set of data files
//! and adds the files their rows were rewritten into, atomically.
//!
//! iceberg-rust 0.10 has no rewrite action, and its `TableCommit` cannot be built outside
//! the crate, so K2 stages the snapshot from the crate's public pieces (manifest writers,
//! the manifest list writer, the metadata builder) and commits the new metadata through the
//! catalog's own compare-and-swap ([`crate::commit`]). The requirements are the
//! ones a rewrite needs: same table, and `main` still at the snapshot the rewrite was
//! planned on; any other commit in between (a sink append) makes this one conflict, and
//! the caller stages it again on the new head. ADR-20 says why; this module is the one to
//! swap for the upstream action when it ships.

use std::collections::{HashMap, HashSet};

use iceberg::spec::{
    DataContentType, DataFile, FormatVersion, ManifestFile, ManifestListWriter,
    ManifestWriterBuilder, Operation, Snapshot, SnapshotReference, SnapshotRetention, Summary,
};
use iceberg::table::Table;
use iceberg::{ErrorKind, TableRequirement, TableUpdate};

use super::{
    ManifestCache, StageError, Staged, manifest_list_path, metadata_file, new_snapshot_id, totals,
};

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
    let properties = HashMap::from([("k2.operation".to_string(), "compaction".to_string())]);
    stage_as(
        table,
        (removed, added),
        (Operation::Replace, properties),
        manifests_read,
    )
    .await
}

/// The same commit with operation `overwrite` (the rows change: a derived table's
/// partition rebuilt) and `properties` in its summary.
pub async fn overwrite(
    table: &Table,
    removed: &HashSet<String>,
    added: Vec<DataFile>,
    properties: HashMap<String, String>,
    manifests_read: &mut ManifestCache,
) -> Result<Staged, StageError> {
    stage_as(
        table,
        (removed, added),
        (Operation::Overwrite, properties),
        manifests_read,
    )
    .await
}

async fn stage_as(
    table: &Table,
    (removed, added): (&HashSet<String>, Vec<DataFile>),
    (operation, properties): (Operation, HashMap<String, String>),
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
    let snapshot_id = new_snapshot_id(m);
    let sequence_number = m.next_sequence_number();
    let schema = m.current_schema().clone();
    let file_io = table.file_io();
    let manifest_path = |n: usize| metadata_file(m, &format!("k2-replace-m{n}"));

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

    let list_path = manifest_list_path(m, snapshot_id);
    let mut list = ManifestListWriter::v2(
        file_io.new_output(&list_path)?.writer().await?,
        snapshot_id,
        Some(base.snapshot_id()),
        sequence_number,
    );
    list.add_manifests(manifests.into_iter())?;
    list.close().await?;

    let mut additional_properties = summary(
        &base.summary().additional_properties,
        (added_files, added_rows, added_bytes),
        (removed.len(), deleted_rows, deleted_bytes),
    );
    additional_properties.extend(properties);
    let summary = Summary {
        operation,
        additional_properties,
    };
    let snapshot = Snapshot::builder()
        .with_snapshot_id(snapshot_id)
        .with_parent_snapshot_id(Some(base.snapshot_id()))
        .with_sequence_number(sequence_number)
        .with_timestamp_ms(crate::clock::now_ms().max(m.last_updated_ms()))
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
    added: (usize, u64, u64),
    deleted: (usize, u64, u64),
) -> HashMap<String, String> {
    let (added_files, added_rows, added_bytes) = added;
    let (deleted_files, deleted_rows, deleted_bytes) = deleted;
    let mut s = HashMap::from([
        ("added-data-files".to_string(), added_files.to_string()),
        ("added-records".to_string(), added_rows.to_string()),
        ("added-files-size".to_string(), added_bytes.to_string()),
        ("deleted-data-files".to_string(), deleted_files.to_string()),
        ("deleted-records".to_string(), deleted_rows.to_string()),
        ("removed-files-size".to_string(), deleted_bytes.to_string()),
    ]);
    s.extend(totals(Some(parent), added, deleted));
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
