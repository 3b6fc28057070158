//! Snapshot expiry: snapshots older than the time-travel window go, the newest
//! `min_snapshots` of each branch stay whatever their age (iceberg-rust's
//! `expire_snapshots` action, committed like any other change). Only metadata changes here;
//! the files that only expired snapshots referenced are left to [`crate::orphans`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::{DateTime, Utc};
use iceberg::spec::TableMetadata;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::{Catalog, TableIdent};
use k2_common::config::MaintenanceConfig;

use crate::{MaintainError, retry};

/// Which snapshots stay: those at or after `keep_from_ms`, and the newest `retain_last` of
/// each branch.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub keep_from_ms: i64,
    pub retain_last: usize,
}

impl Retention {
    pub fn new(config: &MaintenanceConfig, now: DateTime<Utc>) -> Self {
        let window =
            chrono::Duration::from_std(config.snapshot_retention).unwrap_or(chrono::Duration::MAX);
        Retention {
            keep_from_ms: now
                .checked_sub_signed(window)
                .map_or(i64::MIN, |t| t.timestamp_millis()),
            retain_last: config.min_snapshots,
        }
    }
}

/// What expiry did to (or, in a dry run, would do to) one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    pub table: String,
    pub snapshots_before: usize,
    /// Ids of the snapshots removed, ascending.
    pub removed: Vec<i64>,
    pub dry_run: bool,
}

impl fmt::Display for Expired {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.dry_run {
            "would expire"
        } else {
            "expired"
        };
        write!(
            f,
            "{}: {} of {} snapshots {verb}, {} kept",
            self.table,
            self.removed.len(),
            self.snapshots_before,
            self.snapshots_before - self.removed.len()
        )
    }
}

/// Expires the snapshots of `ident` that `retention` lets go.
pub async fn expire(
    catalog: &dyn Catalog,
    ident: &TableIdent,
    retention: Retention,
    dry_run: bool,
) -> Result<Expired, MaintainError> {
    let name = ident.to_string();
    let (before, after) = retry::catalog(&name, "expiring snapshots", || async {
        let table = catalog.load_table(ident).await?;
        let before = snapshot_ids(table.metadata());
        let planned = plan(table.metadata(), retention);
        if dry_run || planned.is_empty() {
            let after = before.difference(&planned).copied().collect();
            return Ok((before, after));
        }
        let tx = Transaction::new(&table);
        let tx = tx
            .expire_snapshots()
            .expire_older_than_ms(retention.keep_from_ms)
            .retain_last(retention.retain_last)
            .apply(tx)?;
        let committed = tx.commit(catalog).await?;
        Ok((before, snapshot_ids(committed.metadata())))
    })
    .await?;
    let expired = Expired {
        table: name,
        snapshots_before: before.len(),
        removed: before.difference(&after).copied().collect(),
        dry_run,
    };
    tracing::info!(
        table = %expired.table,
        removed = expired.removed.len(),
        before = expired.snapshots_before,
        dry_run,
        "snapshot expiry"
    );
    Ok(expired)
}

fn snapshot_ids(m: &TableMetadata) -> BTreeSet<i64> {
    m.snapshots().map(|s| s.snapshot_id()).collect()
}

/// The snapshots `retention` lets go, by the rules of iceberg-rust's action (Java's
/// `RemoveSnapshots`): every ref's head stays; along each branch's ancestry a snapshot stays
/// while fewer than `retain_last` are kept or it is not older than the cutoff; snapshots on
/// no ref's ancestry go once older than the cutoff. Used for the dry run (the action's own
/// plan is private) and to skip a commit that would change nothing.
pub fn plan(m: &TableMetadata, retention: Retention) -> BTreeSet<i64> {
    let mut keep = BTreeSet::new();
    let mut on_a_branch = BTreeSet::new();
    for (head, is_branch) in refs(m) {
        keep.insert(head);
        if !is_branch {
            continue;
        }
        let mut kept = 0;
        let mut at = m.snapshot_by_id(head);
        while let Some(s) = at {
            on_a_branch.insert(s.snapshot_id());
            if kept < retention.retain_last || s.timestamp_ms() >= retention.keep_from_ms {
                keep.insert(s.snapshot_id());
                kept += 1;
            }
            at = s.parent_snapshot_id().and_then(|p| m.snapshot_by_id(p));
        }
    }
    m.snapshots()
        .filter(|s| !keep.contains(&s.snapshot_id()))
        .filter(|s| {
            on_a_branch.contains(&s.snapshot_id()) || s.timestamp_ms() < retention.keep_from_ms
        })
        .map(|s| s.snapshot_id())
        .collect()
}

/// (head snapshot id, is a branch) of every ref. TableMetadata has no accessor for its refs;
/// its serialized form (the metadata file's `refs`) has them all.
fn refs(m: &TableMetadata) -> Vec<(i64, bool)> {
    #[derive(serde::Deserialize)]
    struct Ref {
        #[serde(rename = "snapshot-id")]
        snapshot_id: i64,
        #[serde(rename = "type")]
        kind: String,
    }
    let refs: Option<BTreeMap<String, Ref>> = serde_json::to_value(m)
        .ok()
        .and_then(|v| v.get("refs").cloned())
        .and_then(|r| serde_json::from_value(r).ok());
    match refs {
        Some(refs) if !refs.is_empty() => refs
            .into_values()
            .map(|r| (r.snapshot_id, r.kind == "branch"))
            .collect(),
        _ => m
            .current_snapshot()
            .map(|s| vec![(s.snapshot_id(), true)])
            .unwrap_or_default(),
    }
}
