//! Bars computed from the shared ASX CSV files without K2's code, to check K2's OHLCV
//! against, and OHLCV answers read back into the same shape.

use std::collections::BTreeMap;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{Decimal128Type, Int64Type, TimestampMicrosecondType};
use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Australia::Sydney;

/// One bar as the test computes it: open, high, low, close, volume (1e-8 units), trades.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub open: i128,
    pub high: i128,
    pub low: i128,
    pub close: i128,
    pub volume: i128,
    pub notional: i128,
    pub trades: i64,
}

/// `36.667` → 3_666_700_000 (units of 1e-8), without K2's code.
pub fn units(s: &str) -> i128 {
    let (w, f) = s.split_once('.').unwrap_or((s, ""));
    let f = format!("{f:0<8}");
    w.parse::<i128>().unwrap() * 100_000_000 + f[..8].parse::<i128>().unwrap()
}

/// Bars from the CSV: bucket start (UTC micros) → bar. `width` in seconds; `local`
/// aligns buckets to Sydney wall-clock time.
pub fn expected_bars(csv: &str, width: i64, local: bool) -> BTreeMap<i64, Bar> {
    let mut bars: BTreeMap<i64, Bar> = BTreeMap::new();
    for line in csv.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').collect();
        let naive =
            NaiveDateTime::parse_from_str(&format!("{} {}", f[0], f[1]), "%m/%d/%Y %H:%M:%S%.3f")
                .unwrap();
        let utc = Sydney
            .from_local_datetime(&naive)
            .earliest()
            .unwrap()
            .with_timezone(&Utc);
        let (p, q) = (units(f[2]), units(f[3]));
        let start = if local {
            let local_secs = naive.and_utc().timestamp();
            let bucket_local = local_secs - local_secs.rem_euclid(width);
            let naive_start = DateTime::from_timestamp(bucket_local, 0)
                .unwrap()
                .naive_utc();
            Sydney
                .from_local_datetime(&naive_start)
                .earliest()
                .unwrap()
                .timestamp_micros()
        } else {
            let s = utc.timestamp();
            (s - s.rem_euclid(width)) * 1_000_000
        };
        add(&mut bars, start, p, q);
    }
    bars
}

pub fn actual_bars(batches: &[RecordBatch]) -> BTreeMap<i64, (Bar, i128)> {
    let mut out = BTreeMap::new();
    for b in batches {
        let start = b["bucket_start"].as_primitive::<TimestampMicrosecondType>();
        let d = |n: &str| b[n].as_primitive::<Decimal128Type>().clone();
        let (open, high, low, close, volume, vwap) = (
            d("open"),
            d("high"),
            d("low"),
            d("close"),
            d("volume"),
            d("vwap"),
        );
        let trades = b["trades"].as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            out.insert(
                start.value(i),
                (
                    Bar {
                        open: open.value(i),
                        high: high.value(i),
                        low: low.value(i),
                        close: close.value(i),
                        volume: volume.value(i),
                        notional: 0,
                        trades: trades.value(i),
                    },
                    vwap.value(i),
                ),
            );
        }
    }
    out
}

/// Session bars from the CSV (ASX regular session 10:00–16:00 Sydney time, every date in
/// the sample a trading day): bucket start (UTC micros) → bar. `width` in seconds from the
/// open, `None` for one bar per session; `regular` drops trades outside the session.
pub fn expected_session_bars(csv: &str, width: Option<i64>, regular: bool) -> BTreeMap<i64, Bar> {
    let mut bars: BTreeMap<i64, Bar> = BTreeMap::new();
    for line in csv.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').collect();
        let local =
            NaiveDateTime::parse_from_str(&format!("{} {}", f[0], f[1]), "%m/%d/%Y %H:%M:%S%.3f")
                .unwrap();
        let open = local.date().and_hms_opt(10, 0, 0).unwrap();
        let close = local.date().and_hms_opt(16, 0, 0).unwrap();
        if regular && (local < open || local >= close) {
            continue;
        }
        let start = match width {
            None => open,
            Some(w) => {
                let offset = (local - open).num_microseconds().unwrap();
                open + chrono::Duration::microseconds(
                    offset.div_euclid(w * 1_000_000) * w * 1_000_000,
                )
            }
        };
        let start = Sydney
            .from_local_datetime(&start)
            .earliest()
            .unwrap()
            .timestamp_micros();
        let (p, q) = (units(f[2]), units(f[3]));
        add(&mut bars, start, p, q);
    }
    bars
}

/// A trade at price `p`, quantity `q` into the bar starting at `start`. Rows are in time order
/// within a file (ties keep file order = sequence order), so the last trade closes the bar.
fn add(bars: &mut BTreeMap<i64, Bar>, start: i64, p: i128, q: i128) {
    let bar = bars.entry(start).or_insert(Bar {
        open: p,
        high: p,
        low: p,
        close: p,
        volume: 0,
        notional: 0,
        trades: 0,
    });
    bar.high = bar.high.max(p);
    bar.low = bar.low.min(p);
    bar.close = p;
    bar.volume += q;
    bar.notional += p * q / 100_000_000;
    bar.trades += 1;
}
