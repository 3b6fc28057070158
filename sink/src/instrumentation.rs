//! Metrics (Prometheus text format on `metrics.address`) and log rate limiting.
//!
//! Labels are low-cardinality only: exchange, asset class, data type, table, outcome,
//! error kind. Never symbols, partitions or offsets.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::TimestampMicrosecondType;
use k2_common::health::{Health, HealthPolicy};

use crate::table::{EXCHANGE, EXCHANGE_TIMESTAMP};
use k2_common::metrics::ProcessMetrics;
use rdkafka::Statistics;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use k2_common::topic::TopicName;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabels {
    pub asset_class: String,
    pub data_type: String,
    pub exchange: String,
}

impl TopicLabels {
    fn of(topic: &str) -> Self {
        match topic.parse::<TopicName>() {
            Ok(t) => TopicLabels {
                asset_class: t.asset_class().to_string(),
                data_type: t.data_type().to_string(),
                exchange: t.exchange().to_string(),
            },
            Err(_) => TopicLabels {
                asset_class: "unknown".into(),
                data_type: "unknown".into(),
                exchange: "unknown".into(),
            },
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeadLetterLabels {
    pub asset_class: String,
    pub data_type: String,
    pub exchange: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SequenceLabels {
    pub asset_class: String,
    pub data_type: String,
    pub exchange: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabels {
    pub table: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommitLabels {
    pub table: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct FreshnessLabels {
    pub table: String,
    pub exchange: String,
}

/// What was retried.
#[derive(Clone, Copy, Debug)]
pub enum Operation {
    CatalogLoad,
    OffsetsRead,
    DataFileWrite,
    Commit,
    DeadLetterSend,
}

impl Operation {
    pub const ALL: [Operation; 5] = [
        Operation::CatalogLoad,
        Operation::OffsetsRead,
        Operation::DataFileWrite,
        Operation::Commit,
        Operation::DeadLetterSend,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Operation::CatalogLoad => "catalog_load",
            Operation::OffsetsRead => "offsets_read",
            Operation::DataFileWrite => "data_file_write",
            Operation::Commit => "commit",
            Operation::DeadLetterSend => "dead_letter_send",
        }
    }

    fn labels(self) -> OperationLabels {
        OperationLabels {
            operation: self.as_str().into(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub operation: String,
}

/// A broker, as librdkafka names it (`host:port/id`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BrokerLabels {
    pub broker: String,
}

/// A single `kind` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

/// Declares every metric once: its field, its type (and constructor, for histograms), its
/// name under the `k2_` prefix and its help text. The struct, its constructor and the
/// registration all come from this one list.
macro_rules! metrics {
    ($( $field:ident : $ty:ty = $name:literal, $help:literal $(, $ctor:expr)? ; )*) => {
        /// Every metric the sink exports.
        #[derive(Clone)]
        pub struct Metrics {
            $( pub $field: $ty, )*
            process: ProcessMetrics,
            health: Health,
            /// When each table last committed, for its freshness at scrape time.
            commits_at: Arc<Mutex<BTreeMap<String, Instant>>>,
            /// The newest exchange_timestamp committed (µs) by table and exchange.
            newest: Arc<Mutex<BTreeMap<FreshnessLabels, i64>>>,
            registry: Arc<Registry>,
        }

        impl Metrics {
            /// Metrics, with health judged by the default policy (5 min stall, 2 min
            /// commit window).
            pub fn new() -> Self {
                Self::with_health(HealthPolicy {
                    stall_after: Duration::from_secs(300),
                    commit_window: Duration::from_secs(120),
                })
            }

            pub fn with_health(policy: HealthPolicy) -> Self {
                let mut registry = Registry::with_prefix("k2");
                $(
                    let $field: $ty = metrics!(@new $ty $(, $ctor)?);
                    registry.register($name, $help, $field.clone());
                )*
                let process = ProcessMetrics::register(&mut registry);
                let metrics = Metrics {
                    $( $field, )*
                    process,
                    health: Health::new(policy),
                    commits_at: Arc::default(),
                    newest: Arc::default(),
                    registry: Arc::new(registry),
                };
                metrics.start_at_zero();
                metrics
            }

            /// Every metric's name (without the `k2_` prefix), in declaration order.
            pub const NAMES: &'static [&'static str] = &[$( $name ),*];
        }
    };
    (@new $ty:ty) => { <$ty>::default() };
    (@new $ty:ty, $ctor:expr) => { $ctor };
}

metrics! {
    records_consumed: Family<TopicLabels, Counter> =
        "records_consumed", "Records read from Kafka";
    records_written: Family<TableLabels, Counter> =
        "records_written", "Records committed to Iceberg";
    dead_letters: Family<DeadLetterLabels, Counter> =
        "dead_letters", "Records sent to the dead-letter topic";
    tombstones: Family<TopicLabels, Counter> =
        "tombstones",
        "Records without a value on compacted topics (reference data withdrawn for a symbol): handled, not written";
    dead_letters_truncated: Counter =
        "dead_letters_truncated",
        "Dead letters sent without their value because the full one could never be delivered (too large, invalid)";
    commits: Family<CommitLabels, Counter> =
        "commits", "Iceberg commit attempts by outcome";
    commit_seconds: Family<TableLabels, Histogram> =
        "commit_duration_seconds", "Time to write files and commit one table",
        Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.01, 2.0, 14)));
    data_files: Family<TableLabels, Counter> =
        "data_files", "Parquet data files committed";
    data_file_bytes: Family<TableLabels, Counter> =
        "data_file_bytes", "Bytes of Parquet committed";
    last_commit_timestamp: Family<TableLabels, Gauge> =
        "last_commit_timestamp_seconds", "Unix time of the last successful commit";
    buffered_records: Gauge =
        "buffered_records", "Records waiting for a commit";
    buffered_bytes: Gauge =
        "buffered_bytes", "Payload bytes waiting for a commit";
    paused: Gauge =
        "consumption_paused", "1 while consumption is paused for backpressure";
    rebalances: Family<KindLabels, Counter> =
        "rebalances", "Partition assignments and revocations";
    fenced_partitions: Counter =
        "fenced_partitions",
        "Partitions whose buffered data was dropped because another writer advanced them";
    sequence_events: Family<SequenceLabels, Counter> =
        "sequence_events",
        "Records by sequence classification (in_order, gap, duplicate, out_of_order, reset, first_seen)";
    sequence_gap_size: Family<TopicLabels, Histogram> =
        "sequence_gap_size", "Sequence numbers missing per gap",
        Family::new_with_constructor(|| Histogram::new(exponential_buckets(1.0, 4.0, 10)));
    sequence_tracker_entries: Gauge =
        "sequence_tracker_entries", "Instruments the sequence tracker remembers";
    sequence_tracker_evictions: Counter =
        "sequence_tracker_evictions", "Instruments forgotten by the sequence tracker's LRU";
    offset_discontinuities: Family<KindLabels, Counter> =
        "offset_discontinuities",
        "Partitions not read on from where their table said: deleted (start below the log's first offset: retention deleted records K2 never read), beyond_end (start past the log's end: topic recreated), skipped (first record read past the start: aborted transactions or control records)";
    retries: Family<OperationLabels, Counter> =
        "retries",
        "Retries of failed operations that may pass, by operation: catalog_load, offsets_read, data_file_write, commit, dead_letter_send";
    retries_exhausted: Family<OperationLabels, Counter> =
        "retries_exhausted",
        "Retry episodes that outlasted their budget (30 s of failures): the sink keeps retrying, pauses rather than buffers, and reports not ready";
    consumer_lag: Family<TopicLabels, Gauge> =
        "consumer_lag_records",
        "Records between the consumer's position and the high watermark, summed over a topic's assigned partitions (librdkafka statistics)";
    commit_lag: Gauge<f64, AtomicU64> =
        "commit_lag_seconds",
        "Age of the oldest record consumed and not yet committed (0 when every record read is committed); every table commits in the same cycle";
    freshness_commit: Family<TableLabels, Gauge<f64, AtomicU64>> =
        "freshness_commit_seconds", "Seconds since the table's last successful commit by this process";
    freshness_data: Family<FreshnessLabels, Gauge<f64, AtomicU64>> =
        "freshness_data_seconds",
        "Seconds between now and the exchange_timestamp of the newest record this process committed, by table and exchange";
    ready: Gauge =
        "ready", "1 while /readyz answers 200 (in the group, no storage trouble, commits on time), else 0";
    kafka_fetch_queue: Gauge =
        "kafka_fetch_queue_messages", "Messages fetched by librdkafka and not yet consumed";
    kafka_broker_rtt: Family<BrokerLabels, Gauge<f64, AtomicU64>> =
        "kafka_broker_rtt_seconds", "Average round-trip time to each broker (librdkafka statistics)";
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Series that must exist at 0 before their first event: Prometheus's increase() over a
    /// series born at 1 misses that first step (K2RetriesExhausted would miss the first
    /// exhausted episode).
    fn start_at_zero(&self) {
        for op in Operation::ALL {
            let _ = self.retries.get_or_create(&op.labels());
            let _ = self.retries_exhausted.get_or_create(&op.labels());
        }
    }

    pub fn topic_labels(topic: &str) -> TopicLabels {
        TopicLabels::of(topic)
    }

    pub fn dead_letter(&self, topic: &str, kind: &str) {
        let t = TopicLabels::of(topic);
        self.dead_letters
            .get_or_create(&DeadLetterLabels {
                asset_class: t.asset_class,
                data_type: t.data_type,
                exchange: t.exchange,
                kind: kind.to_string(),
            })
            .inc();
    }

    pub fn offset_discontinuity(&self, kind: &str) {
        self.offset_discontinuities
            .get_or_create(&KindLabels { kind: kind.into() })
            .inc();
    }

    pub fn commit(&self, table: &str, outcome: &str) {
        self.commits
            .get_or_create(&CommitLabels {
                table: table.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    pub fn encode(&self) -> String {
        k2_common::metrics::encode(&self.registry)
    }

    /// One retry of `op`.
    pub fn retried(&self, op: Operation) {
        self.retries.get_or_create(&op.labels()).inc();
    }

    /// Retries of `op` have outlasted their budget.
    pub fn retries_exhausted(&self, op: Operation) {
        self.retries_exhausted.get_or_create(&op.labels()).inc();
    }

    /// A successful commit of `table`.
    pub fn committed(&self, table: &TableLabels) {
        self.last_commit_timestamp
            .get_or_create(table)
            .set(chrono::Utc::now().timestamp());
        self.commits_at
            .lock()
            .expect("metrics lock")
            .insert(table.table.clone(), Instant::now());
    }

    /// Rows of `table` just committed: remembers the newest `exchange_timestamp` per exchange
    /// (tables without those columns, such as sequence events, are skipped).
    pub fn data_committed(&self, table: &TableLabels, batches: &[RecordBatch]) {
        let mut newest = self.newest.lock().expect("metrics lock");
        for b in batches {
            let (Some(exchange), Some(ts)) = (
                b.column_by_name(EXCHANGE)
                    .and_then(|c| c.as_string_opt::<i32>()),
                b.column_by_name(EXCHANGE_TIMESTAMP)
                    .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>()),
            ) else {
                continue;
            };
            // A batch holds few exchanges: the newest of each first, the map after.
            let mut local: Vec<(&str, i64)> = Vec::new();
            for i in 0..b.num_rows() {
                if exchange.is_null(i) || ts.is_null(i) {
                    continue;
                }
                let (e, v) = (exchange.value(i), ts.value(i));
                match local.iter_mut().find(|(x, _)| *x == e) {
                    Some((_, n)) => *n = (*n).max(v),
                    None => local.push((e, v)),
                }
            }
            for (e, v) in local {
                let n = newest
                    .entry(FreshnessLabels {
                        table: table.table.clone(),
                        exchange: e.to_string(),
                    })
                    .or_insert(v);
                *n = (*n).max(v);
            }
        }
    }

    /// Consumer lag, fetch queue and broker round trips from librdkafka's statistics.
    pub fn kafka_statistics(&self, stats: &Statistics) {
        let mut lag: HashMap<TopicLabels, i64> = HashMap::new();
        let mut queued = 0;
        for (name, topic) in &stats.topics {
            let labels = TopicLabels::of(name);
            for p in topic.partitions.values() {
                // Partition -1 is librdkafka's internal "unassigned" entry; an unknown
                // position or watermark (-1) has no lag to tell.
                if p.partition < 0 || p.hi_offset < 0 || p.app_offset < 0 {
                    continue;
                }
                *lag.entry(labels.clone()).or_default() += (p.hi_offset - p.app_offset).max(0);
                queued += p.fetchq_cnt;
            }
        }
        self.consumer_lag.clear();
        for (labels, n) in lag {
            self.consumer_lag.get_or_create(&labels).set(n);
        }
        self.kafka_fetch_queue.set(queued);
        self.health
            .trouble("kafka", unreachable_brokers(stats.brokers.values()));
        for broker in stats.brokers.values() {
            if let Some(rtt) = &broker.rtt {
                self.kafka_broker_rtt
                    .get_or_create(&BrokerLabels {
                        broker: broker.name.clone(),
                    })
                    .set(rtt.avg as f64 / 1e6);
            }
        }
    }

    /// What `/healthz` and `/readyz` answer from; the loop and the committer report into it.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Values that are ages or judgements, computed as of now (before each scrape).
    pub fn refresh(&self) {
        let now = Instant::now();
        self.ready.set(i64::from(self.health.ready_at(now).is_ok()));
        self.commit_lag
            .set(self.health.commit_lag(now).as_secs_f64());
        for (table, at) in self.commits_at.lock().expect("metrics lock").iter() {
            self.freshness_commit
                .get_or_create(&TableLabels {
                    table: table.clone(),
                })
                .set(now.saturating_duration_since(*at).as_secs_f64());
        }
        let now_micros = chrono::Utc::now().timestamp_micros();
        for (labels, micros) in self.newest.lock().expect("metrics lock").iter() {
            self.freshness_data
                .get_or_create(labels)
                .set((now_micros - micros) as f64 / 1e6);
        }
        self.process.refresh();
    }

    /// Serves `/metrics`, `/healthz` and `/readyz` until the process ends.
    pub async fn serve(self, addr: SocketAddr) -> std::io::Result<()> {
        let registry = self.registry.clone();
        let probe = Arc::new(self.health.clone());
        k2_common::metrics::serve(registry, probe, Arc::new(move || self.refresh()), addr).await
    }
}

/// At most `limit` log lines per `window`; the rest are counted and summarised.
#[derive(Debug)]
pub struct LogBudget {
    limit: u32,
    window: Duration,
    state: Mutex<(Instant, u32, u64)>,
}

impl LogBudget {
    pub fn new(limit: u32, window: Duration) -> Self {
        LogBudget {
            limit,
            window,
            state: Mutex::new((Instant::now(), 0, 0)),
        }
    }

    /// True if this event may be logged.
    pub fn allow(&self) -> bool {
        let mut s = self.state.lock().expect("log budget lock");
        if s.0.elapsed() >= self.window {
            if s.2 > 0 {
                tracing::warn!(
                    suppressed = s.2,
                    "similar log lines suppressed in the last window"
                );
            }
            *s = (Instant::now(), 0, 0);
        }
        if s.1 < self.limit {
            s.1 += 1;
            true
        } else {
            s.2 += 1;
            false
        }
    }
}

/// A readiness reason when the brokers librdkafka learned from metadata are all
/// disconnected: nothing is consumed then, whatever the group's last state was. (Bootstrap
/// and internal entries do not count; librdkafka connects sparsely, so one broker up is
/// enough.)
fn unreachable_brokers<'a>(
    brokers: impl IntoIterator<Item = &'a rdkafka::statistics::Broker>,
) -> Option<String> {
    let learned: Vec<_> = brokers
        .into_iter()
        .filter(|b| b.source == "learned")
        .collect();
    if learned.is_empty() || learned.iter().any(|b| b.state == "UP") {
        return None;
    }
    let states: Vec<_> = learned
        .iter()
        .map(|b| format!("{} {}", b.name, b.state))
        .collect();
    Some(format!("no broker connected ({})", states.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Operators read the metric list in docs/operations.md: it must name every metric
    /// (registration cannot miss one: the same declaration makes both).
    #[test]
    fn every_metric_is_documented() {
        let docs = include_str!("../../docs/operations.md");
        for name in Metrics::NAMES {
            assert!(
                docs.contains(&format!("`k2_{name}")) || docs.contains(&format!(" k2_{name}")),
                "docs/operations.md does not mention k2_{name}"
            );
        }
        let text = Metrics::new().encode();
        assert!(text.contains("# HELP k2_buffered_records Records waiting for a commit."));
    }

    #[test]
    fn no_learned_broker_up_is_a_readiness_reason() {
        use rdkafka::statistics::Broker;
        let broker = |name: &str, source: &str, state: &str| Broker {
            name: name.into(),
            source: source.into(),
            state: state.into(),
            ..Default::default()
        };
        let bootstrap = broker("127.0.0.1:9092/bootstrap", "configured", "DOWN");
        let coordinator = broker("GroupCoordinator", "logical", "DOWN");
        let b1 = broker("127.0.0.1:9092/1", "learned", "UP");
        let b2 = broker("127.0.0.1:9094/2", "learned", "CONNECT");
        assert_eq!(unreachable_brokers([&bootstrap]), None, "before metadata");
        assert_eq!(
            unreachable_brokers([&bootstrap, &coordinator, &b1, &b2]),
            None
        );
        let b1_down = broker("127.0.0.1:9092/1", "learned", "DOWN");
        assert_eq!(
            unreachable_brokers([&bootstrap, &b1_down, &b2]).as_deref(),
            Some("no broker connected (127.0.0.1:9092/1 DOWN, 127.0.0.1:9094/2 CONNECT)")
        );

        let m = Metrics::new();
        m.kafka_statistics(&rdkafka::Statistics {
            brokers: [("b1".to_string(), b1_down)].into(),
            ..Default::default()
        });
        let why = m.health().ready_at(Instant::now()).unwrap_err();
        assert!(why.contains("kafka: no broker connected"), "{why}");
    }

    #[test]
    fn the_ready_gauge_says_what_readyz_says() {
        let m = Metrics::new();
        let ready = |m: &Metrics| {
            m.refresh();
            m.ready.get()
        };
        assert_eq!(ready(&m), 0, "the loop has not started");
        m.health().beat();
        m.health().joined();
        assert_eq!(ready(&m), 1);
        m.health().trouble("storage (t)", Some("down".into()));
        assert_eq!(ready(&m), 0);
    }

    #[test]
    fn retry_counters_of_every_operation_start_at_zero() {
        let m = Metrics::new();
        m.retries_exhausted(Operation::Commit);
        let text = m.encode();
        for op in Operation::ALL {
            let zero_or_one = if matches!(op, Operation::Commit) {
                1
            } else {
                0
            };
            assert!(
                text.contains(&format!(
                    "k2_retries_total{{operation=\"{}\"}} 0\n",
                    op.as_str()
                )),
                "{text}"
            );
            assert!(
                text.contains(&format!(
                    "k2_retries_exhausted_total{{operation=\"{}\"}} {zero_or_one}\n",
                    op.as_str()
                )),
                "{text}"
            );
        }
    }

    #[test]
    fn data_freshness_is_the_age_of_the_newest_committed_record_per_exchange() {
        use arrow::array::{StringArray, TimestampMicrosecondArray};
        use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
        let now = chrono::Utc::now().timestamp_micros();
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new(EXCHANGE, DataType::Utf8, false),
                Field::new(
                    EXCHANGE_TIMESTAMP,
                    DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
                    false,
                ),
            ])),
            vec![
                Arc::new(StringArray::from(vec!["asx", "asx", "binance"])),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![
                        now - 90_000_000,
                        now - 30_000_000,
                        now - 5_000_000,
                    ])
                    .with_timezone("+00:00"),
                ),
            ],
        )
        .unwrap();
        let m = Metrics::new();
        let table = TableLabels {
            table: "trades".into(),
        };
        m.data_committed(&table, &[batch]);
        m.refresh();
        let age = |exchange: &str| {
            m.freshness_data
                .get_or_create(&FreshnessLabels {
                    table: "trades".into(),
                    exchange: exchange.into(),
                })
                .get()
        };
        assert!((30.0..35.0).contains(&age("asx")), "{}", age("asx"));
        assert!((5.0..10.0).contains(&age("binance")), "{}", age("binance"));
    }
}
