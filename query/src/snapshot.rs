//! Snapshot pinning: which snapshot of each table a question reads. The same pin answers
//! the same question identically tomorrow, whatever was appended since.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use iceberg::table::Table;

use crate::error::{QueryError, Result};

/// What instant to read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Pin {
    /// Each table's current snapshot at the time the session is opened.
    #[default]
    Latest,
    /// For every table, the last snapshot committed at or before this instant.
    AsOf(DateTime<Utc>),
    /// Explicit snapshots for some tables (`None`: read the table as empty, as it was
    /// before its first snapshot); the tables not named read their current snapshot.
    Snapshots(BTreeMap<String, Option<i64>>),
}

/// One row of a table's history.
#[derive(Debug, Clone)]
pub struct SnapshotInfo {
    pub snapshot_id: i64,
    pub committed_at: DateTime<Utc>,
    pub operation: String,
    pub added_records: Option<u64>,
    /// The whole summary, including K2's Kafka offsets (`k2.kafka-offsets`).
    pub summary: BTreeMap<String, String>,
}

/// A table with the snapshot to read (`None`: the table has no data at that instant).
#[derive(Debug, Clone)]
pub struct PinnedTable {
    pub table: Table,
    pub snapshot_id: Option<i64>,
}

/// Every table a session reads, each at its pinned snapshot.
#[derive(Debug, Clone, Default)]
pub struct Pinned {
    pub tables: BTreeMap<String, PinnedTable>,
    pub pin: Pin,
}

impl Pinned {
    pub fn snapshot_id(&self, table: &str) -> Option<i64> {
        self.tables.get(table).and_then(|t| t.snapshot_id)
    }
}

/// The history of a table, oldest first, along its current branch's snapshots.
pub fn history(table: &Table) -> Vec<SnapshotInfo> {
    let mut out: Vec<SnapshotInfo> = table
        .metadata()
        .snapshots()
        .map(|s| {
            let summary = s.summary();
            let mut map: BTreeMap<String, String> = summary
                .additional_properties
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            map.insert(
                "operation".into(),
                format!("{:?}", summary.operation).to_lowercase(),
            );
            SnapshotInfo {
                snapshot_id: s.snapshot_id(),
                committed_at: DateTime::from_timestamp_millis(s.timestamp_ms()).unwrap_or_default(),
                operation: format!("{:?}", summary.operation).to_lowercase(),
                added_records: map.get("added-records").and_then(|v| v.parse().ok()),
                summary: map,
            }
        })
        .collect();
    out.sort_by_key(|s| (s.committed_at, s.snapshot_id));
    out
}

/// Resolves the snapshot of `table` for `pin`.
pub fn resolve(name: &str, table: &Table, pin: &Pin) -> Result<Option<i64>> {
    let metadata = table.metadata();
    match pin {
        Pin::Latest => Ok(metadata.current_snapshot().map(|s| s.snapshot_id())),
        Pin::Snapshots(ids) => match ids.get(name) {
            None => Ok(metadata.current_snapshot().map(|s| s.snapshot_id())),
            Some(None) => Ok(None),
            Some(&Some(id)) => metadata
                .snapshot_by_id(id)
                .map(|s| Some(s.snapshot_id()))
                .ok_or(QueryError::UnknownSnapshot {
                    table: name.to_string(),
                    snapshot_id: id,
                }),
        },
        Pin::AsOf(at) => {
            let at_ms = at.timestamp_millis();
            // The snapshot log records when each snapshot became current.
            let mut best: Option<(i64, i64)> = None;
            for entry in metadata.history() {
                if entry.timestamp_ms <= at_ms && best.is_none_or(|(t, _)| entry.timestamp_ms >= t)
                {
                    best = Some((entry.timestamp_ms, entry.snapshot_id));
                }
            }
            Ok(best.map(|(_, id)| id))
        }
    }
}

/// Fails if the instant is before every table's first snapshot: nothing can be read
/// there, which is almost certainly a mistake in the timestamp.
pub fn check_as_of(pinned: &Pinned) -> Result<()> {
    let Pin::AsOf(at) = &pinned.pin else {
        return Ok(());
    };
    let any_pinned = pinned.tables.values().any(|t| t.snapshot_id.is_some());
    if any_pinned {
        return Ok(());
    }
    let first = pinned
        .tables
        .iter()
        .filter_map(|(n, t)| {
            history(&t.table)
                .first()
                .map(|s| (n.clone(), s.committed_at))
        })
        .min_by_key(|(_, t)| *t);
    match first {
        Some((table, first)) => Err(QueryError::BeforeFirstSnapshot {
            table,
            as_of: at.to_rfc3339(),
            first: first.to_rfc3339(),
        }),
        None => Ok(()),
    }
}
