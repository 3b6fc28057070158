//! Check: per-instrument exchange sequence numbers, to tell when data is missing.
//!
//! The tracker remembers the last sequence number per (exchange, data type, symbol) in an
//! LRU of bounded capacity and classifies each record against it. It never blocks or drops
//! anything: a duplicate by sequence is still written (the exchange sent it); anomalies
//! are counted and logged at a bounded rate.

use std::num::NonZeroUsize;
use std::sync::Arc;

use std::collections::{BTreeMap, HashMap};

use chrono::{NaiveDate, TimeZone};
use chrono_tz::Tz;
use lru::LruCache;

use k2_common::topic::DataType;

/// How a record's sequence number relates to the last one seen for its instrument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SequenceKind {
    InOrder,
    /// `seq` > expected: `size` numbers are missing.
    Gap {
        size: i64,
    },
    /// `seq` equals the last one.
    Duplicate,
    /// `seq` is below the last one (and not a session reset).
    OutOfOrder,
    /// `seq` restarted at 0 or 1 on a later trading day (exchange time zone).
    Reset,
    /// No state for the instrument: never seen, or evicted from the LRU.
    FirstSeen,
}

impl SequenceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SequenceKind::InOrder => "in_order",
            SequenceKind::Gap { .. } => "gap",
            SequenceKind::Duplicate => "duplicate",
            SequenceKind::OutOfOrder => "out_of_order",
            SequenceKind::Reset => "reset",
            SequenceKind::FirstSeen => "first_seen",
        }
    }

    /// Kinds recorded as events (the table and the logs); the others are only counted.
    pub fn is_event(self) -> bool {
        matches!(
            self,
            SequenceKind::Gap { .. } | SequenceKind::OutOfOrder | SequenceKind::Reset
        )
    }
}

/// How rows name instruments: exchange names shared between keys, trading days in each
/// exchange's time zone from topics.yaml (UTC for an exchange it does not list).
#[derive(Debug, Default)]
pub struct Instruments {
    timezones: BTreeMap<String, Tz>,
    exchanges: TopicNames,
}

impl Instruments {
    pub fn new(timezones: BTreeMap<String, Tz>) -> Self {
        Instruments {
            timezones,
            exchanges: TopicNames::default(),
        }
    }

    /// The instrument of a row and the trading day of its exchange time.
    pub fn key(
        &mut self,
        data_type: DataType,
        exchange: &str,
        symbol: &str,
        ts_micros: i64,
    ) -> (InstrumentKey, NaiveDate) {
        let tz = self
            .timezones
            .get(exchange)
            .copied()
            .unwrap_or(chrono_tz::UTC);
        let key = InstrumentKey {
            exchange: self.exchanges.intern(exchange),
            data_type,
            symbol: symbol.into(),
        };
        (key, trading_day(ts_micros, tz))
    }
}

/// Instrument identity. `Arc<str>` exchange names are shared between entries.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InstrumentKey {
    pub exchange: Arc<str>,
    pub data_type: DataType,
    pub symbol: Box<str>,
}

#[derive(Debug, Clone, Copy)]
struct Last {
    seq: i64,
    /// Trading day (exchange time zone) of the newest record seen.
    day: NaiveDate,
    /// Kafka partition the state was last advanced from (for dropping state on re-reads).
    partition: i32,
}

/// One classification, with what was expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    pub kind: SequenceKind,
    /// The sequence number expected (`None` for first_seen).
    pub expected: Option<i64>,
}

/// The LRU-bounded tracker.
pub struct SequenceTracker {
    entries: LruCache<InstrumentKey, Last>,
    evictions: u64,
}

impl std::fmt::Debug for SequenceTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SequenceTracker")
            .field("entries", &self.entries.len())
            .field("capacity", &self.entries.cap())
            .field("evictions", &self.evictions)
            .finish()
    }
}

/// The trading day of `micros` (UTC) in `tz`.
pub fn trading_day(micros: i64, tz: Tz) -> NaiveDate {
    let utc = chrono::DateTime::from_timestamp_micros(micros).unwrap_or_default();
    tz.from_utc_datetime(&utc.naive_utc()).date_naive()
}

