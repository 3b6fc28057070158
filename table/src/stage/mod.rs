//! Snapshots staged from iceberg-rust's public pieces (manifest writers, the manifest list
//! writer, the metadata updates), to be committed by [`crate::commit`]. iceberg-rust 0.10
//! has no rewrite action and its `TableCommit` cannot be built outside the crate; what is
//! staged here is exactly what its own actions would send.

use std::collections::HashMap;
use std::sync::Arc;

use iceberg::spec::{Manifest, ManifestFile, TableMetadata};
use iceberg::table::Table;
use iceberg::{TableRequirement, TableUpdate};

pub mod append;
pub mod replace;

/// Why a snapshot cannot be staged on the table as it is.
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

/// A snapshot ready to commit: what the metadata gains and what must still hold.
#[derive(Debug)]
pub struct Staged {
    pub snapshot_id: i64,
    pub updates: Vec<TableUpdate>,
    pub requirements: Vec<TableRequirement>,
}

/// Manifests already read, by path: a manifest file never changes once written, and the
/// partitions of one run are staged over mostly the same manifests.
#[derive(Default)]
pub struct ManifestCache(HashMap<String, Arc<Manifest>>);

impl ManifestCache {
    pub async fn load(
        &mut self,
        table: &Table,
        file: &ManifestFile,
    ) -> iceberg::Result<Arc<Manifest>> {
        if let Some(m) = self.0.get(&file.manifest_path) {
            return Ok(m.clone());
        }
        let m = Arc::new(file.load_manifest(table.file_io()).await?);
        self.0.insert(file.manifest_path.clone(), m.clone());
        Ok(m)
    }
}

/// A snapshot id the table does not have yet (random, positive, as iceberg-rust makes them).
pub fn new_snapshot_id(m: &TableMetadata) -> i64 {
    loop {
        let (a, b) = uuid::Uuid::new_v4().as_u64_pair();
        let id = ((a ^ b) & i64::MAX as u64) as i64;
        if id != 0 && m.snapshot_by_id(id).is_none() {
            break id;
        }
    }
}

/// A new file under the table's `metadata/` folder, unique per call.
pub(crate) fn metadata_file(m: &TableMetadata, what: &str) -> String {
    format!(
        "{}/metadata/{}-{what}.avro",
        m.location(),
        uuid::Uuid::new_v4()
    )
}

/// Where a snapshot's manifest list goes (the name iceberg-rust and Java give it).
pub(crate) fn manifest_list_path(m: &TableMetadata, snapshot_id: i64) -> String {
    format!(
        "{}/metadata/snap-{snapshot_id}-0-{}.avro",
        m.location(),
        uuid::Uuid::new_v4()
    )
}

/// The `total-*` entries of a snapshot summary: the parent's totals (none: an empty table)
/// plus what was added minus what was deleted, as (files, rows, bytes). Delete-file totals
/// are carried over (K2 never writes delete files).
pub(crate) fn totals(
    parent: Option<&HashMap<String, String>>,
    (added_files, added_rows, added_bytes): (usize, u64, u64),
    (deleted_files, deleted_rows, deleted_bytes): (usize, u64, u64),
) -> HashMap<String, String> {
    let before = |key: &str| -> Option<u64> {
        match parent {
            None => Some(0),
            Some(p) => p.get(key)?.parse().ok(),
        }
    };
    let mut s = HashMap::new();
    for (key, add, remove) in [
        ("total-records", added_rows, deleted_rows),
        ("total-data-files", added_files as u64, deleted_files as u64),
        ("total-files-size", added_bytes, deleted_bytes),
    ] {
        // A parent without the total (written by a tool that does not keep them) leaves
        // it out rather than guessing.
        if let Some(b) = before(key) {
            s.insert(
                key.to_string(),
                (b + add).saturating_sub(remove).to_string(),
            );
        }
    }
    for key in [
        "total-delete-files",
        "total-position-deletes",
        "total-equality-deletes",
    ] {
        match parent {
            Some(p) => {
                if let Some(v) = p.get(key) {
                    s.insert(key.to_string(), v.clone());
                }
            }
            None => {
                s.insert(key.to_string(), "0".to_string());
            }
        }
    }
    s
}
