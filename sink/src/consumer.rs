//! Consume: the Kafka consumer, and partition assignment that starts each partition where
//! its table says, not where the consumer group says.
//!
//! The rebalance callback runs on the thread that polls, inside `poll`. On assignment it
//! reads the offsets recorded in the tables (a catalog read; retried for at most
//! [`assign_deadline`], well inside `max.poll.interval.ms`, then the sink stops) and
//! assigns the partitions at those offsets, paused; partitions no table recorded start at
//! their beginning. What happened is queued as [`RebalanceEvent`]s for the poll loop,
//! which drains them right after `poll` returns and has `crate::resume` do the slow part
//! off the poll thread (the sequence warm-up, the group's committed offset of unrecorded
//! partitions) before it seeks and resumes them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iceberg::Catalog;
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;

use k2_common::config::GroupProtocol;
use k2_common::topic::{DataType, TopicName};

use k2_table::offsets::{TableOffsets, TopicPartition};

use crate::instrumentation::{KindLabels, Metrics};
use crate::recorded::{RecordedError, recorded_offsets};

/// How long the rebalance callback retries reading the tables' offsets before the sink
/// gives up and stops: 60 s, or half of `max.poll.interval.ms` (librdkafka's default is
/// 300 s) if that is shorter, so the member is never expelled while it waits.
pub fn assign_deadline(client_properties: &BTreeMap<String, String>) -> Duration {
    let max_poll = client_properties
        .get("max.poll.interval.ms")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(300_000);
    Duration::from_secs(60).min(Duration::from_millis(max_poll / 2))
}

/// A partition handed to this sink, paused until it is known where it starts.
#[derive(Debug, Clone)]
pub struct Assigned {
    pub tp: TopicPartition,
    pub data_type: DataType,
}

#[derive(Debug)]
pub enum RebalanceEvent {
    Assigned(Vec<Assigned>),
    Revoked(Vec<TopicPartition>),
    /// The tables' offsets could not be read: nothing was assigned, and the sink stops.
    Failed(RecordedError),
}

/// Consumer context: table-driven assignment and librdkafka logs through `tracing`.
pub struct SinkContext {
    runtime: tokio::runtime::Handle,
    catalog: Arc<dyn Catalog>,
    metrics: Metrics,
    assign_deadline: Duration,
    events: Mutex<Vec<RebalanceEvent>>,
}

impl SinkContext {
    pub fn new(
        runtime: tokio::runtime::Handle,
        catalog: Arc<dyn Catalog>,
        metrics: Metrics,
        assign_deadline: Duration,
    ) -> Self {
        SinkContext {
            runtime,
            catalog,
            metrics,
            assign_deadline,
            events: Mutex::new(Vec::new()),
        }
    }

    /// The rebalance events since the last call, oldest first.
    pub fn take_events(&self) -> Vec<RebalanceEvent> {
        std::mem::take(&mut *self.events.lock().expect("events lock"))
    }

    pub fn has_events(&self) -> bool {
        !self.events.lock().expect("events lock").is_empty()
    }

    fn push(&self, e: RebalanceEvent) {
        self.events.lock().expect("events lock").push(e);
    }

    fn count(&self, kind: &str, n: usize) {
        self.metrics
            .rebalances
            .get_or_create(&KindLabels { kind: kind.into() })
            .inc_by(n as u64);
    }

    fn assign(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        let mut assigned = Vec::new();
        for e in tpl.elements() {
            match e.topic().parse::<TopicName>() {
                Ok(t) => assigned.push(Assigned {
                    tp: TopicPartition::new(e.topic(), e.partition()),
                    data_type: t.data_type(),
                }),
                Err(err) => {
                    tracing::error!(topic = e.topic(), error = %err, "assigned a topic that is not a market-data topic")
                }
            }
        }
        let data_types: BTreeSet<DataType> = assigned.iter().map(|a| a.data_type).collect();
        let offsets = match self.runtime.block_on(self.recorded(&data_types)) {
            Ok(o) => o,
            Err(e) => {
                self.push(RebalanceEvent::Failed(e));
                return;
            }
        };
        // Explicit start offsets: librdkafka starts fetching there on its own schedule,
        // and the loop's later seek (after the warm-up) goes to the same offset or past
        // it, so whichever lands last, nothing is skipped. (A position librdkafka would
        // look up itself, e.g. the group's committed offset, could land after the seek
        // somewhere else.) Paused until the loop resumes them.
        for a in &assigned {
            let start = offsets
                .get(&a.data_type)
                .and_then(|o| o.get(&a.tp))
                .map_or(Offset::Beginning, Offset::Offset);
            let _ = tpl.set_partition_offset(&a.tp.topic, a.tp.partition, start);
        }
        let result = match consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => consumer.incremental_assign(tpl),
            _ => consumer.assign(tpl),
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "assigning partitions failed");
        }
        if let Err(e) = consumer.pause(tpl) {
            tracing::error!(error = %e, "pausing newly assigned partitions failed");
        }
        tracing::info!(partitions = assigned.len(), "partitions assigned");
        self.count("assign", assigned.len());
        self.push(RebalanceEvent::Assigned(assigned));
    }

    /// The offsets recorded in the tables of `data_types`, retried for at most
    /// the assignment deadline (one deadline for all of them: the callback as a whole
    /// must stay inside `max.poll.interval.ms`).
    async fn recorded(
        &self,
        data_types: &BTreeSet<DataType>,
    ) -> Result<HashMap<DataType, TableOffsets>, RecordedError> {
        let until = tokio::time::Instant::now() + self.assign_deadline;
        let mut out = HashMap::new();
        for &dt in data_types {
            let offsets = tokio::time::timeout_at(
                until,
                recorded_offsets(self.catalog.as_ref(), dt, &self.metrics),
            )
            .await
            .map_err(|_| RecordedError::Deadline {
                table: dt.table_name(),
                deadline: self.assign_deadline,
            })??;
            out.insert(dt, offsets);
        }
        Ok(out)
    }

    fn revoke(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let revoked: Vec<TopicPartition> = tpl
            .elements()
            .iter()
            .map(|e| TopicPartition::new(e.topic(), e.partition()))
            .collect();
        tracing::info!(partitions = revoked.len(), "partitions revoked");
        let result = match consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => consumer.incremental_unassign(tpl),
            _ => consumer.unassign(),
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "unassigning partitions failed");
        }
        self.count("revoke", revoked.len());
        self.push(RebalanceEvent::Revoked(revoked));
    }
}

