//! A read-only DuckDB connection whose views `trades`, `quotes`, `reference_data`,
//! `sequence_events` and `bars_1m` read exactly the data files of the pinned snapshots.
//!
//! The views are planned and bound on the first SQL statement, not when the session
//! opens: a view lists every data file of its table, and binding it reads every file's
//! footer, a cost that grows with the table's history. The questions (OHLCV, trades,
//! quotes, markouts…) plan only the files their range can touch, so a backtest that asks
//! only them never pays it (bench/history).

use std::collections::BTreeMap;

use arrow::record_batch::RecordBatch;
use duckdb::{Connection, ToSql};
use iceberg::spec::{PrimitiveType, Type};
use k2_common::config::TradingSessions;

use crate::error::{QueryError, Result};
use crate::plan::{self, Filter};
use crate::snapshot::{Pinned, PinnedTable};
use crate::storage::{WarehouseAccess, literal};

pub struct Session {
    conn: Connection,
    pinned: Pinned,
    timezones: BTreeMap<String, chrono_tz::Tz>,
    sessions: BTreeMap<String, TradingSessions>,
    /// Set once the SQL views exist.
    views: tokio::sync::OnceCell<()>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("pin", &self.pinned.pin)
            .finish()
    }
}

/// `read_parquet([...])` over these files.
pub(crate) fn read_parquet(files: &[String]) -> String {
    let list: Vec<String> = files
        .iter()
        .map(|f| literal(&plan::duckdb_path(f)))
        .collect();
    format!("read_parquet([{}], union_by_name = true)", list.join(", "))
}

fn duckdb_type(t: &Type) -> String {
    match t {
        Type::Primitive(p) => match p {
            PrimitiveType::Boolean => "BOOLEAN".into(),
            PrimitiveType::Int => "INTEGER".into(),
            PrimitiveType::Long => "BIGINT".into(),
            PrimitiveType::Float => "FLOAT".into(),
            PrimitiveType::Double => "DOUBLE".into(),
            PrimitiveType::Decimal { precision, scale } => format!("DECIMAL({precision},{scale})"),
            PrimitiveType::Date => "DATE".into(),
            PrimitiveType::Timestamptz | PrimitiveType::TimestamptzNs => "TIMESTAMPTZ".into(),
            PrimitiveType::Timestamp | PrimitiveType::TimestampNs => "TIMESTAMP".into(),
            PrimitiveType::String => "VARCHAR".into(),
            PrimitiveType::Binary | PrimitiveType::Fixed(_) => "BLOB".into(),
            PrimitiveType::Uuid => "UUID".into(),
            PrimitiveType::Time => "TIME".into(),
        },
        _ => "VARCHAR".into(),
    }
}

/// A view with the table's columns and no rows (nothing committed at the pinned instant).
pub(crate) fn empty_select(t: &PinnedTable) -> String {
    let schema = t.table.metadata().current_schema();
    let cols: Vec<String> = schema
        .as_struct()
        .fields()
        .iter()
        .map(|f| {
            format!(
                "CAST(NULL AS {}) AS \"{}\"",
                duckdb_type(&f.field_type),
                f.name
            )
        })
        .collect();
    format!("SELECT {} WHERE false", cols.join(", "))
}

/// `EXPLAIN [ANALYZE] q` → `q` (EXPLAIN ANALYZE runs `q`, so `q` is what must be a query).
fn strip_explain(query: &str) -> &str {
    let mut rest = query.trim_start();
    for word in ["EXPLAIN", "ANALYZE"] {
        if rest.len() > word.len()
            && rest[..word.len()].eq_ignore_ascii_case(word)
            && rest[word.len()..].starts_with(|c: char| c.is_whitespace())
        {
            rest = rest[word.len()..].trim_start();
        }
    }
    rest
}

impl Session {
    pub(crate) async fn open(
        pinned: Pinned,
        (timezones, sessions): (
            BTreeMap<String, chrono_tz::Tz>,
            BTreeMap<String, TradingSessions>,
        ),
        warehouse: &WarehouseAccess,
    ) -> Result<Self> {
        let conn = Connection::open_in_memory()?;
        warehouse.connect(&conn)?;
        warehouse.lock_down(&conn)?;
        Ok(Session {
            conn,
            pinned,
            timezones,
            sessions,
            views: tokio::sync::OnceCell::new(),
        })
    }

    /// Creates the table views, once. (`OR REPLACE`: after a failure part-way, the next
    /// statement tries them all again.)
    async fn views(&self) -> Result<()> {
        self.views
            .get_or_try_init(|| async {
                for (name, t) in &self.pinned.tables {
                    let select = match t.snapshot_id {
                        Some(id) => {
                            let files = plan::data_files(&t.table, id, &Filter::default()).await?;
                            if files.is_empty() {
                                empty_select(t)
                            } else {
                                format!("SELECT * FROM {}", read_parquet(&files))
                            }
                        }
                        None => empty_select(t),
                    };
                    self.conn
                        .execute_batch(&format!("CREATE OR REPLACE VIEW \"{name}\" AS {select}"))?;
                }
                Ok::<(), QueryError>(())
            })
            .await?;
        Ok(())
    }

