//! A read-only DuckDB connection whose views `trades`, `quotes`, `reference_data` and
//! `sequence_events` read exactly the data files of the pinned snapshots.

use std::collections::BTreeMap;

use arrow::record_batch::RecordBatch;
use duckdb::{Connection, ToSql};
use iceberg::spec::{PrimitiveType, Type};

use crate::plan::{self, Filter};
use crate::snapshot::{Pinned, PinnedTable};
use crate::{QueryError, Result};

pub struct Session {
    conn: Connection,
    pinned: Pinned,
    timezones: BTreeMap<String, chrono_tz::Tz>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("pin", &self.pinned.pin)
            .finish()
    }
}

/// A SQL string literal (for paths K2 planned; never for user values, which are bound).
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
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
fn empty_select(t: &PinnedTable) -> String {
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

impl Session {
    pub(crate) async fn open(
        pinned: Pinned,
        timezones: BTreeMap<String, chrono_tz::Tz>,
        warehouse: &str,
    ) -> Result<Self> {
        let conn = Connection::open_in_memory()?;
        for (name, t) in &pinned.tables {
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
            conn.execute_batch(&format!("CREATE VIEW \"{name}\" AS {select}"))?;
        }
        // Read-only from here on: files only under the warehouse, settings locked.
        let warehouse_dir = plan::duckdb_path(warehouse);
        let temp = std::env::temp_dir();
        conn.execute_batch(&format!(
            "SET TimeZone = 'UTC';
             SET allowed_directories = [{}, {}];
             SET enable_external_access = false;
             SET lock_configuration = true;",
            literal(&warehouse_dir),
            literal(&temp.display().to_string()),
        ))?;
        Ok(Session {
            conn,
            pinned,
            timezones,
        })
    }

    pub fn pinned(&self) -> &Pinned {
        &self.pinned
    }

    /// Runs SQL with bound parameters; the result as Arrow batches.
    pub fn sql(&self, query: &str, params: &[&dyn ToSql]) -> Result<Vec<RecordBatch>> {
        let mut stmt = self.conn.prepare(query)?;
        let batches: Vec<RecordBatch> = stmt.query_arrow(params)?.collect();
        Ok(batches)
    }

    /// Column names and types of a view (`.schema`).
    pub fn describe(&self, table: &str) -> Result<Vec<(String, String)>> {
        if !self.pinned.tables.contains_key(table) {
            return Err(QueryError::UnknownTable(table.to_string()));
        }
        let mut stmt = self.conn.prepare(&format!("DESCRIBE \"{table}\""))?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        Ok(rows.collect::<std::result::Result<Vec<_>, _>>()?)
    }

    pub(crate) fn timezone(&self, exchange: &str) -> Option<chrono_tz::Tz> {
        self.timezones.get(exchange).copied()
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

    pub(crate) fn connection(&self) -> &Connection {
        &self.conn
    }
}