impl SequenceTracker {
    pub fn new(capacity: NonZeroUsize) -> Self {
        SequenceTracker {
            entries: LruCache::new(capacity),
            evictions: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Classifies `seq` for `key` and remembers it. `day` is the record's trading day.
    pub fn observe(
        &mut self,
        key: &InstrumentKey,
        seq: i64,
        day: NaiveDate,
        partition: i32,
    ) -> Observation {
        let Some(last) = self.entries.get_mut(key) else {
            if self.entries.len() == self.entries.cap().get() {
                self.evictions += 1;
            }
            self.entries.push(
                key.clone(),
                Last {
                    seq,
                    day,
                    partition,
                },
            );
            return Observation {
                kind: SequenceKind::FirstSeen,
                expected: None,
            };
        };
        let expected = last.seq + 1;
        let kind = if seq == expected {
            SequenceKind::InOrder
        } else if seq == last.seq {
            SequenceKind::Duplicate
        } else if seq > expected {
            SequenceKind::Gap {
                size: seq - expected,
            }
        } else if seq <= 1 && day > last.day {
            SequenceKind::Reset
        } else {
            SequenceKind::OutOfOrder
        };
        // An out-of-order record does not move the expectation back.
        if kind != SequenceKind::OutOfOrder {
            last.seq = seq;
        }
        last.day = last.day.max(day);
        last.partition = partition;
        Observation {
            kind,
            expected: Some(expected),
        }
    }

    /// Sets the state for `key` from what the table holds (warm-up after an assignment),
    /// unless the tracker already saw the instrument.
    pub fn seed(&mut self, key: InstrumentKey, seq: i64, day: NaiveDate, partition: i32) {
        if self.entries.contains(&key) {
            return;
        }
        self.entries.push(
            key,
            Last {
                seq,
                day,
                partition,
            },
        );
    }

    /// Forgets instruments last advanced from any of these (exchange, data type,
    /// partition): their records are about to be read again (revoked, assigned anew, or
    /// fenced and re-read). One pass over the tracker whatever the number of partitions.
    pub fn forget_partitions(
        &mut self,
        partitions: &std::collections::HashSet<(String, DataType, i32)>,
    ) {
        if partitions.is_empty() || self.entries.is_empty() {
            return;
        }
        let stale: Vec<InstrumentKey> = self
            .entries
            .iter()
            .filter(|(k, v)| {
                partitions.contains(&(k.exchange.to_string(), k.data_type, v.partition))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            self.entries.pop(&k);
        }
    }
}

/// The last committed record of every instrument of `partitions` in `table`, among rows
/// ingested within `window` before the table's last commit (files outside that window are
/// pruned by their `ingested_at` statistics, so this reads only the newest files).
/// Returns `(exchange, symbol, sequence_number, exchange_timestamp, partition)`.
pub async fn last_committed(
    table: &iceberg::table::Table,
    partitions: &std::collections::HashSet<k2_table::offsets::TopicPartition>,
    window: std::time::Duration,
) -> Result<Vec<(String, String, i64, i64, i32)>, iceberg::Error> {
    use arrow::array::AsArray;
    use arrow::datatypes::{Int32Type, Int64Type, TimestampMicrosecondType};
    use futures::TryStreamExt;
    use iceberg::expr::Reference;
    use iceberg::spec::Datum;

    use k2_table::layout::{
        EXCHANGE, EXCHANGE_TIMESTAMP, INGESTED_AT, KAFKA_OFFSET, KAFKA_PARTITION, KAFKA_TOPIC,
        SYMBOL,
    };

    let Some(snapshot) = table.metadata().current_snapshot() else {
        return Ok(Vec::new());
    };
    let since = snapshot.timestamp_ms() * 1000 - window.as_micros() as i64;
    let scan = table
        .scan()
        .select([
            EXCHANGE,
            SYMBOL,
            "sequence_number",
            EXCHANGE_TIMESTAMP,
            KAFKA_TOPIC,
            KAFKA_PARTITION,
            KAFKA_OFFSET,
        ])
        .with_filter(
            Reference::new(INGESTED_AT).greater_than_or_equal_to(Datum::timestamptz_micros(since)),
        )
        .build()?;
    let batches: Vec<arrow_array::RecordBatch> = scan.to_arrow().await?.try_collect().await?;
    // Per instrument, the row with the highest offset: the last one committed.
    let mut last: std::collections::HashMap<(String, String), (i64, i64, i64, i32)> =
        std::collections::HashMap::new();
    let mut probe = k2_table::offsets::TopicPartition::new(String::new(), 0);
    for b in &batches {
        let ex = b[EXCHANGE].as_string::<i32>();
        let sym = b[SYMBOL].as_string::<i32>();
        let seq = b["sequence_number"].as_primitive::<Int64Type>();
        let ts = b[EXCHANGE_TIMESTAMP].as_primitive::<TimestampMicrosecondType>();
        let topic = b[KAFKA_TOPIC].as_string::<i32>();
        let part = b[KAFKA_PARTITION].as_primitive::<Int32Type>();
        let off = b[KAFKA_OFFSET].as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            probe.topic.clear();
            probe.topic.push_str(topic.value(i));
            probe.partition = part.value(i);
            if !partitions.contains(&probe) {
                continue;
            }
            let entry = last
                .entry((ex.value(i).to_string(), sym.value(i).to_string()))
                .or_insert((i64::MIN, 0, 0, 0));
            if off.value(i) > entry.0 {
                *entry = (off.value(i), seq.value(i), ts.value(i), part.value(i));
            }
        }
    }
    Ok(last
        .into_iter()
        .map(|((ex, sym), (_, seq, ts, p))| (ex, sym, seq, ts, p))
        .collect())
}

/// Shared, cheap-to-clone topic names (one allocation per topic, not per record).
#[derive(Debug, Default)]
pub struct TopicNames(HashMap<String, Arc<str>>);

impl TopicNames {
    pub fn intern(&mut self, topic: &str) -> Arc<str> {
        if let Some(t) = self.0.get(topic) {
            return t.clone();
        }
        let t: Arc<str> = Arc::from(topic);
        self.0.insert(topic.to_string(), t.clone());
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(symbol: &str) -> InstrumentKey {
        InstrumentKey {
            exchange: Arc::from("asx"),
            data_type: DataType::Trades,
            symbol: symbol.into(),
        }
    }

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2014, 3, d).unwrap()
    }

    fn kinds(tracker: &mut SequenceTracker, seqs: &[(i64, u32)]) -> Vec<SequenceKind> {
        seqs.iter()
            .map(|(s, d)| tracker.observe(&key("BHP"), *s, day(*d), 0).kind)
            .collect()
    }

    fn tracker(cap: usize) -> SequenceTracker {
        SequenceTracker::new(NonZeroUsize::new(cap).unwrap())
    }

    #[test]
    fn gap_duplicate_out_of_order() {
        use SequenceKind::*;
        assert_eq!(
            kinds(&mut tracker(10), &[(1, 10), (2, 10), (5, 10)]),
            vec![FirstSeen, InOrder, Gap { size: 2 }]
        );
        assert_eq!(
            kinds(&mut tracker(10), &[(1, 10), (2, 10), (2, 10)]),
            vec![FirstSeen, InOrder, Duplicate]
        );
        assert_eq!(
            kinds(&mut tracker(10), &[(1, 10), (3, 10), (2, 10), (4, 10)]),
            vec![FirstSeen, Gap { size: 1 }, OutOfOrder, InOrder]
        );
    }

    #[test]
    fn reset_only_at_a_session_boundary() {
        use SequenceKind::*;
        assert_eq!(
            kinds(&mut tracker(10), &[(500, 10), (501, 10), (1, 11), (2, 11)]),
            vec![FirstSeen, InOrder, Reset, InOrder]
        );
        // Same day: a drop to 1 is out of order, not a reset.
        assert_eq!(
            kinds(&mut tracker(10), &[(500, 10), (1, 10)]),
            vec![FirstSeen, OutOfOrder]
        );
    }

    #[test]
    fn sydney_trading_day() {
        // 2014-03-10 13:30 UTC is 00:30 on the 11th in Sydney (AEDT).
        let micros = 1_394_458_200_000_000;
        assert_eq!(trading_day(micros, chrono_tz::Australia::Sydney), day(11));
        assert_eq!(trading_day(micros, chrono_tz::UTC), day(10));
    }

    #[test]
    fn eviction_is_counted_and_the_evicted_symbol_is_first_seen_again() {
        let mut t = tracker(100);
        for i in 0..101 {
            t.observe(&key(&format!("S{i}")), 1, day(10), 0);
        }
        assert_eq!(t.len(), 100);
        assert_eq!(t.evictions(), 1);
        // S0 was the least recently used.
        let o = t.observe(&key("S0"), 2, day(10), 0);
        assert_eq!(o.kind, SequenceKind::FirstSeen);
        assert_eq!(t.evictions(), 2);
    }

    #[test]
    fn forgetting_a_partition_drops_its_instruments() {
        let mut t = tracker(10);
        t.observe(&key("A"), 1, day(10), 0);
        t.observe(&key("B"), 1, day(10), 1);
        t.forget_partitions(&[("asx".to_string(), DataType::Trades, 1)].into());
        assert_eq!(t.len(), 1);
        assert_eq!(
            t.observe(&key("B"), 2, day(10), 1).kind,
            SequenceKind::FirstSeen
        );
    }
}
