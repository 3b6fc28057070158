//! One-minute bars (`market_data.bars_1m`): how a day of trades becomes its rows, and how
//! a reader knows that a day's bars describe exactly the trades it sees.
//!
//! A bar keeps what coarser bars need to be computed from it exactly: open and close with
//! the sequence numbers of their trades, high, low, the volume and the notional (sum of
//! price × quantity, as an exact decimal), the trade count. Any interval that is a whole
//! number of minutes, in UTC or in an exchange's time (every zone offset in use is a whole
//! number of minutes), is a union of these minutes: open is the first minute's open, close
//! the last's, VWAP `sum(notional) / sum(volume)` — the same sums, in the same decimal
//! types, that the query library computes from raw trades.
//!
//! Which trades: a day's bars carry, as their `built_from` partition value, the
//! [`fingerprint`] of the set of trades data files of that (exchange, day) they were built
//! from. Data files never change, so the same set of files is the same rows: a reader whose
//! pinned trades snapshot holds the same files for that day may use the bars; any other
//! set (before compaction, after late data, an older pin) reads the trades.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::AsArray;
use arrow::datatypes::{Decimal128Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{
    Array, ArrayRef, Decimal128Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow_schema::{DataType as ArrowType, SchemaRef};
use sha2::{Digest, Sha256};

use crate::layout::{EXCHANGE_TIMESTAMP, SYMBOL};

/// The minute a bar starts at (UTC).
pub const BUCKET_START: &str = "bucket_start";
/// The fingerprint of the trades files a day's bars were built from (a partition value).
pub const BUILT_FROM: &str = "built_from";
/// The trades columns bars are built from.
pub const TRADE_COLUMNS: [&str; 5] = [
    SYMBOL,
    EXCHANGE_TIMESTAMP,
    "sequence_number",
    "price",
    "quantity",
];
/// Snapshot summary property of a bars commit: the trades snapshot it was built from.
pub const TRADES_SNAPSHOT_PROPERTY: &str = "k2.bars.trades-snapshot-id";

const MICROS_PER_MINUTE: i64 = 60_000_000;

/// The fingerprint of a set of data files (their paths, in any order): 128 bits of SHA-256
/// over the sorted paths, as hex.
pub fn fingerprint<'a>(paths: impl IntoIterator<Item = &'a str>) -> String {
    let mut sorted: Vec<&str> = paths.into_iter().collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut h = Sha256::new();
    for p in sorted {
        h.update(p.as_bytes());
        h.update(b"\n");
    }
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Why trades could not be folded into bars.
#[derive(Debug, thiserror::Error)]
pub enum BarsError {
    #[error("trades batch: {0}")]
    Input(String),
    #[error("{symbol} at {minute}: the minute's notional exceeds a decimal(38, 16)")]
    Overflow { symbol: String, minute: i64 },
}

/// A trade's place in time: bars open and close by (exchange_timestamp, sequence_number),
/// as the query library's raw computation does.
type At = (i64, i64);

#[derive(Debug, Clone, Copy)]
struct Bar {
    open: (At, i128),
    close: (At, i128),
    high: i128,
    low: i128,
    volume: i128,
    notional: i128,
    trades: i64,
}

/// The bars of one exchange-day, folded from its trades batch by batch in any order.
/// Memory is one entry per symbol-minute with trades (at most symbols × 1,440), never the
/// trades themselves.
#[derive(Debug, Default)]
pub struct MinuteBars {
    symbols: HashMap<String, u32>,
    bars: HashMap<(u32, i64), Bar>,
    overflow: Option<(u32, i64)>,
}

impl MinuteBars {
    /// Folds a batch of trades (it must have [`TRADE_COLUMNS`]).
    pub fn add(&mut self, batch: &RecordBatch) -> Result<(), BarsError> {
        let col = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| BarsError::Input(format!("no column {name}")))
        };
        let symbol = arrow::compute::cast(col(SYMBOL)?, &ArrowType::Utf8)
            .map_err(|e| BarsError::Input(e.to_string()))?;
        let symbol = symbol.as_string::<i32>();
        let ts = col(EXCHANGE_TIMESTAMP)?
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or_else(|| BarsError::Input("exchange_timestamp is not in microseconds".into()))?;
        let seq = col("sequence_number")?
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| BarsError::Input("sequence_number is not a long".into()))?;
        let decimal = |name: &str, scale: i8| -> Result<&Decimal128Array, BarsError> {
            let a = col(name)?
                .as_primitive_opt::<Decimal128Type>()
                .ok_or_else(|| BarsError::Input(format!("{name} is not a decimal")))?;
            if a.scale() != scale {
                return Err(BarsError::Input(format!(
                    "{name} has scale {}, not {scale}",
                    a.scale()
                )));
            }
            Ok(a)
        };
        let price = decimal("price", 8)?;
        let quantity = decimal("quantity", 8)?;
        for r in 0..batch.num_rows() {
            if symbol.is_null(r) || ts.is_null(r) || price.is_null(r) || quantity.is_null(r) {
                return Err(BarsError::Input(format!(
                    "row {r} has a null required column"
                )));
            }
            let next = self.symbols.len() as u32;
            let s = match self.symbols.get(symbol.value(r)) {
                Some(&s) => s,
                None => {
                    self.symbols.insert(symbol.value(r).to_string(), next);
                    next
                }
            };
            let t = ts.value(r);
            let minute = t.div_euclid(MICROS_PER_MINUTE) * MICROS_PER_MINUTE;
            let at = (t, if seq.is_null(r) { 0 } else { seq.value(r) });
            let (p, q) = (price.value(r), quantity.value(r));
            let notional = p.checked_mul(q);
            let bar = self.bars.entry((s, minute)).or_insert(Bar {
                open: (at, p),
                close: (at, p),
                high: p,
                low: p,
                volume: 0,
                notional: 0,
                trades: 0,
            });
            if at < bar.open.0 {
                bar.open = (at, p);
            }
            if at >= bar.close.0 {
                bar.close = (at, p);
            }
            bar.high = bar.high.max(p);
            bar.low = bar.low.min(p);
            bar.volume += q;
            bar.trades += 1;
            match notional.and_then(|n| bar.notional.checked_add(n)) {
                Some(n) if n.unsigned_abs() < 10u128.pow(38) => bar.notional = n,
                _ => self.overflow = self.overflow.or(Some((s, minute))),
            }
        }
        Ok(())
    }

    /// Rows so far.
    pub fn len(&self) -> usize {
        self.bars.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bars.is_empty()
    }

    /// The bars as one batch of `schema` (the bars table's), sorted by symbol and minute,
    /// every row carrying `exchange` and `built_from`.
    pub fn finish(
        self,
        schema: SchemaRef,
        exchange: &str,
        built_from: &str,
    ) -> Result<RecordBatch, BarsError> {
        let names: BTreeMap<u32, &str> = self
            .symbols
            .iter()
            .map(|(name, &id)| (id, name.as_str()))
            .collect();
        if let Some((s, minute)) = self.overflow {
            return Err(BarsError::Overflow {
                symbol: names.get(&s).unwrap_or(&"?").to_string(),
                minute,
            });
        }
        let mut rows: Vec<(&str, i64, Bar)> = self
            .bars
            .into_iter()
            .map(|((s, minute), bar)| (names[&s], minute, bar))
            .collect();
        rows.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        let n = rows.len();
        let dec = |values: Vec<i128>, p: u8, s: i8| -> Result<ArrayRef, BarsError> {
            Ok(Arc::new(
                Decimal128Array::from(values)
                    .with_precision_and_scale(p, s)
                    .map_err(|e| BarsError::Input(e.to_string()))?,
            ))
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                exchange, n,
            ))),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.1))
                    .with_timezone("+00:00"),
            ),
            dec(rows.iter().map(|r| r.2.open.1).collect(), 18, 8)?,
            dec(rows.iter().map(|r| r.2.high).collect(), 18, 8)?,
            dec(rows.iter().map(|r| r.2.low).collect(), 18, 8)?,
            dec(rows.iter().map(|r| r.2.close.1).collect(), 18, 8)?,
            dec(rows.iter().map(|r| r.2.volume).collect(), 38, 8)?,
            dec(rows.iter().map(|r| r.2.notional).collect(), 38, 16)?,
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.2.trades),
            )),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.2.open.0.1),
            )),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.2.close.0.1),
            )),
            Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                built_from, n,
            ))),
        ];
        RecordBatch::try_new(schema, columns).map_err(|e| BarsError::Input(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use arrow_schema::{Field, Schema, TimeUnit};

    use super::*;
    use crate::layout::TableLayout;

    fn trades(rows: &[(&str, i64, i64, i128, i128)]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new(SYMBOL, ArrowType::Utf8, false),
            Field::new(
                EXCHANGE_TIMESTAMP,
                ArrowType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
                false,
            ),
            Field::new("sequence_number", ArrowType::Int64, false),
            Field::new("price", ArrowType::Decimal128(18, 8), false),
            Field::new("quantity", ArrowType::Decimal128(28, 8), false),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.1))
                    .with_timezone("+00:00"),
            ),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
            Arc::new(
                Decimal128Array::from_iter_values(rows.iter().map(|r| r.3))
                    .with_precision_and_scale(18, 8)
                    .unwrap(),
            ),
            Arc::new(
                Decimal128Array::from_iter_values(rows.iter().map(|r| r.4))
                    .with_precision_and_scale(28, 8)
                    .unwrap(),
            ),
        ];
        RecordBatch::try_new(schema, columns).unwrap()
    }

    const E8: i128 = 100_000_000;
    const MIN: i64 = MICROS_PER_MINUTE;

    #[test]
    fn a_minute_opens_and_closes_by_time_then_sequence_whatever_order_trades_arrive_in() {
        let mut bars = MinuteBars::default();
        // Two batches, out of order; two trades at the same instant told apart by sequence.
        bars.add(&trades(&[
            ("BHP", 10, 7, 31 * E8, 100 * E8),
            ("BHP", 5, 9, 30 * E8, 10 * E8),
            ("RIO", MIN + 1, 1, 70 * E8, E8),
        ]))
        .unwrap();
        bars.add(&trades(&[
            ("BHP", 5, 8, 29 * E8, 10 * E8),
            ("BHP", MIN - 1, 2, 32 * E8, E8),
        ]))
        .unwrap();
        let layout = TableLayout::bars_1m().unwrap();
        let b = bars.finish(layout.arrow_schema, "asx", "abc").unwrap();
        assert_eq!(b.num_rows(), 2);
        let dec = |c: &str| {
            b.column_by_name(c)
                .unwrap()
                .as_primitive::<Decimal128Type>()
                .clone()
        };
        let long = |c: &str| {
            b.column_by_name(c)
                .unwrap()
                .as_primitive::<Int64Type>()
                .clone()
        };
        // BHP's minute 0: first (5, 8) at 29, last (MIN-1, 2) at 32.
        assert_eq!(b.column(0).as_string::<i32>().value(0), "BHP");
        assert_eq!(dec("open").value(0), 29 * E8);
        assert_eq!(dec("close").value(0), 32 * E8);
        assert_eq!(dec("high").value(0), 32 * E8);
        assert_eq!(dec("low").value(0), 29 * E8);
        assert_eq!(dec("volume").value(0), 121 * E8);
        // 30×10 + 29×10 + 31×100 + 32×1 = 3722, at scale 16.
        assert_eq!(dec("notional").value(0), 3722 * E8 * E8);
        assert_eq!(long("trades").value(0), 4);
        assert_eq!(
            (
                long("first_sequence").value(0),
                long("last_sequence").value(0)
            ),
            (8, 2)
        );
        // RIO's trade falls in minute 1.
        let starts = b
            .column_by_name(BUCKET_START)
            .unwrap()
            .as_primitive::<TimestampMicrosecondType>()
            .clone();
        assert_eq!((starts.value(0), starts.value(1)), (0, MIN));
        assert_eq!(
            b.column_by_name(BUILT_FROM)
                .unwrap()
                .as_string::<i32>()
                .value(1),
            "abc"
        );
    }

    #[test]
    fn a_notional_beyond_decimal_38_16_is_an_error_not_a_wrong_bar() {
        let mut bars = MinuteBars::default();
        let huge = 10i128.pow(17);
        bars.add(&trades(&[("BHP", 0, 1, huge, 10i128.pow(27))]))
            .unwrap();
        let layout = TableLayout::bars_1m().unwrap();
        let e = bars.finish(layout.arrow_schema, "asx", "x").unwrap_err();
        assert!(matches!(e, BarsError::Overflow { .. }), "{e}");
    }

    #[test]
    fn the_fingerprint_is_of_the_set_of_files() {
        assert_eq!(fingerprint(["b", "a"]), fingerprint(["a", "b", "a"]));
        assert_ne!(fingerprint(["a"]), fingerprint(["a", "b"]));
        assert_ne!(fingerprint(["ab"]), fingerprint(["a", "b"]));
        assert_eq!(fingerprint(["a"]).len(), 32);
    }
}
