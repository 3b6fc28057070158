//! OHLCV bars from trades: open (first trade by exchange time, then sequence number),
//! high, low, close (last), volume, VWAP and trade count per bucket.
//!
//! Prices and volumes stay decimals end to end; VWAP is `sum(price × quantity) /
//! sum(quantity)`, both sums exact decimals, the one division done by DuckDB in double
//! precision and rounded to 8 places (relative error below 1e-15 before rounding).

use std::str::FromStr;

use arrow::record_batch::RecordBatch;
use chrono::{DateTime, Utc};

use crate::plan::Filter;
use crate::session::{Session, read_parquet};
use crate::{QueryError, Result};

/// A bar width `N{s,m,h,d}`, e.g. `1m`, `15m`, `1h`, `1d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    pub count: u32,
    pub unit: IntervalUnit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntervalUnit {
    Second,
    Minute,
    Hour,
    Day,
}

impl FromStr for Interval {
    type Err = QueryError;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            QueryError::Invalid(format!(
                "interval {s:?}: expected N followed by s, m, h or d (e.g. 1m, 15m, 1d)"
            ))
        };
        let s = s.trim();
        let (digits, unit) = s.split_at(s.len().saturating_sub(1));
        let count: u32 = digits.parse().map_err(|_| bad())?;
        if count == 0 {
            return Err(bad());
        }
        let unit = match unit {
            "s" => IntervalUnit::Second,
            "m" => IntervalUnit::Minute,
            "h" => IntervalUnit::Hour,
            "d" => IntervalUnit::Day,
            _ => return Err(bad()),
        };
        Ok(Interval { count, unit })
    }
}

impl Interval {
    /// As a DuckDB interval literal (built from validated parts, never from user text).
    fn sql(self) -> String {
        let unit = match self.unit {
            IntervalUnit::Second => "second",
            IntervalUnit::Minute => "minute",
            IntervalUnit::Hour => "hour",
            IntervalUnit::Day => "day",
        };
        format!("INTERVAL '{} {unit}'", self.count)
    }
}

/// Where bucket boundaries fall.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimeZoneChoice {
    /// Aligned to UTC.
    #[default]
    Utc,
    /// Aligned to the exchange's local time (a 1d ASX bar is the Sydney trading day).
    Exchange,
}

#[derive(Debug, Clone)]
pub struct OhlcvRequest {
    pub symbols: Vec<String>,
    pub exchange: String,
    pub interval: Interval,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub tz: TimeZoneChoice,
}

impl Session {
    /// Bars for the request, ordered by symbol and bucket; empty buckets omitted. Columns:
    /// `symbol`, `bucket_start` (UTC), `open`, `high`, `low`, `close`, `volume`, `vwap`,
    /// `trades`.
    pub async fn ohlcv(&self, req: &OhlcvRequest) -> Result<Vec<RecordBatch>> {
        if req.symbols.is_empty() {
            return Err(QueryError::Invalid(
                "ohlcv needs at least one symbol".into(),
            ));
        }
        if let Some(bad) = req.symbols.iter().find(|s| s.contains(',') || s.is_empty()) {
            return Err(QueryError::Invalid(format!("invalid symbol {bad:?}")));
        }
        if req.from >= req.to {
            return Err(QueryError::Invalid(format!(
                "empty range: {} is not before {}",
                req.from, req.to
            )));
        }
        let filter = Filter {
            exchange: Some(req.exchange.clone()),
            symbols: req.symbols.clone(),
            from: Some(req.from),
            to: Some(req.to),
        };
        let files = self.planned_files("trades", &filter).await?;
        if files.is_empty() {
            return Ok(Vec::new());
        }
        let bucket = match req.tz {
            TimeZoneChoice::Utc => format!(
                "time_bucket({}, exchange_timestamp, TIMESTAMPTZ '2000-01-01 00:00:00+00')",
                req.interval.sql()
            ),
            TimeZoneChoice::Exchange => {
                let tz = self.timezone(&req.exchange).ok_or_else(|| {
                    QueryError::Invalid(format!(
                        "exchange {:?} has no time zone in topics.yaml",
                        req.exchange
                    ))
                })?;
                // Buckets of local time, aligned to local midnight, as UTC instants.
                format!(
                    "time_bucket({}, exchange_timestamp, '{}')",
                    req.interval.sql(),
                    tz.name()
                )
            }
        };
        let sql = format!(
            "SELECT symbol,
                    {bucket} AS bucket_start,
                    arg_min(price, (exchange_timestamp, sequence_number)) AS open,
                    max(price) AS high,
                    min(price) AS low,
                    arg_max(price, (exchange_timestamp, sequence_number)) AS close,
                    sum(quantity) AS volume,
                    CAST(sum(price * quantity) / sum(quantity) AS DECIMAL(18, 8)) AS vwap,
                    count(*) AS trades
             FROM {src}
             WHERE exchange = ?
               AND list_contains(string_split(?, ','), symbol)
               AND exchange_timestamp >= CAST(? AS TIMESTAMPTZ)
               AND exchange_timestamp < CAST(? AS TIMESTAMPTZ)
             GROUP BY ALL
             ORDER BY symbol, bucket_start",
            src = read_parquet(&files),
        );
        let symbols = req.symbols.join(",");
        let from = req.from.to_rfc3339();
        let to = req.to.to_rfc3339();
        let mut stmt = self.connection().prepare(&sql)?;
        let batches: Vec<RecordBatch> = stmt
            .query_arrow(duckdb::params![req.exchange, symbols, from, to])?
            .collect();
        Ok(batches)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_parse() {
        assert_eq!(
            "15m".parse::<Interval>().unwrap(),
            Interval {
                count: 15,
                unit: IntervalUnit::Minute
            }
        );
        assert_eq!("1d".parse::<Interval>().unwrap().sql(), "INTERVAL '1 day'");
        assert!("0m".parse::<Interval>().is_err());
        assert!("1w".parse::<Interval>().is_err());
        assert!("m".parse::<Interval>().is_err());
    }
}
