//! The check stage: classifies every decoded row's sequence number against the last one
//! seen for its instrument, counts the classes, logs anomalies at a bounded rate, and turns
//! gaps, out-of-order records and resets into rows of `sequence_events`, which commit with
//! the data they were found in. It never rejects or holds back a row.
//!
//! Its state is the LRU-bounded [`SequenceTracker`]. Partitions about to be read again
//! (revoked, re-assigned, fenced) are forgotten, and newly assigned ones are warmed up from
//! the last committed rows in the tables, so a gap spanning a restart or a hand-over is
//! still seen.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::AsArray;
use arrow::datatypes::{Int64Type, TimestampMicrosecondType};
use arrow_array::{
    ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow_schema::SchemaRef;
use iceberg::Catalog;
use rustc_hash::FxBuildHasher;

use k2_common::data_type::DataType;
use k2_common::topic::TopicName;

use k2_common::logging::LogBudget;

use crate::instrumentation::{Metrics, SequenceLabels};
use k2_table::lineage::{Lineage, LineageError};
use k2_table::offsets::TopicPartition;
pub mod tracker;

use k2_table::layout::{EXCHANGE, EXCHANGE_TIMESTAMP, SYMBOL, table_ident};
use tracker::{Instruments, Observation, SequenceKind, SequenceTracker, last_committed};

/// Name of the sequence number column of sequenced data types.
pub const SEQUENCE_NUMBER: &str = "sequence_number";

/// A batch of a sequenced data type without the columns the check reads: the table's
/// layout and the data type's description disagree, which no record can cause.
#[derive(Debug, thiserror::Error)]
pub enum SequenceCheckError {
    #[error("{data_type} rows lack the column {column} the sequence check reads")]
    MissingColumn {
        data_type: &'static str,
        column: &'static str,
    },
    #[error(transparent)]
    Lineage(#[from] LineageError),
    #[error("building sequence event rows")]
    Events(#[from] arrow_schema::ArrowError),
}

/// The check stage's settings.
#[derive(Debug, Clone)]
pub struct SequenceCheckConfig {
    /// Instruments remembered at most (least recently seen are evicted).
    pub capacity: NonZeroUsize,
    /// Exchange time zones, for trading days (a sequence reset is a new day's restart).
    pub timezones: BTreeMap<String, chrono_tz::Tz>,
    /// How far back from a table's last commit the warm-up reads.
    pub warmup_window: Duration,
}

pub struct SequenceCheck {
    tracker: SequenceTracker,
    instruments: Instruments,
    warmup_window: Duration,
    events_schema: SchemaRef,
    anomaly_log: LogBudget,
    metrics: Metrics,
    /// Rows per classification since start, for the final log line.
    counts: BTreeMap<&'static str, u64>,
}

impl SequenceCheck {
    /// `events_schema` is the Arrow schema of the `sequence_events` table.
    pub fn new(config: SequenceCheckConfig, events_schema: SchemaRef, metrics: Metrics) -> Self {
        SequenceCheck {
            tracker: SequenceTracker::new(config.capacity),
            instruments: Instruments::new(config.timezones),
            warmup_window: config.warmup_window,
            events_schema,
            anomaly_log: LogBudget::new(20, Duration::from_secs(10)),
            metrics,
            counts: BTreeMap::new(),
        }
    }

    /// Rows per classification since start.
    pub fn counts(&self) -> &BTreeMap<&'static str, u64> {
        &self.counts
    }

    /// Classifies every row of a batch of `data_type` (in table layout) and returns the
    /// `sequence_events` rows it revealed, if any. Data types without sequence numbers pass.
    pub fn check(
        &mut self,
        data_type: DataType,
        batch: &RecordBatch,
    ) -> Result<Option<RecordBatch>, SequenceCheckError> {
        if !data_type.describe().sequenced || batch.num_rows() == 0 {
            return Ok(None);
        }
        let missing = |column| SequenceCheckError::MissingColumn {
            data_type: data_type.as_str(),
            column,
        };
        let exchange = batch
            .column_by_name(EXCHANGE)
            .and_then(|c| c.as_string_opt::<i32>())
            .ok_or_else(|| missing(EXCHANGE))?;
        let symbol = batch
            .column_by_name(SYMBOL)
            .and_then(|c| c.as_string_opt::<i32>())
            .ok_or_else(|| missing(SYMBOL))?;
        let seq = batch
            .column_by_name(SEQUENCE_NUMBER)
            .and_then(|c| c.as_primitive_opt::<Int64Type>())
            .ok_or_else(|| missing(SEQUENCE_NUMBER))?;
        let ts = batch
            .column_by_name(EXCHANGE_TIMESTAMP)
            .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
            .ok_or_else(|| missing(EXCHANGE_TIMESTAMP))?;
        let lineage = Lineage::of(batch)?;

        let evictions_before = self.tracker.evictions();
        // Keyed by the topic as the batch holds it: no allocation per row.
        let mut counts: HashMap<(&str, &'static str), u64, FxBuildHasher> = HashMap::default();
        let mut events = EventRows::default();
        for i in 0..batch.num_rows() {
            let ex = exchange.value(i);
            let (key, day) = self
                .instruments
                .key(data_type, ex, symbol.value(i), ts.value(i));
            let actual = seq.value(i);
            let o = self
                .tracker
                .observe(&key, actual, day, lineage.partition(i));
            *counts
                .entry((lineage.topic(i), o.kind.as_str()))
                .or_default() += 1;
            if let SequenceKind::Gap { size } = o.kind {
                self.metrics
                    .sequence_gap_size
                    .get_or_create(&Metrics::topic_labels(lineage.topic(i)))
                    .observe(size as f64);
            }
            if !o.kind.is_event() {
                continue;
            }
            let event = Event {
                exchange: ex,
                data_type,
                symbol: symbol.value(i),
                observation: o,
                actual,
                exchange_timestamp: ts.value(i),
                topic: lineage.topic(i),
                partition: lineage.partition(i),
                offset: lineage.offset(i),
            };
            if self.anomaly_log.allow() {
                event.log();
            }
            events.push(&event);
        }
        for ((topic, kind), n) in counts {
            *self.counts.entry(kind).or_default() += n;
            let t = Metrics::topic_labels(topic);
            self.metrics
                .sequence_events
                .get_or_create(&SequenceLabels {
                    asset_class: t.asset_class,
                    data_type: t.data_type,
                    exchange: t.exchange,
                    kind: kind.to_string(),
                })
                .inc_by(n);
        }
        self.metrics
            .sequence_tracker_evictions
            .inc_by(self.tracker.evictions() - evictions_before);
        self.metrics
            .sequence_tracker_entries
            .set(self.tracker.len() as i64);
        Ok(events.finish(&self.events_schema)?)
    }

    /// The instruments of these partitions are about to be read again: forget their state
    /// (one pass over the tracker for the whole set).
    pub fn forget<'a>(&mut self, partitions: impl IntoIterator<Item = &'a TopicPartition>) {
        self.tracker.forget_partitions(&partition_keys(partitions));
    }

    /// How far back from a table's last commit the warm-up reads.
    pub fn warmup_window(&self) -> Duration {
        self.warmup_window
    }

    /// Forgets what was known of the instruments of `partitions` and seeds them with the
    /// last committed sequence numbers in `warm_up` (read by [`WarmUp::load`] off the
    /// poll thread), so a gap spanning a restart, a hand-over or a re-seek is still seen.
    pub fn apply_warm_up(&mut self, partitions: &[TopicPartition], warm_up: WarmUp) {
        let keys = partition_keys(partitions);
        self.tracker.forget_partitions(&keys);
        let mut seeded = 0;
        for (data_type, rows) in warm_up.rows {
            // Rows of partitions no longer being started (revoked, or started again since
            // this warm-up was read) are left out: their instruments are not ours to seed.
            for (ex, symbol, seq, ts, partition) in rows {
                if !keys.contains(&(ex.clone(), data_type, partition)) {
                    continue;
                }
                let (key, day) = self.instruments.key(data_type, &ex, &symbol, ts);
                self.tracker.seed(key, seq, day, partition);
                seeded += 1;
            }
        }
        self.metrics
            .sequence_tracker_entries
            .set(self.tracker.len() as i64);
        tracing::debug!(instruments = seeded, "sequence tracker warmed up");
    }
}

/// The tracker's partition keys, (exchange, data type, partition), of `partitions`.
fn partition_keys<'a>(
    partitions: impl IntoIterator<Item = &'a TopicPartition>,
) -> HashSet<(String, DataType, i32)> {
    partitions
        .into_iter()
        .filter_map(|tp| {
            let t = tp.topic.parse::<TopicName>().ok()?;
            Some((t.exchange().to_string(), t.data_type(), tp.partition))
        })
        .collect()
}

/// The last committed sequence number of the instruments of some partitions, read from
/// their tables.
#[derive(Debug, Default)]
pub struct WarmUp {
    rows: Vec<(DataType, Vec<LastCommitted>)>,
}

/// (exchange, symbol, sequence number, exchange timestamp, partition)
type LastCommitted = (String, String, i64, i64, i32);

impl WarmUp {
    #[cfg(test)]
    pub(crate) fn from_rows(data_type: DataType, rows: Vec<LastCommitted>) -> Self {
        WarmUp {
            rows: vec![(data_type, rows)],
        }
    }

    /// Reads the last committed rows of `partitions` within `window` of each table's last
    /// commit. Failing that (catalog down) the instruments start as `first_seen`: the
    /// check never holds ingestion back.
    pub async fn load(
        catalog: &dyn Catalog,
        window: Duration,
        partitions: &[TopicPartition],
    ) -> Self {
        let started = Instant::now();
        let mut by_type: BTreeMap<DataType, HashSet<TopicPartition>> = BTreeMap::new();
        for tp in partitions {
            if let Ok(topic) = tp.topic.parse::<TopicName>()
                && topic.data_type().describe().sequenced
            {
                by_type
                    .entry(topic.data_type())
                    .or_default()
                    .insert(tp.clone());
            }
        }
        let mut out = WarmUp::default();
        for (data_type, partitions) in by_type {
            let rows = async {
                let table = catalog.load_table(&table_ident(data_type)).await?;
                last_committed(&table, &partitions, window).await
            };
            match rows.await {
                Ok(rows) => out.rows.push((data_type, rows)),
                Err(e) => {
                    tracing::warn!(table = data_type.table_name(), error = %e, "sequence warm-up failed; instruments start as first_seen")
                }
            }
        }
        tracing::info!(
            instruments = out.rows.iter().map(|(_, r)| r.len()).sum::<usize>(),
            seconds = started.elapsed().as_secs_f64(),
            "read the sequence warm-up from the tables"
        );
        out
    }
}

/// One anomaly, with the lineage of the record that revealed it.
struct Event<'a> {
    exchange: &'a str,
    data_type: DataType,
    symbol: &'a str,
    observation: Observation,
    actual: i64,
    exchange_timestamp: i64,
    topic: &'a str,
    partition: i32,
    offset: i64,
}

