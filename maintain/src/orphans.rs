//! Cleanup of files no snapshot references: data files and manifests of expired snapshots,
//! files written by a commit that never landed (a crash, a fenced writer, an abandoned
//! compaction), metadata files dropped from the metadata log.
//!
//! Safe beside live writers because of one rule on both sides: a file is deleted only when
//! it is older than `maintenance.orphan_min_age`, and writers never commit a file older than
//! half of that (the sink writes a commit's files again if its retries took that long).
//! The listing comes first and the table's metadata is read after it, so every listed file
//! committed before the read is seen as referenced; any error while reading what is
//! referenced stops the table's cleanup before anything is deleted.

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use iceberg::table::Table;
use iceberg::{Catalog, TableIdent};
use k2_common::config::K2Config;
use k2_common::warehouse::{Located, canonical_uri, locate};
use object_store::ObjectMeta;

use crate::{MaintainError, retry};

/// Deletions in flight at once.
const CONCURRENT_DELETES: usize = 16;

/// What cleanup found under one table (and deleted, unless a dry run).
#[derive(Debug, Clone, Default)]
pub struct Cleaned {
    pub table: String,
    /// Files under the table's location.
    pub listed: usize,
    pub referenced: usize,
    /// Unreferenced files younger than the minimum age: left alone.
    pub young: usize,
    /// Unreferenced files old enough, deleted (or that would be): URI and size.
    pub orphans: Vec<(String, u64)>,
    pub dry_run: bool,
}

impl Cleaned {
    pub fn orphan_bytes(&self) -> u64 {
        self.orphans.iter().map(|(_, b)| b).sum()
    }
}

impl fmt::Display for Cleaned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.dry_run {
            "would be deleted"
        } else {
            "deleted"
        };
        write!(
            f,
            "{}: {} files, {} referenced, {} unreferenced {verb} ({} bytes), {} unreferenced but \
             younger than the minimum age",
            self.table,
            self.listed,
            self.referenced,
            self.orphans.len(),
            self.orphan_bytes(),
            self.young
        )
    }
}

/// Deletes the files under `ident`'s location that no snapshot or metadata file references
/// and that are older than `min_age` at `now`.
pub async fn clean(
    config: &K2Config,
    catalog: &dyn Catalog,
    ident: &TableIdent,
    min_age: Duration,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<Cleaned, MaintainError> {
    let name = ident.to_string();
    let before = retry::catalog(&name, "loading the table", || catalog.load_table(ident)).await?;
    let located = locate(config, before.metadata().location())?;
    let listed: Vec<ObjectMeta> = located
        .store
        .list(Some(&located.prefix))
        .try_collect()
        .await
        .map_err(|e| {
            storage(
                &name,
                format!("listing {}", located.uri(&located.prefix)),
                e,
            )
        })?;
    // Read after listing: whatever was committed before this read is referenced here.
    let table = retry::catalog(&name, "loading the table", || catalog.load_table(ident)).await?;
    let referenced = retry::catalog(&name, "reading the files its snapshots reference", || {
        referenced_files(&table)
    })
    .await?;
    let listed_uris: HashSet<String> = listed
        .iter()
        .map(|o| canonical_uri(&located.uri(&o.location)))
        .collect();
    must_be_listed(&name, &before, &listed_uris)?;
    let cutoff = now - chrono::Duration::from_std(min_age).unwrap_or(chrono::Duration::MAX);
    let mut cleaned = Cleaned {
        table: name.clone(),
        listed: listed.len(),
        dry_run,
        ..Default::default()
    };
    let mut doomed = Vec::new();
    for object in listed {
        let uri = canonical_uri(&located.uri(&object.location));
        if referenced.contains(&uri) {
            cleaned.referenced += 1;
        } else if object.last_modified > cutoff {
            cleaned.young += 1;
        } else {
            cleaned.orphans.push((uri, object.size));
            doomed.push(object.location);
        }
    }
    if !dry_run {
        delete(&located, &name, doomed).await?;
    }
    tracing::info!(
        table = %name,
        listed = cleaned.listed,
        referenced = cleaned.referenced,
        orphans = cleaned.orphans.len(),
        bytes = cleaned.orphan_bytes(),
        young = cleaned.young,
        dry_run,
        "orphan cleanup"
    );
    Ok(cleaned)
}

/// Files that existed before the listing began (the metadata file and manifest list current
/// then) must be in it. If they are not, the listing and the metadata name files
/// differently (or the listing is incomplete), and every referenced file could look like an
/// orphan: nothing is deleted.
fn must_be_listed(
    table: &str,
    before: &Table,
    listed: &HashSet<String>,
) -> Result<(), MaintainError> {
    let m = before.metadata();
    let expected = before
        .metadata_location()
        .into_iter()
        .chain(m.current_snapshot().map(|s| s.manifest_list()));
    for file in expected {
        if !listed.contains(&canonical_uri(file)) {
            return Err(MaintainError::Table {
                table: table.to_string(),
                message: format!(
                    "the listing of {} does not show {file}, which the table references: \
                     deleting nothing",
                    m.location()
                ),
            });
        }
    }
    Ok(())
}

async fn delete(
    located: &Located,
    table: &str,
    paths: Vec<object_store::path::Path>,
) -> Result<(), MaintainError> {
    futures::stream::iter(paths)
        .map(|p| async move {
            match located.store.delete(&p).await {
                // Gone already (another cleanup run): what was wanted.
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(storage(table, format!("deleting {}", located.uri(&p)), e)),
            }
        })
        .buffer_unordered(CONCURRENT_DELETES)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

fn storage(table: &str, what: String, e: object_store::Error) -> MaintainError {
    MaintainError::Storage {
        table: table.to_string(),
        what,
        error: Box::new(e),
    }
}

/// Every file the table's current metadata reaches, as canonical URIs: the metadata file
/// and those in its log, each snapshot's manifest list, the manifests in them and the
/// live data and delete files of those manifests, and statistics files.
pub async fn referenced_files(table: &Table) -> iceberg::Result<HashSet<String>> {
    let m = table.metadata();
    let mut files = HashSet::new();
    let mut add = |f: &str| files.insert(canonical_uri(f));
    if let Some(current) = table.metadata_location() {
        add(current);
    }
    for log in m.metadata_log() {
        add(&log.metadata_file);
    }
    for s in m.statistics_iter() {
        add(&s.statistics_path);
    }
    for s in m.partition_statistics_iter() {
        add(&s.statistics_path);
    }
    // Snapshots share most manifests: read each once.
    let mut manifests = HashSet::new();
    for snapshot in m.snapshots() {
        add(snapshot.manifest_list());
        let list = table.manifest_list_reader(snapshot).load().await?;
        for manifest_file in list.entries() {
            if !manifests.insert(manifest_file.manifest_path.clone()) {
                continue;
            }
            add(&manifest_file.manifest_path);
            let manifest = manifest_file.load_manifest(table.file_io()).await?;
            for entry in manifest.entries() {
                if entry.is_alive() {
                    add(entry.file_path());
                }
            }
        }
    }
    Ok(files)
}
