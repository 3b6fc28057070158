//! The one error type of the query library: what went wrong, in words an analyst can act
//! on (the shell prints it as is).

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