impl ClientContext for SinkContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => tracing::error!(target: "librdkafka", fac, "{log_message}"),
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", fac, "{log_message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", fac, "{log_message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", fac, "{log_message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", error = %error, "{reason}");
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        self.metrics.kafka_statistics(&statistics);
    }
}

impl ConsumerContext for SinkContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => self.assign(consumer, tpl),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => self.revoke(consumer, tpl),
            other => {
                // librdkafka asks for everything to be dropped when a rebalance fails.
                tracing::error!(error = ?other, "rebalance failed; dropping the assignment");
                let all = consumer.assignment().unwrap_or_default();
                self.revoke(consumer, &all);
            }
        }
    }
}

/// The consumer's librdkafka configuration. K2's choices come first so that pass-through
/// `kafka.properties` can override them, except the two exactly-once depends on.
pub fn consumer_config(
    client_properties: &BTreeMap<String, String>,
    group_id: &str,
    protocol: GroupProtocol,
) -> ClientConfig {
    let mut cc = ClientConfig::new();
    cc.set("group.id", group_id)
        .set("group.protocol", protocol.as_str())
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        // Prefetch is bounded (bytes, not messages): with pausing it bounds memory. 32 MiB
        // is ~350k market-data records, seconds of reading at any rate a broker serves one
        // consumer; librdkafka's 64 MiB default put the sink over 512 MiB peak RSS
        // (bench/ingest) with the default commit policy.
        .set("queued.max.messages.kbytes", "32768")
        .set("enable.partition.eof", "false")
        // Partitions added to a subscribed topic (`k2-admin topics apply` raising a count)
        // are noticed at the next metadata refresh: within 30 s, not librdkafka's 5 min.
        .set("topic.metadata.refresh.interval.ms", "30000")
        // Lag, fetch queue and round trips for the metrics (ClientContext::stats).
        .set("statistics.interval.ms", "5000");
    if protocol == GroupProtocol::Classic {
        // Incremental rebalances: a joining member does not stop everyone's partitions.
        // (With KIP-848 the broker assigns, incrementally by design.)
        cc.set("partition.assignment.strategy", "cooperative-sticky");
    }
    for (k, v) in client_properties {
        cc.set(k, v);
    }
    // The table is the source of truth; Kafka offsets are committed only after it.
    cc.set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    cc
}

pub type SinkConsumer = BaseConsumer<SinkContext>;

/// Creates the consumer and subscribes it to `topics`.
pub fn subscribe(
    config: ClientConfig,
    context: SinkContext,
    topics: &[String],
) -> Result<SinkConsumer, KafkaError> {
    let consumer: SinkConsumer = config.create_with_context(context)?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&names)?;
    Ok(consumer)
}

/// High watermarks of every partition of `topics`, for `--once`.
pub fn high_watermarks(
    consumer: &SinkConsumer,
    topics: &[String],
    timeout: Duration,
) -> Result<HashMap<TopicPartition, i64>, KafkaError> {
    let mut out = HashMap::new();
    for topic in topics {
        let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
        for t in metadata.topics() {
            if let Some(err) = t.error() {
                tracing::warn!(topic = t.name(), error = ?err, "topic metadata error");
                continue;
            }
            for p in t.partitions() {
                let (_, high) = consumer.fetch_watermarks(t.name(), p.id(), timeout)?;
                out.insert(TopicPartition::new(t.name(), p.id()), high);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_assignment_deadline_stays_inside_max_poll_interval() {
        let props = |v: &str| BTreeMap::from([("max.poll.interval.ms".to_string(), v.to_string())]);
        assert_eq!(assign_deadline(&BTreeMap::new()), Duration::from_secs(60));
        assert_eq!(assign_deadline(&props("20000")), Duration::from_secs(10));
        assert_eq!(assign_deadline(&props("900000")), Duration::from_secs(60));
    }
}