impl Event<'_> {
    fn gap_size(&self) -> Option<i64> {
        match self.observation.kind {
            SequenceKind::Gap { size } => Some(size),
            _ => None,
        }
    }

    fn log(&self) {
        tracing::warn!(
            kind = self.observation.kind.as_str(),
            exchange = self.exchange,
            symbol = self.symbol,
            data_type = self.data_type.as_str(),
            expected = ?self.observation.expected,
            actual = self.actual,
            gap_size = self.gap_size().unwrap_or(0),
            topic = self.topic,
            partition = self.partition,
            offset = self.offset,
            "sequence anomaly"
        );
    }
}

/// Rows of `sequence_events` being collected for one batch, column by column.
#[derive(Default)]
struct EventRows {
    exchange: Vec<String>,
    data_type: Vec<&'static str>,
    symbol: Vec<String>,
    kind: Vec<&'static str>,
    expected: Vec<Option<i64>>,
    actual: Vec<i64>,
    gap_size: Vec<Option<i64>>,
    exchange_timestamp: Vec<i64>,
    topic: Vec<String>,
    partition: Vec<i32>,
    offset: Vec<i64>,
}

impl EventRows {
    fn push(&mut self, e: &Event<'_>) {
        self.exchange.push(e.exchange.to_string());
        self.data_type.push(e.data_type.as_str());
        self.symbol.push(e.symbol.to_string());
        self.kind.push(e.observation.kind.as_str());
        self.expected.push(e.observation.expected);
        self.actual.push(e.actual);
        self.gap_size.push(e.gap_size());
        self.exchange_timestamp.push(e.exchange_timestamp);
        self.topic.push(e.topic.to_string());
        self.partition.push(e.partition);
        self.offset.push(e.offset);
    }

    /// The rows as a batch of the `sequence_events` table, `None` if there are none.
    fn finish(self, schema: &SchemaRef) -> Result<Option<RecordBatch>, arrow_schema::ArrowError> {
        if self.actual.is_empty() {
            return Ok(None);
        }
        let now = chrono::Utc::now().timestamp_micros();
        let n = self.actual.len();
        let ts = |v: Vec<i64>| -> ArrayRef {
            Arc::new(TimestampMicrosecondArray::from(v).with_timezone("+00:00"))
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(self.exchange)),
            Arc::new(StringArray::from(self.data_type)),
            Arc::new(StringArray::from(self.symbol)),
            Arc::new(StringArray::from(self.kind)),
            Arc::new(Int64Array::from(self.expected)),
            Arc::new(Int64Array::from(self.actual)),
            Arc::new(Int64Array::from(self.gap_size)),
            ts(self.exchange_timestamp),
            Arc::new(StringArray::from(self.topic)),
            Arc::new(Int32Array::from(self.partition)),
            Arc::new(Int64Array::from(self.offset)),
            ts(vec![now; n]),
        ];
        RecordBatch::try_new(schema.clone(), columns).map(Some)
    }
}
