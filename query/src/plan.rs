//! Scan planning with iceberg-rust: the data files of a pinned snapshot that can hold rows
//! matching a filter. Partition values (day, exchange) and column statistics (symbol,
//! time) prune the rest before DuckDB opens anything.

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use iceberg::expr::{Predicate, Reference};
use iceberg::spec::Datum;
use iceberg::table::Table;

use crate::error::Result;

/// Row filters that can prune files.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub exchange: Option<String>,
    pub symbols: Vec<String>,
    /// `exchange_timestamp >= from`.
    pub from: Option<DateTime<Utc>>,
    /// `exchange_timestamp < to`.
    pub to: Option<DateTime<Utc>>,
}

impl Filter {
    pub(crate) fn predicate(&self) -> Option<Predicate> {
        let mut parts: Vec<Predicate> = Vec::new();
        if let Some(ex) = &self.exchange {
            parts.push(Reference::new("exchange").equal_to(Datum::string(ex)));
        }
        if !self.symbols.is_empty() {
            parts.push(
                Reference::new("symbol")
                    .is_in(self.symbols.iter().map(|s| Datum::string(s.as_str()))),
            );
        }
        if let Some(from) = self.from {
            parts.push(
                Reference::new("exchange_timestamp")
                    .greater_than_or_equal_to(Datum::timestamptz_micros(from.timestamp_micros())),
            );
        }
        if let Some(to) = self.to {
            parts.push(
                Reference::new("exchange_timestamp")
                    .less_than(Datum::timestamptz_micros(to.timestamp_micros())),
            );
        }
        parts.into_iter().reduce(Predicate::and)
    }
}

/// Paths of the data files of `table` at `snapshot_id` that may hold rows for `filter`.
pub async fn data_files(table: &Table, snapshot_id: i64, filter: &Filter) -> Result<Vec<String>> {
    let mut scan = table.scan().snapshot_id(snapshot_id).select_all();
    if let Some(p) = filter.predicate() {
        scan = scan.with_filter(p);
    }
    let scan = scan.build()?;
    let mut files: Vec<String> = scan
        .plan_files()
        .await?
        .map_ok(|t| t.data_file_path.clone())
        .try_collect()
        .await?;
    files.sort();
    files.dedup();
    Ok(files)
}

/// A local `file://` path as DuckDB wants it; other schemes (s3://) pass through.
pub fn duckdb_path(location: &str) -> String {
    location
        .strip_prefix("file://")
        .unwrap_or(location)
        .to_string()
}

/// A planned data file with its partition values (in its spec's field order).
#[derive(Debug, Clone)]
pub(crate) struct PlannedFile {
    pub path: String,
    pub partition: Vec<Option<iceberg::spec::Literal>>,
}

/// The data files of `table` at `snapshot_id` that may match `predicate`, with their
/// partition values.
pub(crate) async fn planned_files(
    table: &Table,
    snapshot_id: i64,
    predicate: Predicate,
) -> Result<Vec<PlannedFile>> {
    let scan = table
        .scan()
        .snapshot_id(snapshot_id)
        .select_all()
        .with_filter(predicate)
        .build()?;
    let mut files: Vec<PlannedFile> = scan
        .plan_files()
        .await?
        .map_ok(|t| PlannedFile {
            path: t.data_file_path.clone(),
            partition: t
                .partition
                .as_ref()
                .map(|p| p.fields().to_vec())
                .unwrap_or_default(),
        })
        .try_collect()
        .await?;
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files.dedup_by(|a, b| a.path == b.path);
    Ok(files)
}
