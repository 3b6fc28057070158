//! OHLCV bars from trades: open (first trade by exchange time, then sequence number),
//! high, low, close (last), volume, VWAP and trade count per bucket.
//!
//! Prices and volumes stay decimals end to end; VWAP is `sum(price × quantity) /
//! sum(quantity)`, both sums exact decimals, the one division done by DuckDB in double
//! precision and rounded to 8 places (relative error below 1e-15 before rounding); null
//! for a bucket whose trades all have quantity zero.

use std::str::FromStr;

use arrow::record_batch::RecordBatch;
use chrono::{DateTime, Utc};
use serde::Deserialize;

use k2_common::DataType;
use k2_common::records::Dec8;

use crate::bars::Sourced;
use crate::error::{QueryError, Result};
use crate::range::{IN_RANGE, Range};
use crate::session::{Session, read_parquet};
use crate::storage::literal;
use crate::trading_session::{SessionChoice, SessionSql};

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

/// The form [`Interval::from_str`] reads: `15m`.
impl std::fmt::Display for Interval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.unit {
            IntervalUnit::Second => 's',
            IntervalUnit::Minute => 'm',
            IntervalUnit::Hour => 'h',
            IntervalUnit::Day => 'd',
        };
        write!(f, "{}{unit}", self.count)
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

    /// The width in seconds.
    pub fn seconds(self) -> i64 {
        let unit = match self.unit {
            IntervalUnit::Second => 1,
            IntervalUnit::Minute => 60,
            IntervalUnit::Hour => 3600,
            IntervalUnit::Day => 86_400,
        };
        i64::from(self.count) * unit
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

/// What happens to a bucket without trades.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fill {
    /// No row.
    #[default]
    Omit,
    /// A row carrying the previous bar's close as open, high, low and close, with volume
    /// and trades 0 and VWAP null. Only after the symbol's first trade in the range: there
    /// is nothing to carry before it.
    Forward,
}

#[derive(Debug, Clone)]
pub struct OhlcvRequest {
    pub symbols: Vec<String>,
    pub exchange: String,
    pub interval: Interval,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub tz: TimeZoneChoice,
    pub fill: Fill,
    /// Buckets from each trading session's open (in the exchange's time, whatever `tz`
    /// says), or by the clock (`Off`).
    pub session: SessionChoice,
}

impl OhlcvRequest {
    pub(crate) fn range(&self) -> Range {
        Range {
            exchange: self.exchange.clone(),
            symbols: self.symbols.clone(),
            from: self.from,
            to: self.to,
        }
    }
}

/// [`IN_RANGE`] for the bars table: the same parameters, the minute's start in place of
/// the trade's time (the bars days' ends are on minutes, so the same minutes are in).
const BARS_IN_RANGE: &str = "exchange = ? AND symbol >= ? AND symbol <= ?
     AND list_contains(string_split(?, ','), symbol)
     AND bucket_start >= CAST(? AS TIMESTAMPTZ) AND bucket_start < CAST(? AS TIMESTAMPTZ)";

/// One bar, for [`Session::ohlcv_bars`]: prices and volumes as exact decimals.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Bar {
    pub symbol: String,
    /// Start of the bucket (UTC).
    #[serde(with = "chrono::serde::ts_microseconds")]
    pub bucket_start: DateTime<Utc>,
    pub open: Dec8,
    pub high: Dec8,
    pub low: Dec8,
    pub close: Dec8,
    pub volume: Dec8,
    /// None for a filled-forward bucket (no trades).
    pub vwap: Option<Dec8>,
    pub trades: i64,
}

/// The most buckets a filled-forward request may produce (symbols × buckets): a 1s grid
/// over a year would otherwise be built silently.
const MAX_FILLED_BUCKETS: i64 = 20_000_000;

