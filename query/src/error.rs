//! The one error type of the query library: what went wrong, in words an analyst can act
//! on (the shell prints it as is).

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// (An iceberg error prints its own cause: part of the message, not a source.)
    #[error("cannot reach the catalog at {uri}: {error}")]
    Unreachable {
        uri: String,
        error: Box<iceberg::Error>,
    },
    #[error("catalog: {0}")]
    Catalog(Box<iceberg::Error>),
    #[error("unknown table {0:?} (known: {known})", known = k2_common::data_type::TABLES.join(", "))]
    UnknownTable(String),
    #[error("table {table} has no snapshot at or before {as_of} (its first is at {first})")]
    BeforeFirstSnapshot {
        table: String,
        as_of: String,
        first: String,
    },
    #[error("table {table} has no snapshot {snapshot_id}")]
    UnknownSnapshot { table: String, snapshot_id: i64 },
    #[error("table {table} has no tag {tag:?} (k2-query's .snapshots {table} lists its tags)")]
    UnknownTag { table: String, tag: String },
    #[error(
        "table {table} no longer has its snapshots of {as_of}: they expired (maintenance.snapshot_retention, maintenance.max_snapshots){}; the end of a day still reproduces through its end-of-day tag{}",
        window_from.as_ref().map(|w| format!(", and its snapshots since {w} are kept")).unwrap_or_default(),
        tag_before.as_ref().map(|t| format!(", the nearest before being {t}")).unwrap_or_default()
    )]
    Expired {
        table: String,
        as_of: String,
        /// Where the window of ordinary snapshots begins.
        window_from: Option<String>,
        /// The nearest end-of-day tag before the instant, and the instant it stands for.
        tag_before: Option<String>,
    },
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
