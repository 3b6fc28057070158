//! Metrics (Prometheus text format on `metrics.address`) and log rate limiting.
//!
//! Labels are low-cardinality only: exchange, asset class, data type, table, outcome,
//! error kind. Never symbols, partitions or offsets.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RebalanceLabels {
    pub kind: String,
}

/// Every metric the sink exports.
#[derive(Clone)]
pub struct Metrics {
    pub records_consumed: Family<TopicLabels, Counter>,
    pub records_written: Family<TableLabels, Counter>,
    pub dead_letters: Family<DeadLetterLabels, Counter>,
    pub commits: Family<CommitLabels, Counter>,
    pub commit_seconds: Family<TableLabels, Histogram>,
    pub data_files: Family<TableLabels, Counter>,
    pub data_file_bytes: Family<TableLabels, Counter>,
    pub last_commit_timestamp: Family<TableLabels, Gauge>,
    pub buffered_records: Gauge,
    pub buffered_bytes: Gauge,
    pub paused: Gauge,
    pub rebalances: Family<RebalanceLabels, Counter>,
    pub fenced_partitions: Counter,
    pub sequence_events: Family<SequenceLabels, Counter>,
    pub sequence_gap_size: Family<TopicLabels, Histogram>,
    pub sequence_tracker_entries: Gauge,
    pub sequence_tracker_evictions: Counter,
    pub storage_retries: Counter,
    registry: Arc<Registry>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("k2");
        let records_consumed = Family::<TopicLabels, Counter>::default();
        let records_written = Family::<TableLabels, Counter>::default();
        let dead_letters = Family::<DeadLetterLabels, Counter>::default();
        let commits = Family::<CommitLabels, Counter>::default();
        let commit_seconds = Family::<TableLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.01, 2.0, 14))
        });
        let data_files = Family::<TableLabels, Counter>::default();
        let data_file_bytes = Family::<TableLabels, Counter>::default();
        let last_commit_timestamp = Family::<TableLabels, Gauge>::default();
        let buffered_records = Gauge::default();
        let buffered_bytes = Gauge::default();
        let paused = Gauge::default();
        let rebalances = Family::<RebalanceLabels, Counter>::default();
        let fenced_partitions = Counter::default();
        let storage_retries = Counter::default();
        let sequence_events = Family::<SequenceLabels, Counter>::default();
        let sequence_gap_size = Family::<TopicLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(1.0, 4.0, 10))
        });
        let sequence_tracker_entries = Gauge::default();
        let sequence_tracker_evictions = Counter::default();
        r.register(
            "sequence_events",
            "Records by sequence classification (in_order, gap, duplicate, out_of_order, reset, first_seen)",
            sequence_events.clone(),
        );
        r.register(
            "sequence_gap_size",
            "Sequence numbers missing per gap",
            sequence_gap_size.clone(),
        );
        r.register(
            "sequence_tracker_entries",
            "Instruments the sequence tracker remembers",
            sequence_tracker_entries.clone(),
        );
        r.register(
            "sequence_tracker_evictions",
            "Instruments forgotten by the sequence tracker's LRU",
            sequence_tracker_evictions.clone(),
        );
        r.register(
            "records_consumed",
            "Records read from Kafka",
            records_consumed.clone(),
        );
        r.register(
            "records_written",
            "Records committed to Iceberg",
            records_written.clone(),
        );
        r.register(
            "dead_letters",
            "Records sent to the dead-letter topic",
            dead_letters.clone(),
        );
        r.register(
            "commits",
            "Iceberg commit attempts by outcome",
            commits.clone(),
        );
        r.register(
            "commit_duration_seconds",
            "Time to write files and commit one table",
            commit_seconds.clone(),
        );
        r.register(
            "data_files",
            "Parquet data files committed",
            data_files.clone(),
        );
        r.register(
            "data_file_bytes",
            "Bytes of Parquet committed",
            data_file_bytes.clone(),
        );
        r.register(
            "last_commit_timestamp_seconds",
            "Unix time of the last successful commit",
            last_commit_timestamp.clone(),
        );
        r.register(
            "buffered_records",
            "Records waiting for a commit",
            buffered_records.clone(),
        );
        r.register(
            "buffered_bytes",
            "Payload bytes waiting for a commit",
            buffered_bytes.clone(),
        );
        r.register(
            "consumption_paused",
            "1 while consumption is paused for backpressure",
            paused.clone(),
        );
        r.register(
            "rebalances",
            "Partition assignments and revocations",
            rebalances.clone(),
        );
        r.register(
            "fenced_partitions",
            "Partitions whose buffered data was dropped because another writer advanced them",
            fenced_partitions.clone(),
        );
        r.register(
            "storage_retries",
            "Retries of failed catalog or storage operations",
            storage_retries.clone(),
        );
        Metrics {
            records_consumed,
            records_written,
            dead_letters,
            commits,
            commit_seconds,
            data_files,
            data_file_bytes,
            last_commit_timestamp,
            buffered_records,
            buffered_bytes,
            paused,
            rebalances,
            fenced_partitions,
            sequence_events,
            sequence_gap_size,
            sequence_tracker_entries,
            sequence_tracker_evictions,
            storage_retries,
            registry: Arc::new(r),
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

    pub fn commit(&self, table: &str, outcome: &str) {
        self.commits
            .get_or_create(&CommitLabels {
                table: table.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }

    /// Serves `/metrics` until the process ends.
    pub async fn serve(self, addr: SocketAddr) -> std::io::Result<()> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        // The bound address, which differs from `addr` when that asked for port 0.
        let bound = listener.local_addr()?;
        tracing::info!(addr = %bound, "metrics endpoint listening");
        let app = axum::Router::new()
            .route(
                "/metrics",
                axum::routing::get(move || {
                    let m = self.clone();
                    async move {
                        (
                            [(
                                axum::http::header::CONTENT_TYPE,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )],
                            m.encode(),
                        )
                    }
                }),
            )
            .route("/health", axum::routing::get(|| async { "ok\n" }));
        axum::serve(listener, app).await
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
