//! The sink's instrumentation: its metrics (Prometheus text on `metrics.address`, each
//! declared once below), the health `/healthz` and `/readyz` answer from, and the ages
//! computed at scrape time. Label sets are in [`labels`], table freshness in
//! [`freshness`], what librdkafka's statistics feed in [`kafka_stats`]; the HTTP server is
//! `k2_common::metrics::serve`.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use k2_common::config::K2Config;
use k2_common::health::{Health, HealthPolicy};
use k2_common::metrics::ProcessMetrics;

mod freshness;
mod kafka_stats;
mod labels;

pub use freshness::Freshness;
pub use labels::{
    BrokerLabels, CommitLabels, DeadLetterLabels, FreshnessLabels, KindLabels, Operation,
    OperationLabels, SequenceLabels, TableLabels, TopicLabels,
};

k2_common::metrics! {
    /// Every metric the sink exports, each declared here once.
    pub struct Declared {
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
    tags_created: Family<TableLabels, Counter> =
        "tags_created", "End-of-day tags the sink created in its commits (maintenance.end_of_day_tags)";
    snapshots_expired: Family<TableLabels, Counter> =
        "snapshots_expired", "Snapshots the sink expired in its commits (outside the window: maintenance.snapshot_retention, max_snapshots; not tagged)";
    expired_files_deleted: Family<TableLabels, Counter> =
        "expired_files_deleted", "Manifest lists, manifests and replaced data files the sink deleted once only expired snapshots reached them";
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
}

/// The sink's idea of too long: a loop that has not turned for the consumer's
/// `max.poll.interval.ms` has been dropped by the group anyway (live); a record may wait
/// `sink.commit.interval` for its commit by policy, and `metrics.ready_commit_window`
/// more before the sink is late (ready).
pub fn health_policy(config: &K2Config) -> HealthPolicy {
    let max_poll = config
        .kafka
        .client_properties()
        .iter()
        .find(|(k, _)| k.as_str() == "max.poll.interval.ms")
        .and_then(|(_, v)| v.parse::<u64>().ok())
        .unwrap_or(300_000);
    HealthPolicy {
        stall_after: Duration::from_millis(max_poll),
        commit_window: config.sink.commit.interval + config.metrics.ready_commit_window,
    }
}

/// The sink's metrics and health, cheap to clone (every part is shared).
#[derive(Clone)]
pub struct Metrics {
    declared: Declared,
    process: ProcessMetrics,
    health: Health,
    freshness: Freshness,
    registry: Arc<Registry>,
}

/// The declared metrics are the fields callers update (`metrics.records_written…`).
impl std::ops::Deref for Metrics {
    type Target = Declared;

    fn deref(&self) -> &Declared {
        &self.declared
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Metrics, with health judged by the policy of the default configuration.
    pub fn new() -> Self {
        Self::with_health(health_policy(&K2Config::default()))
    }

    pub fn with_health(policy: HealthPolicy) -> Self {
        let mut registry = Registry::with_prefix("k2");
        let declared = Declared::register(&mut registry);
        let process = ProcessMetrics::register(&mut registry);
        let metrics = Metrics {
            declared,
            process,
            health: Health::new(policy),
            freshness: Freshness::default(),
            registry: Arc::new(registry),
        };
        metrics.start_at_zero();
        metrics
    }

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
        self.freshness.committed(table);
    }

    /// Rows of `table` just committed (for its data freshness).
    pub fn data_committed(&self, table: &TableLabels, batches: &[RecordBatch]) {
        self.freshness.data_committed(table, batches);
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
        self.freshness
            .refresh(&self.freshness_commit, &self.freshness_data);
        self.process.refresh();
    }

    /// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until the process ends.
    pub async fn serve(self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        let registry = self.registry.clone();
        let probe = Arc::new(self.health.clone());
        k2_common::metrics::serve_on(listener, registry, probe, Arc::new(move || self.refresh()))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Operators read the metric list in docs/operations.md: it must name every metric
    /// (registration cannot miss one: the same declaration makes both).
    #[test]
    fn every_metric_is_documented() {
        let docs = include_str!("../../../docs/operations.md");
        for name in Declared::NAMES {
            assert!(
                k2_common::metrics::documented(docs, &format!("k2_{name}")),
                "docs/operations.md does not mention k2_{name}"
            );
        }
        let text = Metrics::new().encode();
        assert!(text.contains("# HELP k2_buffered_records Records waiting for a commit."));
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
}
