//! k2-query: questions over K2's Iceberg tables with DuckDB, pinned to snapshots.
//!
//! The route (docs/decisions.md, ADR-11): iceberg-rust plans each scan from the Iceberg
//! metadata of the pinned snapshot (partition pruning by day and exchange, file pruning by
//! column statistics), and DuckDB reads exactly the planned Parquet files with
//! `read_parquet`. No DuckDB extension is needed for local warehouses, and the result is
//! the same for every table format detail DuckDB's own Iceberg reader might handle
//! differently.
//!
//! [`Lakehouse`] connects to the catalog; [`Pin`] says which instant to read;
//! [`Session`] is a read-only DuckDB connection with views `trades`, `quotes`,
//! `reference_data` and `sequence_events` bound to the pinned snapshots; [`ohlcv`] builds
//! bars; [`rows`] turns results into typed rows.

pub mod lakehouse;
pub mod ohlcv;
pub mod plan;
pub mod questions;
pub mod rows;
pub mod session;
pub mod snapshot;
mod storage;

pub use lakehouse::Lakehouse;
pub use ohlcv::{Bar, Fill, Interval, OhlcvRequest, TimeZoneChoice};
pub use questions::Range;
pub use session::Session;
pub use snapshot::{Pin, Pinned, SnapshotInfo};

/// Tables the query module knows, in `market_data`.
pub const TABLES: [&str; 4] = ["trades", "quotes", "reference_data", "sequence_events"];

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("cannot reach the catalog at {uri}: {source}")]
    Unreachable {
        uri: String,
        #[source]
        source: Box<iceberg::Error>,
    },
    #[error("catalog: {0}")]
    Catalog(Box<iceberg::Error>),
    #[error("unknown table {0:?} (known: trades, quotes, reference_data, sequence_events)")]
    UnknownTable(String),
    #[error("table {table} has no snapshot at or before {as_of} (its first is at {first})")]
    BeforeFirstSnapshot {
        table: String,
        as_of: String,
        first: String,
    },
    #[error("table {table} has no snapshot {snapshot_id}")]
    UnknownSnapshot { table: String, snapshot_id: i64 },
    #[error("{0}")]
    Sql(String),
    #[error(
        "k2-query sessions are read-only: {0} is not a query (SELECT, WITH, VALUES, DESCRIBE, SHOW, SUMMARIZE or EXPLAIN)"
    )]
    ReadOnly(String),
    #[error("{0}")]
    Invalid(String),
}

impl From<iceberg::Error> for QueryError {
    fn from(e: iceberg::Error) -> Self {
        QueryError::Catalog(Box::new(e))
    }
}

impl From<duckdb::Error> for QueryError {
    fn from(e: duckdb::Error) -> Self {
        QueryError::Sql(e.to_string())
    }
}

pub type Result<T, E = QueryError> = std::result::Result<T, E>;
