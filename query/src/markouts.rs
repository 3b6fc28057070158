//! Markouts: for each trade of a range, the price some time after it — the mid of the quote
//! prevailing then, or the last trade's price then — and the markout, that price minus the
//! trade's price, signed by the trade's side: positive when the market moved the way the
//! trade bet (up after a buy, down after a sell), null for a trade of unknown side. Several
//! horizons in one question, over the session's pinned snapshots, as DuckDB `ASOF` joins.

use std::str::FromStr;

use arrow::record_batch::RecordBatch;
use chrono::{DateTime, Duration, Utc};

use k2_common::DataType;

use crate::error::{QueryError, Result};
use crate::ohlcv::Interval;
use crate::range::{Bound, IN_RANGE, Range};
use crate::session::Session;

/// What "the price then" is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MarkoutPrice {
    /// The mid of the last two-sided quote at or before the horizon.
    #[default]
    Mid,
    /// The price of the last trade at or before the horizon.
    Trade,
}

impl FromStr for MarkoutPrice {
    type Err = QueryError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "mid" => Ok(MarkoutPrice::Mid),
            "trade" => Ok(MarkoutPrice::Trade),
            other => Err(QueryError::Invalid(format!(
                "markout price {other:?}: expected mid or trade"
            ))),
        }
    }
}

/// How long after a trade its price is marked: `N{s,m,h,d}`, N > 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Horizon(pub Interval);

impl FromStr for Horizon {
    type Err = QueryError;

    fn from_str(s: &str) -> Result<Self> {
        s.parse::<Interval>().map(Horizon).map_err(|_| {
            QueryError::Invalid(format!(
                "horizon {s:?}: expected a positive N followed by s, m, h or d (e.g. 1s, 10s, 1m)"
            ))
        })
    }
}

impl std::fmt::Display for Horizon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl Horizon {
    fn duration(self) -> Duration {
        Duration::seconds(self.0.seconds())
    }
}

#[derive(Debug, Clone)]
pub struct MarkoutRequest {
    pub range: Range,
    /// At least one, each distinct.
    pub horizons: Vec<Horizon>,
    pub price: MarkoutPrice,
}

impl Session {
    /// One row per trade of the range, ordered by symbol, exchange time and sequence
    /// number: `symbol, exchange_timestamp, sequence_number, side, price, quantity`, then
    /// for each horizon `h` in order `price_h` (the price then, null before the first quote
    /// or trade) and `markout_h` (`(price_h − price) × +1 for BUY, −1 for SELL`; null
    /// otherwise), as exact decimals.
    pub async fn markouts(&self, req: &MarkoutRequest) -> Result<Vec<RecordBatch>> {
        let range = &req.range;
        if req.horizons.is_empty() {
            return Err(QueryError::Invalid("give at least one horizon".into()));
        }
        let mut names: Vec<String> = req.horizons.iter().map(Horizon::to_string).collect();
        names.sort();
        names.dedup();
        if names.len() != req.horizons.len() {
            return Err(QueryError::Invalid(
                "the same horizon is given twice".into(),
            ));
        }
        let Some(trades) = self.source(DataType::Trades.table_name(), range).await? else {
            return Ok(Vec::new());
        };
        let longest = req
            .horizons
            .iter()
            .map(|h| h.duration())
            .max()
            .unwrap_or_default();
        // The prices the horizons can land on: up to the last trade's furthest horizon,
        // and, for mids, from the start of the table (a quote from long before can still
        // prevail).
        let prices_range = Range {
            from: match req.price {
                MarkoutPrice::Mid => DateTime::<Utc>::UNIX_EPOCH,
                MarkoutPrice::Trade => range.from,
            },
            to: range.to + longest,
            ..range.clone()
        };
        // One price per symbol and instant (the last by sequence number), so that a
        // horizon landing on an instant with several quotes or trades has one answer.
        let prices = match req.price {
            MarkoutPrice::Mid => {
                let Some(quotes) = self
                    .source(DataType::Quotes.table_name(), &prices_range)
                    .await?
                else {
                    return Err(QueryError::Invalid(
                        "markouts at the mid need quotes: there is no quotes table".into(),
                    ));
                };
                format!(
                    "SELECT symbol, exchange, exchange_timestamp AS at,
                            arg_max(CAST((bid_price + ask_price) / 2 AS DECIMAL(18, 8)),
                                    sequence_number) AS price
                     FROM {quotes}
                     WHERE {IN_RANGE} AND bid_price IS NOT NULL AND ask_price IS NOT NULL
                     GROUP BY ALL"
                )
            }
            MarkoutPrice::Trade => format!(
                "SELECT symbol, exchange, exchange_timestamp AS at,
                        arg_max(price, sequence_number) AS price
                 FROM {} WHERE {IN_RANGE} GROUP BY ALL",
                self.source(DataType::Trades.table_name(), &prices_range)
                    .await?
                    .unwrap_or_else(|| trades.clone())
            ),
        };
        let mut at = Vec::new();
        let mut columns = Vec::new();
        let mut joins = Vec::new();
        for (i, h) in req.horizons.iter().enumerate() {
            at.push(format!(
                "exchange_timestamp + INTERVAL '{} second' AS at_{i}",
                h.0.seconds()
            ));
            columns.push(format!(
                "p{i}.price AS \"price_{h}\",
                 (p{i}.price - t.price) * CASE t.side WHEN 'BUY' THEN 1 WHEN 'SELL' THEN -1 END
                     AS \"markout_{h}\""
            ));
            joins.push(format!(
                "ASOF LEFT JOIN p p{i}
                   ON t.symbol = p{i}.symbol AND t.exchange = p{i}.exchange AND t.at_{i} >= p{i}.at"
            ));
        }
        let sql = format!(
            "WITH t AS (SELECT symbol, exchange, exchange_timestamp, sequence_number, side, price,
                               quantity, {at}
                        FROM {trades} WHERE {IN_RANGE}),
                  p AS ({prices})
             SELECT t.symbol, t.exchange_timestamp, t.sequence_number, t.side, t.price,
                    t.quantity, {columns}
             FROM t {joins}
             ORDER BY t.symbol, t.exchange_timestamp, t.sequence_number",
            at = at.join(", "),
            columns = columns.join(",\n"),
            joins = joins.join("\n"),
        );
        let trades_bound = Bound::of(range);
        let prices_bound = Bound::of(&prices_range);
        let params: Vec<&dyn duckdb::ToSql> = trades_bound
            .params()
            .into_iter()
            .chain(prices_bound.params())
            .collect();
        let rows = self.run(&sql, &params)?;
        self.check_symbols(DataType::Trades.table_name(), range, &rows)
            .await?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn horizons_are_positive_durations_and_prices_mid_or_trade() {
        assert_eq!("10s".parse::<Horizon>().unwrap().to_string(), "10s");
        assert_eq!(
            "1m".parse::<Horizon>().unwrap().duration(),
            Duration::seconds(60)
        );
        for bad in ["0s", "-1s", "1", "s", "1w"] {
            let e = bad.parse::<Horizon>().unwrap_err().to_string();
            assert!(
                e.contains("horizon") && e.contains("positive"),
                "{bad}: {e}"
            );
        }
        assert_eq!(
            "trade".parse::<MarkoutPrice>().unwrap(),
            MarkoutPrice::Trade
        );
        assert!(
            "last"
                .parse::<MarkoutPrice>()
                .unwrap_err()
                .to_string()
                .contains("mid or trade")
        );
    }
}
