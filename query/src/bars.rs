//! Which days of an OHLCV question the bars table answers (`bars_1m`, built by maintenance:
//! [`k2_table::bars`]) and which the trades do.
//!
//! A day (UTC) is answered from bars when all of these hold, and from trades otherwise:
//! - the pinned `bars_1m` snapshot has bars for the day built from exactly the trades files
//!   the pinned `trades` snapshot has for it (the `built_from` fingerprint; so a pin from
//!   before the bars, before compaction, or after late data reads trades);
//! - the question's interval is a whole number of minutes, and where the question's range
//!   starts or ends inside the day, it does so on a minute;
//! - for bars in an exchange's time, the zone's offset is a whole number of minutes at both
//!   ends of the day (true of every zone today; not of some historical local mean times).
//!
//! Planning reads only manifests: partition values say which bars describe which files.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, Offset, TimeZone, Utc};
use iceberg::expr::{Predicate, Reference};
use iceberg::spec::{Datum, Literal, PrimitiveLiteral, Transform};
use iceberg::table::Table;
use k2_common::DataType;
use k2_common::data_type::BARS_1M_TABLE;
use k2_table::bars::{BUCKET_START, BUILT_FROM, fingerprint};
use k2_table::layout::{EXCHANGE, EXCHANGE_TIMESTAMP};

use crate::error::Result;
use crate::ohlcv::{OhlcvRequest, TimeZoneChoice};
use crate::plan::{self, PlannedFile};
use crate::range::Range;
use crate::session::Session;
use crate::trading_session::SessionChoice;

const MICROS_PER_DAY: i64 = 86_400_000_000;
const MICROS_PER_MINUTE: i64 = 60_000_000;

/// Where an OHLCV answer's days came from (UTC days that have trades at the pin).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OhlcvSources {
    /// Days answered from `bars_1m`.
    pub bars_days: Vec<NaiveDate>,
    /// Days answered from `trades`.
    pub trades_days: Vec<NaiveDate>,
}

impl std::fmt::Display for OhlcvSources {
    /// `bars_1m: 3 days, trades: 1 day`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let days = |n: usize| format!("{n} day{}", if n == 1 { "" } else { "s" });
        write!(
            f,
            "{BARS_1M_TABLE}: {}, trades: {}",
            days(self.bars_days.len()),
            days(self.trades_days.len())
        )
    }
}

/// The sources and the files to read for each.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sourced {
    pub sources: OhlcvSources,
    /// Bars files of the bars days.
    pub bars_files: Vec<String>,
    /// Trades files of the trades days that may hold the asked symbols.
    pub trades_files: Vec<String>,
}

fn day_of(micros: i64) -> i32 {
    micros.div_euclid(MICROS_PER_DAY) as i32
}

fn date(day: i32) -> NaiveDate {
    DateTime::from_timestamp(i64::from(day) * 86_400, 0)
        .map(|t| t.date_naive())
        .unwrap_or_default()
}

/// The position of the partition field over `column` (with `transform`) in the table's spec.
fn field_at(table: &Table, column: &str, transform: Transform) -> Option<usize> {
    let m = table.metadata();
    let id = m.current_schema().field_by_name(column)?.id;
    m.default_partition_spec()
        .fields()
        .iter()
        .position(|f| f.source_id == id && f.transform == transform)
}

fn int_at(f: &PlannedFile, at: usize) -> Option<i32> {
    match f.partition.get(at) {
        Some(Some(Literal::Primitive(PrimitiveLiteral::Int(v)))) => Some(*v),
        _ => None,
    }
}

fn string_at(f: &PlannedFile, at: usize) -> Option<&str> {
    match f.partition.get(at) {
        Some(Some(Literal::Primitive(PrimitiveLiteral::String(v)))) => Some(v),
        _ => None,
    }
}

/// `exchange = X AND column ∈ [from, to)`.
fn on(exchange: &str, column: &str, from: i64, to: i64) -> Predicate {
    Reference::new(EXCHANGE)
        .equal_to(Datum::string(exchange))
        .and(Reference::new(column).greater_than_or_equal_to(Datum::timestamptz_micros(from)))
        .and(Reference::new(column).less_than(Datum::timestamptz_micros(to)))
}

/// Whether the part of `[from, to)` inside `day` starts and ends on a minute.
fn aligned(day: i32, from: i64, to: i64) -> bool {
    let start = i64::from(day) * MICROS_PER_DAY;
    let (lo, hi) = (from.max(start), to.min(start + MICROS_PER_DAY));
    lo % MICROS_PER_MINUTE == 0 && hi % MICROS_PER_MINUTE == 0
}

/// Whether `tz`'s offset is a whole number of minutes at both ends of `day`.
fn whole_minutes(tz: chrono_tz::Tz, day: i32) -> bool {
    [0, MICROS_PER_DAY].into_iter().all(|edge| {
        let at = Utc
            .timestamp_micros(i64::from(day) * MICROS_PER_DAY + edge)
            .single()
            .unwrap_or_default();
        tz.offset_from_utc_datetime(&at.naive_utc())
            .fix()
            .local_minus_utc()
            % 60
            == 0
    })
}

impl Session {
    /// Which days of `req` the bars table would answer and which the trades would, at
    /// this session's pin (for the curious, and for tests: the answer is the same).
    pub async fn ohlcv_sources(&self, req: &OhlcvRequest) -> Result<OhlcvSources> {
        let range = req.range();
        range.filter()?;
        Ok(self.sourced(req, &range).await?.sources)
    }