    pub fn pinned(&self) -> &Pinned {
        &self.pinned
    }

    /// Runs SQL with bound parameters; the result as Arrow batches. Only queries run
    /// (SELECT, WITH, VALUES, FROM, DESCRIBE, SHOW, SUMMARIZE, and EXPLAIN of those).
    pub async fn sql(&self, query: &str, params: &[&dyn ToSql]) -> Result<Vec<RecordBatch>> {
        self.check_query(query)?;
        self.views().await?;
        self.run(query, params)
    }

    /// SQL that K2 built itself (OHLCV, questions): no statement check needed.
    /// The result always carries its schema: an empty one is a single batch of no rows.
    pub(crate) fn run(&self, query: &str, params: &[&dyn ToSql]) -> Result<Vec<RecordBatch>> {
        let mut stmt = self.conn.prepare(query)?;
        // Streamed: DuckDB hands over one chunk at a time rather than materialising the
        // whole result before the first Arrow batch, so a large answer is held once (as
        // Arrow), not twice. Chunks are fetched with `step`, which returns DuckDB's errors
        // (an interrupt, a file gone) where the iterator would panic.
        let schema = stmt.stream_arrow(params)?.get_schema();
        let mut batches = Vec::new();
        while let Some(chunk) = stmt.step()? {
            batches.push(RecordBatch::from(&chunk));
        }
        if batches.is_empty() {
            batches.push(RecordBatch::new_empty(schema));
        }
        Ok(batches)
    }

    /// A handle that stops the query this session is running, from another thread (the
    /// query then fails with DuckDB's "Interrupted" error; the session stays usable).
    pub fn interrupt_handle(&self) -> std::sync::Arc<duckdb::InterruptHandle> {
        self.conn.interrupt_handle()
    }

    /// Refuses anything but queries, before DuckDB runs it. The settings lock-down already
    /// keeps files outside the warehouse out of reach, but DuckDB's allowed directories
    /// are for writing as much as for reading: without this check `COPY … TO` could put
    /// files into the warehouse itself. DuckDB's own parser decides what is a query
    /// (`json_serialize_sql` serializes SELECT statements only).
    fn check_query(&self, query: &str) -> Result<()> {
        let inner = strip_explain(query);
        let verdict: String =
            self.conn
                .query_row("SELECT json_serialize_sql(?::VARCHAR)", [inner], |r| {
                    r.get(0)
                })?;
        let verdict: serde_json::Value = serde_json::from_str(&verdict)
            .map_err(|e| QueryError::Sql(format!("checking the statement: {e}")))?;
        let refused = verdict["error"].as_bool() == Some(true)
            && verdict["error_type"].as_str() != Some("parser");
        if refused {
            return Err(QueryError::ReadOnly(
                query
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_uppercase(),
            ));
        }
        // A syntax error is left to DuckDB's own prepare, which reports it best.
        Ok(())
    }

    /// Column names and types of a view (`.schema`).
    pub async fn describe(&self, table: &str) -> Result<Vec<(String, String)>> {
        if !self.pinned.tables.contains_key(table) {
            return Err(QueryError::UnknownTable(table.to_string()));
        }
        self.views().await?;
        let mut stmt = self.conn.prepare(&format!("DESCRIBE \"{table}\""))?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        Ok(rows.collect::<std::result::Result<Vec<_>, _>>()?)
    }

    /// The exchanges topics.yaml lists (empty if it could not be read).
    pub(crate) fn exchanges(&self) -> Vec<&str> {
        self.timezones.keys().map(String::as_str).collect()
    }

    pub(crate) fn timezone(&self, exchange: &str) -> Option<chrono_tz::Tz> {
        self.timezones.get(exchange).copied()
    }

    /// The exchange's trading sessions (topics.yaml's hours and calendar).
    pub(crate) fn trading_sessions(&self, exchange: &str) -> Option<&TradingSessions> {
        self.sessions.get(exchange)
    }

    /// Files of `table` at its pinned snapshot that may match `filter` (empty if the
    /// table had no snapshot then).
    pub async fn planned_files(&self, table: &str, filter: &Filter) -> Result<Vec<String>> {
        let t = self
            .pinned
            .tables
            .get(table)
            .ok_or_else(|| QueryError::UnknownTable(table.to_string()))?;
        match t.snapshot_id {
            Some(id) => plan::data_files(&t.table, id, filter).await,
            None => Ok(Vec::new()),
        }
    }
}
