//! The range every question asks about (symbols on one exchange over a time interval):
//! checked once, turned into the filter that prunes files, and bound into the SQL as the
//! same parameters by every question, OHLCV included.

use std::collections::BTreeSet;

use arrow::array::AsArray;
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, Utc};

use crate::error::{QueryError, Result};
use crate::plan::Filter;
use crate::session::{Session, empty_select, read_parquet};

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
/// symbols, time range. The symbols are also bound as the range between the least and the
/// greatest of them: DuckDB prunes row groups by their statistics only on comparisons, not
/// on `list_contains`, and files sorted by symbol (compacted ones) are then read only where
/// the asked symbols are (bench/query, `k2-bench layout`).
pub(crate) const IN_RANGE: &str = "exchange = ? AND symbol >= ? AND symbol <= ?
     AND list_contains(string_split(?, ','), symbol)
     AND exchange_timestamp >= CAST(? AS TIMESTAMPTZ) AND exchange_timestamp < CAST(? AS TIMESTAMPTZ)";

impl Session {
    /// What to read `table`'s rows of `range` from: `read_parquet(...)` over the files that
    /// may hold them, a typed empty relation if none may (so that an empty answer keeps its
    /// columns), or `None` if the table does not exist.
    pub(crate) async fn source(&self, table: &str, range: &Range) -> Result<Option<String>> {
        self.check_exchange(&range.exchange)?;
        let Some(pinned) = self.pinned().tables.get(table) else {
            return Ok(None);
        };
        let files = self.planned_files(table, &range.filter()?).await?;
        Ok(Some(if files.is_empty() {
            format!("({})", empty_select(pinned))
        } else {
            read_parquet(&files)
        }))
    }

    /// An exchange `topics.yaml` does not list is a mistake, not an empty answer.
    pub(crate) fn check_exchange(&self, exchange: &str) -> Result<()> {
        let known = self.exchanges();
        if known.is_empty() || known.contains(&exchange) {
            return Ok(());
        }
        Err(QueryError::Invalid(format!(
            "unknown exchange {exchange:?} (topics.yaml lists {})",
            known.join(", ")
        )))
    }

    /// Fails for asked symbols that `answer` lacks and that `table` has never held on the
    /// range's exchange at the pinned snapshot (a misspelt symbol, not a quiet range).
    /// Costs nothing when every symbol answered; otherwise one early-stopping lookup per
    /// missing symbol.
    pub(crate) async fn check_symbols(
        &self,
        table: &str,
        range: &Range,
        answer: &[RecordBatch],
    ) -> Result<()> {
        let answered = symbols_in(answer);
        let mut unknown = Vec::new();
        for symbol in range
            .symbols
            .iter()
            .filter(|s| !answered.contains(s.as_str()))
        {
            let everywhere = Filter {
                exchange: Some(range.exchange.clone()),
                symbols: vec![symbol.clone()],
                from: None,
                to: None,
            };
            let files = self.planned_files(table, &everywhere).await?;
            let held = !files.is_empty()
                && self
                    .run(
                        &format!(
                            "SELECT 1 FROM {} WHERE exchange = ? AND symbol = ? LIMIT 1",
                            read_parquet(&files)
                        ),
                        &[&range.exchange, symbol],
                    )?
                    .iter()
                    .any(|b| b.num_rows() > 0);
            if !held {
                unknown.push(format!("{symbol:?}"));
            }
        }
        if unknown.is_empty() {
            return Ok(());
        }
        Err(QueryError::Invalid(format!(
            "unknown symbol{} {} on exchange {:?}: no {table} at the pinned snapshot",
            if unknown.len() == 1 { "" } else { "s" },
            unknown.join(", "),
            range.exchange
        )))
    }

    /// Runs `sql` with the range's parameters bound (once per `?` group of [`IN_RANGE`],
    /// `times` groups).
    pub(crate) fn run_ranged(
        &self,
        sql: &str,
        range: &Range,
        times: usize,
    ) -> Result<Vec<RecordBatch>> {
        let bound = Bound::of(range);
        let params: Vec<&dyn duckdb::ToSql> = (0..times).flat_map(|_| bound.params()).collect();
        self.run(sql, &params)
    }
}

/// The distinct values of the `symbol` column of `batches`.
fn symbols_in(batches: &[RecordBatch]) -> BTreeSet<&str> {
    let mut out = BTreeSet::new();
    for b in batches {
        let Some(col) = b.column_by_name("symbol") else {
            continue;
        };
        if let Some(a) = col.as_string_opt::<i32>() {
            out.extend(a.iter().flatten());
        } else if let Some(a) = col.as_string_view_opt() {
            out.extend(a.iter().flatten());
        }
    }
    out
}

/// The values one [`IN_RANGE`] binds, in its order.
pub(crate) struct Bound {
    exchange: String,
    least: String,
    greatest: String,
    symbols: String,
    pub(crate) from: String,
    to: String,
}

impl Bound {
    pub(crate) fn of(range: &Range) -> Self {
        Self {
            exchange: range.exchange.clone(),
            // `filter()` has checked there is at least one symbol.
            least: range.symbols.iter().min().cloned().unwrap_or_default(),
            greatest: range.symbols.iter().max().cloned().unwrap_or_default(),
            symbols: range.symbols.join(","),
            from: range.from.to_rfc3339(),
            to: range.to.to_rfc3339(),
        }
    }

    pub(crate) fn params(&self) -> [&dyn duckdb::ToSql; 6] {
        [
            &self.exchange,
            &self.least,
            &self.greatest,
            &self.symbols,
            &self.from,
            &self.to,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_symbols_are_bound_with_their_least_and_greatest() {
        let range = Range {
            exchange: "asx".into(),
            symbols: vec!["WES".into(), "BHP".into(), "CBA".into()],
            from: "2014-03-11T00:00:00Z".parse().unwrap(),
            to: "2014-03-12T00:00:00Z".parse().unwrap(),
        };
        let b = Bound::of(&range);
        assert_eq!(
            (b.least.as_str(), b.greatest.as_str()),
            ("BHP", "WES"),
            "the range spans every asked symbol"
        );
        assert_eq!(b.symbols, "WES,BHP,CBA");
        // One `?` per bound value, in order.
        assert_eq!(IN_RANGE.matches('?').count(), b.params().len());
    }
}
