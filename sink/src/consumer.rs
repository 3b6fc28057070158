//! Consume: the Kafka consumer, and partition assignment that starts each partition where
//! its table says, not where the consumer group says.
//!
//! The rebalance callback runs on the thread that polls, inside `poll`. On assignment it
//! reads the offsets recorded in the tables and assigns the partitions at those offsets;
//! partitions a table has never seen fall back to the group's committed offset, then to
//! `auto.offset.reset`. What happened is queued as [`RebalanceEvent`]s for the poll loop,
//! which drains them right after `poll` returns, before it seals anything.

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

use crate::instrumentation::{Metrics, RebalanceLabels};
use crate::offsets::{TableOffsets, TopicPartition};
use crate::table::table_ident;

/// A partition handed to this sink, and where its table says to resume.
#[derive(Debug, Clone)]
pub struct Assigned {
    pub tp: TopicPartition,
    pub data_type: DataType,
    /// Next offset to read as recorded by the table (`None`: never recorded).
    pub recorded: Option<i64>,
}

#[derive(Debug)]
pub enum RebalanceEvent {
    Assigned(Vec<Assigned>),
    Revoked(Vec<TopicPartition>),
}

/// Consumer context: table-driven assignment and librdkafka logs through `tracing`.
pub struct SinkContext {
    runtime: tokio::runtime::Handle,
    catalog: Arc<dyn Catalog>,
    metrics: Metrics,
    events: Mutex<Vec<RebalanceEvent>>,
}

impl SinkContext {
    pub fn new(
        runtime: tokio::runtime::Handle,
        catalog: Arc<dyn Catalog>,
        metrics: Metrics,
    ) -> Self {
        SinkContext {
            runtime,
            catalog,
            metrics,
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
            .get_or_create(&RebalanceLabels { kind: kind.into() })
            .inc_by(n as u64);
    }

    fn assign(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        let mut assigned = Vec::new();
        let mut data_types = BTreeSet::new();
        for e in tpl.elements() {
            match e.topic().parse::<TopicName>() {
                Ok(t) => {
                    data_types.insert(t.data_type());
                    assigned.push(Assigned {
                        tp: TopicPartition::new(e.topic(), e.partition()),
                        data_type: t.data_type(),
                        recorded: None,
                    });
                }
                Err(err) => {
                    tracing::error!(topic = e.topic(), error = %err, "assigned a topic that is not a market-data topic")
                }
            }
        }
        let offsets = self.runtime.block_on(load_offsets(
            self.catalog.as_ref(),
            &data_types,
            &self.metrics,
        ));
        for a in &mut assigned {
            a.recorded = offsets.get(&a.data_type).and_then(|o| o.get(&a.tp));
            if let Some(o) = a.recorded
                && let Err(e) =
                    tpl.set_partition_offset(&a.tp.topic, a.tp.partition, Offset::Offset(o))
            {
                tracing::error!(partition = %a.tp, error = %e, "cannot set the start offset");
            }
        }
        tracing::info!(
            partitions = assigned.len(),
            from_table = assigned.iter().filter(|a| a.recorded.is_some()).count(),
            "partitions assigned"
        );
        let result = match consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => consumer.incremental_assign(tpl),
            _ => consumer.assign(tpl),
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "assigning partitions failed");
        }
        self.count("assign", assigned.len());
        self.push(RebalanceEvent::Assigned(assigned));
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

/// Offsets recorded in the tables of these data types. Retries until the catalog answers:
/// starting a partition anywhere else could duplicate or skip records.
async fn load_offsets(
    catalog: &dyn Catalog,
    data_types: &BTreeSet<DataType>,
    metrics: &Metrics,
) -> HashMap<DataType, TableOffsets> {
    let mut out = HashMap::new();
    for &dt in data_types {
        let what = format!("reading the offsets recorded in {}", dt.table_name());
        let offsets = k2_common::retry::retry(
            &what,
            || async {
                let table = catalog
                    .load_table(&table_ident(dt))
                    .await
                    .map_err(|e| e.to_string())?;
                TableOffsets::from_metadata(table.metadata()).map_err(|e| e.to_string())
            },
            |_| true,
            |_| {
                metrics.storage_retries.inc();
            },
        )
        .await;
        if let Ok(o) = offsets {
            out.insert(dt, o);
        }
    }
    out
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
        .set("topic.metadata.refresh.interval.ms", "30000");
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
