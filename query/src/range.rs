//! The range every question asks about (symbols on one exchange over a time interval):
//! checked once, turned into the filter that prunes files, and bound into the SQL as the
//! same four parameters by every question, OHLCV included.

use arrow::record_batch::RecordBatch;
use chrono::{DateTime, Utc};

use crate::error::{QueryError, Result};
use crate::plan::Filter;
use crate::session::{Session, read_parquet};

/// Symbols on one exchange over `[from, to)`.
#[derive(Debug, Clone)]
pub struct Range {
    pub exchange: String,
    pub symbols: Vec<String>,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl Range {
    /// The range checked (symbols given, none empty or with a comma, `from < to`) as the
    /// filter that prunes files.
    pub(crate) fn filter(&self) -> Result<Filter> {
        if self.symbols.is_empty() {
            return Err(QueryError::Invalid("give at least one symbol".into()));
        }
        if let Some(bad) = self
            .symbols
            .iter()
            .find(|s| s.contains(',') || s.is_empty())
        {
            return Err(QueryError::Invalid(format!("invalid symbol {bad:?}")));
        }
        if self.from >= self.to {
            return Err(QueryError::Invalid(format!(
                "empty range: {} is not before {}",
                self.from, self.to
            )));
        }
        Ok(Filter {
            exchange: Some(self.exchange.clone()),
            symbols: self.symbols.clone(),
            from: Some(self.from),
            to: Some(self.to),
        })
    }
}

/// The WHERE clause every question binds (with [`Session::run_ranged`]): exchange,
/// symbols, time range.
pub(crate) const IN_RANGE: &str = "exchange = ? AND list_contains(string_split(?, ','), symbol)
     AND exchange_timestamp >= CAST(? AS TIMESTAMPTZ) AND exchange_timestamp < CAST(? AS TIMESTAMPTZ)";

impl Session {
    /// `read_parquet(...)` over the files of `table` that may hold rows of `range`, or
    /// `None` if there are none.
    pub(crate) async fn source(&self, table: &str, range: &Range) -> Result<Option<String>> {
        let files = self.planned_files(table, &range.filter()?).await?;
        Ok((!files.is_empty()).then(|| read_parquet(&files)))
    }

    /// Runs `sql` with the range's four parameters bound (once per `?` group of
    /// [`IN_RANGE`], `times` groups).
    pub(crate) fn run_ranged(
        &self,
        sql: &str,
        range: &Range,
        times: usize,
    ) -> Result<Vec<RecordBatch>> {
        let symbols = range.symbols.join(",");
        let (from, to) = (range.from.to_rfc3339(), range.to.to_rfc3339());
        let one: [&dyn duckdb::ToSql; 4] = [&range.exchange, &symbols, &from, &to];
        let params: Vec<&dyn duckdb::ToSql> = (0..times).flat_map(|_| one).collect();
        self.run(sql, &params)
    }
}
