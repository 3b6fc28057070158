//! The other questions backtests ask: trades and quotes in a range, each trade with the
//! quote prevailing when it printed (DuckDB `ASOF JOIN`), spread and mid statistics, and a
//! daily summary per symbol. Each plans its files for the range first, like [`ohlcv`].
//!
//! [`ohlcv`]: crate::Session::ohlcv

use arrow::record_batch::RecordBatch;
use chrono::{DateTime, Utc};

use k2_common::DataType;

use crate::error::Result;
use crate::ohlcv::{Fill, Interval, IntervalUnit, OhlcvRequest, TimeZoneChoice};
use crate::range::{Bound, IN_RANGE, Range};
use crate::session::Session;

impl Session {
    /// Rows of `table` in the range, ordered by symbol, exchange time and sequence number.
    async fn rows_in(&self, table: &str, range: &Range) -> Result<Vec<RecordBatch>> {
        let Some(src) = self.source(table, range).await? else {
            return Ok(Vec::new());
        };
        let sql = format!(
            "SELECT * FROM {src} WHERE {IN_RANGE} ORDER BY symbol, exchange_timestamp, sequence_number"
        );
        let rows = self.run_ranged(&sql, range, 1)?;
        self.check_symbols(table, range, &rows).await?;
        Ok(rows)
    }

    /// Trades of the range, ordered by symbol, exchange time and sequence number.
    pub async fn trades_in(&self, range: &Range) -> Result<Vec<RecordBatch>> {
        self.rows_in(DataType::Trades.table_name(), range).await
    }

    /// Quotes of the range, ordered by symbol, exchange time and sequence number.
    pub async fn quotes_in(&self, range: &Range) -> Result<Vec<RecordBatch>> {
        self.rows_in(DataType::Quotes.table_name(), range).await
    }

    /// Each trade with the quote prevailing when it printed (the last quote of the same
    /// symbol at or before the trade's exchange time; none before the first quote):
    /// `symbol, exchange_timestamp, sequence_number, price, quantity, side, quote_time,
    /// bid_price, ask_price, bid_size, ask_size, mid, spread`.
    pub async fn trades_with_quotes(&self, range: &Range) -> Result<Vec<RecordBatch>> {
        let Some(trades) = self.source(DataType::Trades.table_name(), range).await? else {
            return Ok(Vec::new());
        };
        // Quotes from well before the range can prevail at its start: plan them from the
        // beginning of the table up to the range's end.
        let quote_range = Range {
            from: DateTime::<Utc>::UNIX_EPOCH,
            ..range.clone()
        };
        let quotes = match self
            .source(DataType::Quotes.table_name(), &quote_range)
            .await?
        {
            Some(q) => q,
            None => "(SELECT NULL::VARCHAR AS symbol, NULL::VARCHAR AS exchange,
                        NULL::TIMESTAMPTZ AS exchange_timestamp, NULL::BIGINT AS sequence_number,
                        NULL::DECIMAL(18,8) AS bid_price, NULL::DECIMAL(18,8) AS ask_price,
                        NULL::DECIMAL(28,8) AS bid_size, NULL::DECIMAL(28,8) AS ask_size
                      WHERE false)"
                .to_string(),
        };
        let sql = format!(
            "WITH t AS (SELECT * FROM {trades} WHERE {IN_RANGE}),
                  q AS (SELECT symbol, exchange, exchange_timestamp AS quote_time,
                               bid_price, ask_price, bid_size, ask_size
                        FROM {quotes} WHERE {IN_RANGE})
             SELECT t.symbol, t.exchange_timestamp, t.sequence_number, t.price, t.quantity,
                    t.side, q.quote_time, q.bid_price, q.ask_price, q.bid_size, q.ask_size,
                    CAST((q.bid_price + q.ask_price) / 2 AS DECIMAL(18, 8)) AS mid,
                    q.ask_price - q.bid_price AS spread
             FROM t ASOF LEFT JOIN q
               ON t.symbol = q.symbol AND t.exchange = q.exchange
              AND t.exchange_timestamp >= q.quote_time
             ORDER BY t.symbol, t.exchange_timestamp, t.sequence_number"
        );
        let trades = Bound::of(range);
        let mut quotes = Bound::of(range);
        quotes.from = quote_range.from.to_rfc3339();
        let params: Vec<&dyn duckdb::ToSql> =
            trades.params().into_iter().chain(quotes.params()).collect();
        let rows = self.run(&sql, &params)?;
        self.check_symbols(DataType::Trades.table_name(), range, &rows)
            .await?;
        Ok(rows)
    }

    /// Per symbol, over quotes with both sides present: `quotes, crossed (ask < bid),
    /// min_spread, avg_spread, max_spread, avg_mid`.
    pub async fn spread_stats(&self, range: &Range) -> Result<Vec<RecordBatch>> {
        let Some(src) = self.source(DataType::Quotes.table_name(), range).await? else {
            return Ok(Vec::new());
        };
        let sql = format!(
            "SELECT symbol,
                    count(*) AS quotes,
                    count(*) FILTER (WHERE ask_price < bid_price) AS crossed,
                    min(ask_price - bid_price) AS min_spread,
                    CAST(avg(ask_price - bid_price) AS DECIMAL(18, 8)) AS avg_spread,
                    max(ask_price - bid_price) AS max_spread,
                    CAST(avg((bid_price + ask_price) / 2) AS DECIMAL(18, 8)) AS avg_mid
             FROM {src}
             WHERE {IN_RANGE} AND bid_price IS NOT NULL AND ask_price IS NOT NULL
             GROUP BY symbol ORDER BY symbol"
        );
        let stats = self.run_ranged(&sql, range, 1)?;
        self.check_symbols(DataType::Quotes.table_name(), range, &stats)
            .await?;
        Ok(stats)
    }

    /// One row per symbol and trading day (in the exchange's time zone): OHLCV, VWAP and
    /// the trade count, as [`Session::ohlcv`] with `1d` bars.
    pub async fn daily_summary(&self, range: &Range) -> Result<Vec<RecordBatch>> {
        self.ohlcv(&OhlcvRequest {
            symbols: range.symbols.clone(),
            exchange: range.exchange.clone(),
            interval: Interval {
                count: 1,
                unit: IntervalUnit::Day,
            },
            from: range.from,
            to: range.to,
            tz: TimeZoneChoice::Exchange,
            fill: Fill::Omit,
            session: crate::SessionChoice::Off,
        })
        .await
    }
}