    /// Whether bars could answer any day of `req` at this pin (no planning needed).
    pub(crate) fn bars_may_answer(&self, req: &OhlcvRequest) -> bool {
        req.interval.seconds() % 60 == 0
            && self
                .pinned()
                .tables
                .get(BARS_1M_TABLE)
                .is_some_and(|t| t.snapshot_id.is_some())
    }

    pub(crate) async fn sourced(&self, req: &OhlcvRequest, range: &Range) -> Result<Sourced> {
        let mut out = Sourced::default();
        let pinned = self.pinned();
        let Some(trades) = pinned.tables.get(DataType::Trades.table_name()) else {
            return Ok(out);
        };
        let Some(trades_snapshot) = trades.snapshot_id else {
            return Ok(out);
        };
        let (from, to) = (req.from.timestamp_micros(), req.to.timestamp_micros());
        let (first, last) = (day_of(from), day_of(to - 1));
        let (whole_from, whole_to) = (
            i64::from(first) * MICROS_PER_DAY,
            (i64::from(last) + 1) * MICROS_PER_DAY,
        );
        // Every trades file of the range's days, whatever its symbols: the set a day's bars
        // must have been built from.
        let Some(trades_day) = field_at(&trades.table, EXCHANGE_TIMESTAMP, Transform::Day) else {
            return Ok(out);
        };
        let mut by_day: BTreeMap<i32, Vec<String>> = BTreeMap::new();
        for f in plan::planned_files(
            &trades.table,
            trades_snapshot,
            on(&req.exchange, EXCHANGE_TIMESTAMP, whole_from, whole_to),
        )
        .await?
        {
            if let Some(day) = int_at(&f, trades_day) {
                by_day.entry(day).or_default().push(f.path);
            }
        }
        // The bars files of those days, by (day, fingerprint of what they were built from).
        let mut bars: BTreeMap<(i32, String), Vec<String>> = BTreeMap::new();
        if let (true, Some(t)) = (self.bars_may_answer(req), pinned.tables.get(BARS_1M_TABLE))
            && let Some(snapshot) = t.snapshot_id
            && let (Some(day_at), Some(fp_at)) = (
                field_at(&t.table, BUCKET_START, Transform::Day),
                field_at(&t.table, BUILT_FROM, Transform::Identity),
            )
        {
            for f in plan::planned_files(
                &t.table,
                snapshot,
                on(&req.exchange, BUCKET_START, whole_from, whole_to),
            )
            .await?
            {
                if let (Some(day), Some(fp)) = (int_at(&f, day_at), string_at(&f, fp_at)) {
                    let key = (day, fp.to_string());
                    bars.entry(key).or_default().push(f.path);
                }
            }
        }
        let zone = match (req.session, req.tz) {
            (SessionChoice::Off, TimeZoneChoice::Utc) => None,
            _ => self.timezone(&req.exchange),
        };
        let mut trades_days = BTreeSet::new();
        for (day, files) in by_day {
            let eligible = aligned(day, from, to) && zone.is_none_or(|tz| whole_minutes(tz, day));
            let built = eligible
                .then(|| bars.remove(&(day, fingerprint(files.iter().map(String::as_str)))))
                .flatten();
            match built {
                Some(files) => {
                    out.sources.bars_days.push(date(day));
                    out.bars_files.extend(files);
                }
                None => {
                    out.sources.trades_days.push(date(day));
                    trades_days.insert(day);
                }
            }
        }
        if !out.bars_files.is_empty() && !trades_days.is_empty() {
            // The trades days' files that may hold the asked symbols.
            let filter = range.filter()?;
            for f in plan::planned_files(
                &trades.table,
                trades_snapshot,
                filter.predicate().expect("a range always filters"),
            )
            .await?
            {
                if int_at(&f, trades_day).is_some_and(|d| trades_days.contains(&d)) {
                    out.trades_files.push(f.path);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_is_usable_where_the_range_cuts_it_on_minutes() {
        let day = 16191; // 2014-05-01
        let start = i64::from(day) * MICROS_PER_DAY;
        let m = MICROS_PER_MINUTE;
        assert!(aligned(day, start, start + MICROS_PER_DAY));
        assert!(
            aligned(day, start - 7, start + MICROS_PER_DAY + 3),
            "cut outside the day"
        );
        assert!(aligned(day, start + 600 * m, start + 960 * m));
        assert!(!aligned(day, start + 600 * m + 1, start + MICROS_PER_DAY));
        assert!(!aligned(day, start, start + 960 * m - 1));
    }

    #[test]
    fn zones_in_use_are_whole_minutes_and_local_mean_time_is_not() {
        let day = |d: &str| {
            day_of(
                format!("{d}T00:00:00Z")
                    .parse::<DateTime<Utc>>()
                    .unwrap()
                    .timestamp_micros(),
            )
        };
        assert!(whole_minutes(
            chrono_tz::Australia::Sydney,
            day("2014-05-01")
        ));
        assert!(whole_minutes(chrono_tz::Asia::Kathmandu, day("2014-05-01")));
        // Sydney kept local mean time (+10:04:52) until 1895.
        assert!(!whole_minutes(
            chrono_tz::Australia::Sydney,
            day("1890-01-01")
        ));
    }

    #[test]
    fn sources_print_as_days_per_table() {
        let s = OhlcvSources {
            bars_days: vec![date(1), date(2)],
            trades_days: vec![date(3)],
        };
        assert_eq!(s.to_string(), "bars_1m: 2 days, trades: 1 day");
    }
}