impl Session {
    /// Bars for the request, ordered by symbol and bucket (empty buckets omitted unless
    /// `fill` says otherwise). Columns: `symbol`, `bucket_start` (UTC), `open`, `high`,
    /// `low`, `close`, `volume`, `vwap`, `trades`.
    pub async fn ohlcv(&self, req: &OhlcvRequest) -> Result<Vec<RecordBatch>> {
        let range = req.range();
        if req.fill == Fill::Forward {
            let buckets = (req.to - req.from).num_seconds() / req.interval.seconds() + 1;
            if buckets.saturating_mul(req.symbols.len() as i64) > MAX_FILLED_BUCKETS {
                return Err(QueryError::Invalid(format!(
                    "filling forward {} symbol(s) over {buckets} buckets is more than \
                     {MAX_FILLED_BUCKETS} rows: narrow the range or widen the interval",
                    req.symbols.len()
                )));
            }
        }
        range.filter()?;
        self.check_exchange(&req.exchange)?;
        let sessions = SessionSql::new(self, req)?;
        if sessions.is_some() && req.fill == Fill::Forward {
            return Err(QueryError::Invalid(
                "filling forward is by the clock: not with a session".into(),
            ));
        }
        let sourced = if self.bars_may_answer(req) {
            self.sourced(req, &range).await?
        } else {
            Sourced::default()
        };
        let src = if sourced.bars_files.is_empty() {
            match self.source(DataType::Trades.table_name(), &range).await? {
                Some(src) => src,
                None => return Ok(Vec::new()),
            }
        } else {
            String::new()
        };
        // Buckets are cut in the chosen zone's wall-clock time, aligned to its midnight,
        // and reported as UTC instants. Local time is a naive TIMESTAMP, so bucketing is
        // plain arithmetic: bucketing a TIMESTAMPTZ by days goes through ICU's calendar
        // for every row (20x slower in bench/query). For UTC the naive value comes from the
        // epoch microseconds, with no zone conversion at all; another zone needs one ICU
        // conversion per row each way.
        let zone = match (&sessions, req.tz) {
            (Some(s), _) => Some(s.zone().to_string()),
            (None, TimeZoneChoice::Utc) => None,
            (None, TimeZoneChoice::Exchange) => Some(literal(
                self.timezone(&req.exchange)
                    .ok_or_else(|| {
                        QueryError::Invalid(format!(
                            "exchange {:?} has no time zone in topics.yaml",
                            req.exchange
                        ))
                    })?
                    .name(),
            )),
        };
        let interval = req.interval.sql();
        let local = |e: &str| match &zone {
            None => format!("make_timestamp(epoch_us({e}))"),
            Some(tz) => format!("timezone({tz}, {e})"),
        };
        let bucket = |e: &str| {
            format!(
                "time_bucket({interval}, {}, TIMESTAMP '2000-01-01')",
                local(e)
            )
        };
        let instant = |c: &str| match &zone {
            None => format!("make_timestamptz(epoch_us({c}))"),
            Some(tz) => format!("timezone({tz}, {c})"),
        };
        // With a session: the trading day's session joined to every row, buckets from its
        // open.
        let in_session = |e: &str| sessions.as_ref().map_or(String::new(), |s| s.join(e));
        let bucketed = |e: &str| sessions.as_ref().map_or_else(|| bucket(e), |s| s.bucket(e));
        let bucket_rows = bucketed("exchange_timestamp");
        let join_rows = in_session("exchange_timestamp");
        let bucket_start = instant("local_bucket");
        // The grid's ends are the request's own instants (formatted here, not user text).
        let grid_from = bucket(&format!("TIMESTAMPTZ '{}'", req.from.to_rfc3339()));
        let grid_to = local(&format!("TIMESTAMPTZ '{}'", req.to.to_rfc3339()));
        // From trades only: every row bucketed straight into the asked interval.
        let mut ranges = 1;
        let bars = if sourced.bars_files.is_empty() {
            format!(
                "bars AS (
                 SELECT symbol,
                        {bucket_rows} AS local_bucket,
                        arg_min(price, (exchange_timestamp, sequence_number)) AS open,
                        max(price) AS high,
                        min(price) AS low,
                        arg_max(price, (exchange_timestamp, sequence_number)) AS close,
                        sum(quantity) AS volume,
                        CAST(sum(price * quantity) / nullif(sum(quantity), 0) AS DECIMAL(18, 8)) AS vwap,
                        count(*) AS trades
                 FROM {src} {join_rows}
                 WHERE {IN_RANGE}
                 GROUP BY ALL)"
            )
        } else {
            // Minutes from the bars days' bars and the other days' trades, then the asked
            // interval from the minutes: the same decimal sums either way (module bars).
            let from_trades = if sourced.trades_files.is_empty() {
                String::new()
            } else {
                ranges += 1;
                format!(
                    "UNION ALL
                     SELECT symbol,
                            make_timestamptz(epoch_us(exchange_timestamp) // 60000000 * 60000000) AS minute,
                            arg_min(price, (exchange_timestamp, sequence_number)) AS open,
                            max(price) AS high,
                            min(price) AS low,
                            arg_max(price, (exchange_timestamp, sequence_number)) AS close,
                            sum(quantity) AS volume,
                            sum(price * quantity) AS notional,
                            count(*) AS trades
                     FROM {}
                     WHERE {IN_RANGE}
                     GROUP BY ALL",
                    read_parquet(&sourced.trades_files)
                )
            };
            let bucket_minutes = bucketed("minute");
            let join_minutes = in_session("minute");
            let per_bucket = if req.interval.seconds() == 60 && sessions.is_none() {
                // A minute is a bucket: nothing to aggregate.
                format!(
                    "SELECT symbol, {bucket_minutes} AS local_bucket, open, high, low, close,
                            volume, CAST(notional / nullif(volume, 0) AS DECIMAL(18, 8)) AS vwap,
                            trades
                     FROM minutes"
                )
            } else {
                format!(
                    "SELECT symbol, {bucket_minutes} AS local_bucket,
                            arg_min(open, minute) AS open,
                            max(high) AS high,
                            min(low) AS low,
                            arg_max(close, minute) AS close,
                            sum(volume) AS volume,
                            CAST(sum(notional) / nullif(sum(volume), 0) AS DECIMAL(18, 8)) AS vwap,
                            CAST(sum(trades) AS BIGINT) AS trades
                     FROM minutes {join_minutes}
                     GROUP BY ALL"
                )
            };
            format!(
                "minutes AS (
                     SELECT symbol, bucket_start AS minute, open, high, low, close, volume,
                            notional, trades
                     FROM {}
                     WHERE {BARS_IN_RANGE}
                     {from_trades}),
                 bars AS ({per_bucket})",
                read_parquet(&sourced.bars_files)
            )
        };
        let bars = match &sessions {
            Some(s) => format!("{}, {bars}", s.cte),
            None => bars,
        };
        let sql = match req.fill {
            Fill::Omit => format!(
                "WITH {bars}
                 SELECT symbol, {bucket_start} AS bucket_start,
                        open, high, low, close, volume, vwap, trades
                 FROM bars ORDER BY symbol, bucket_start"
            ),
            Fill::Forward => format!(
                "WITH {bars},
                 grid AS (
                     SELECT s.symbol, g.range AS local_bucket
                     FROM (SELECT DISTINCT symbol FROM bars) s,
                          range({grid_from}, {grid_to}, {interval}) g),
                 filled AS (
                     SELECT g.symbol, g.local_bucket, b.open, b.high, b.low, b.close,
                            b.volume, b.vwap, b.trades,
                            last_value(b.close IGNORE NULLS) OVER (
                                PARTITION BY g.symbol ORDER BY g.local_bucket
                                ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS carried
                     FROM grid g LEFT JOIN bars b USING (symbol, local_bucket))
                 SELECT symbol, {bucket_start} AS bucket_start,
                        coalesce(open, carried) AS open, coalesce(high, carried) AS high,
                        coalesce(low, carried) AS low, coalesce(close, carried) AS close,
                        coalesce(volume, 0) AS volume, vwap, coalesce(trades, 0) AS trades
                 FROM filled WHERE carried IS NOT NULL
                 ORDER BY symbol, bucket_start"
            ),
        };
        let bars = self.run_ranged(&sql, &range, ranges)?;
        self.check_symbols(DataType::Trades.table_name(), &range, &bars)
            .await?;
        Ok(bars)
    }

    /// [`Session::ohlcv`] as typed rows.
    pub async fn ohlcv_bars(&self, req: &OhlcvRequest) -> Result<Vec<Bar>> {
        crate::rows::from_batches(&self.ohlcv(req).await?)
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
        for s in ["1s", "15m", "4h", "1d"] {
            assert_eq!(s.parse::<Interval>().unwrap().to_string(), s);
        }
    }
}
