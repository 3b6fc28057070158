//! Snapshot pinning: which snapshot of each table a question reads. The same pin answers
//! the same question identically tomorrow, whatever was appended since — inside the window
//! of ordinary snapshots for any instant, and for the end of any day whose end-of-day tag
//! still exists (ADR-23).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use iceberg::table::Table;
use k2_table::retention;

use crate::error::{QueryError, Result};

/// What instant to read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Pin {
    /// Each table's current snapshot at the time the session is opened.
    #[default]
    Latest,
    /// For every table, the last snapshot committed at or before this instant.
    AsOf(DateTime<Utc>),
    /// Every table at its tag of this name. An end-of-day tag (`eod-2026-12-07`) a table
    /// lacks (it committed nothing since) reads that table as of the day's end instead.
    Tag(String),
    /// Explicit snapshots for some tables (`None`: read the table as empty, as it was
    /// before its first snapshot); the tables not named read their current snapshot.
    Snapshots(BTreeMap<String, Option<i64>>),
}

impl Pin {
    /// A pin as analysts type it: `latest` (or `now`), an instant (RFC 3339, or a date and
    /// time in UTC: [`crate::instant::parse`]), or a tag name such as `eod-2026-12-07`.
    pub fn parse(text: &str) -> Result<Pin> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("latest") || text.eq_ignore_ascii_case("now") {
            return Ok(Pin::Latest);
        }
        match crate::instant::parse(text) {
            Ok(at) => Ok(Pin::AsOf(at)),
            Err(_) if is_tag_name(text) => Ok(Pin::Tag(text.to_string())),
            Err(e) => Err(QueryError::Invalid(format!(
                "{e}; or a tag name such as eod-2026-12-07, or latest"
            ))),
        }
    }
}

impl Pin {
    /// The instant this pin reads the lakehouse at, when it names one: an `AsOf`'s, an
    /// end-of-day tag's day's end (the midnight UTC that closes it).
    pub fn instant(&self) -> Option<DateTime<Utc>> {
        match self {
            Pin::AsOf(at) => Some(*at),
            Pin::Tag(tag) => retention::eod_day(tag)
                .and_then(|d| DateTime::from_timestamp_millis(retention::end_of_day_ms(d))),
            Pin::Latest | Pin::Snapshots(_) => None,
        }
    }
}

impl std::fmt::Display for Pin {
    /// As [`Pin::parse`] reads it back (explicit snapshots as `table=id` pairs).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pin::Latest => f.write_str("latest"),
            Pin::AsOf(at) => f.write_str(&at.to_rfc3339()),
            Pin::Tag(tag) => f.write_str(tag),
            Pin::Snapshots(ids) => {
                let pairs: Vec<String> = ids
                    .iter()
                    .map(|(t, id)| format!("{t}={}", id.map_or("none".into(), |i| i.to_string())))
                    .collect();
                f.write_str(&pairs.join(","))
            }
        }
    }
}

/// Tag names K2 accepts: letters, digits, `-`, `_`, `.` (Iceberg allows more; these keep a
/// pin printable and typeable).
fn is_tag_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
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
    /// The refs (branches and tags) that point at this snapshot.
    pub refs: Vec<String>,
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

/// The snapshots a table still has, oldest first (the window of ordinary snapshots, and
/// older ones that tags keep), with the refs that point at each.
pub fn history(table: &Table) -> Vec<SnapshotInfo> {
    let refs = retention::refs(table.metadata());
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
                refs: refs
                    .iter()
                    .filter(|r| r.snapshot_id == s.snapshot_id())
                    .map(|r| r.name.clone())
                    .collect(),
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
        Pin::AsOf(at) => as_of(name, table, *at),
        Pin::Tag(tag) => match metadata.snapshot_for_ref(tag) {
            Some(s) => Ok(Some(s.snapshot_id())),
            None => match retention::eod_day(tag) {
                // Nothing committed to this table since that day: as of its end.
                Some(day) => as_of(
                    name,
                    table,
                    DateTime::from_timestamp_millis(retention::end_of_day_ms(day))
                        .unwrap_or_default(),
                ),
                None => Err(QueryError::UnknownTag {
                    table: name.to_string(),
                    tag: tag.clone(),
                }),
            },
        },
    }
}

/// The snapshot current at `at`: from the snapshot log while it reaches back that far,
/// else the end-of-day tag of the day `at` ends if nothing came after it that day.
fn as_of(name: &str, table: &Table, at: DateTime<Utc>) -> Result<Option<i64>> {
    let ms = |ms: i64| {
        DateTime::from_timestamp_millis(ms)
            .unwrap_or_default()
            .to_rfc3339()
    };
    retention::snapshot_at(table.metadata(), at.timestamp_millis()).map_err(|e| {
        QueryError::Expired {
            table: name.to_string(),
            as_of: at.to_rfc3339(),
            window_from: e.window_from_ms.map(ms),
            tag_before: e.tag_before.map(|d| {
                format!(
                    "{} ({})",
                    retention::eod_tag(d),
                    ms(retention::end_of_day_ms(d))
                )
            }),
        }
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_is_latest_an_instant_or_a_tag_and_prints_as_it_parses() {
        assert_eq!(Pin::parse("latest").unwrap(), Pin::Latest);
        assert_eq!(Pin::parse("now").unwrap(), Pin::Latest);
        let at = Pin::parse("2026-12-07").unwrap();
        assert_eq!(at, Pin::AsOf("2026-12-07T00:00:00Z".parse().unwrap()));
        let tag = Pin::parse("eod-2026-12-06").unwrap();
        assert_eq!(tag, Pin::Tag("eod-2026-12-06".into()));
        // An end-of-day tag stands for the midnight that ends its day.
        assert_eq!(tag.instant(), at.instant());
        for p in [at, tag, Pin::Latest] {
            assert_eq!(Pin::parse(&p.to_string()).unwrap(), p);
        }
        let e = Pin::parse("yesterday at noon").unwrap_err().to_string();
        assert!(e.contains("or a tag name such as eod-2026-12-07"), "{e}");
    }
}
