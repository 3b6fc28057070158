//! Dead letters: records that cannot enter a table go to the dead-letter topic with their
//! original key and value bytes and headers saying where they came from and why.
//!
//! Delivery is at-least-once: a record's offset is only recorded as handled after the
//! broker acknowledged its dead letter, so after a crash it may be dead-lettered again;
//! the `k2.source.*` headers identify repeats.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use crate::decoder::Rejected;
use crate::instrumentation::{LogBudget, Metrics};

pub const HEADER_SOURCE_TOPIC: &str = "k2.source.topic";
pub const HEADER_SOURCE_PARTITION: &str = "k2.source.partition";
pub const HEADER_SOURCE_OFFSET: &str = "k2.source.offset";
pub const HEADER_ERROR_KIND: &str = "k2.error.kind";
pub const HEADER_ERROR_MESSAGE: &str = "k2.error.message";
pub const HEADER_SINK_VERSION: &str = "k2.sink.version";
pub const HEADER_TIMESTAMP: &str = "k2.timestamp";

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("cannot create the dead-letter producer: {0}")]
    Create(#[source] KafkaError),
}

pub struct DeadLetters {
    producer: FutureProducer,
    topic: String,
    in_flight: Vec<(Rejected, DeliveryFuture)>,
    log_budget: LogBudget,
}

impl DeadLetters {
    pub fn new(
        client_properties: &std::collections::BTreeMap<String, String>,
        topic: &str,
    ) -> Result<Self, DeadLetterError> {
        let mut cc = ClientConfig::new();
        for (k, v) in client_properties
            .iter()
            .filter(|(k, _)| !is_consumer_only(k))
        {
            cc.set(k, v);
        }
        // A dead letter must not be lost or reordered by retries.
        cc.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5");
        let producer: FutureProducer = cc.create().map_err(DeadLetterError::Create)?;
        Ok(DeadLetters {
            producer,
            topic: topic.to_string(),
            in_flight: Vec::new(),
            log_budget: LogBudget::new(20, Duration::from_secs(10)),
        })
    }

    pub fn pending(&self) -> usize {
        self.in_flight.len()
    }

    /// Queues a dead letter; its acknowledgement is awaited by [`PendingDeadLetters::deliver`]
    /// before the commit that records its offset.
    pub fn send(&mut self, rejected: Rejected, metrics: &Metrics) {
        metrics.dead_letter(&rejected.source.topic, rejected.kind);
        if self.log_budget.allow() {
            tracing::warn!(
                topic = %rejected.source.topic,
                partition = rejected.source.partition,
                offset = rejected.source.offset,
                kind = rejected.kind,
                error = %rejected.message,
                "record sent to the dead-letter topic"
            );
        }
        let future = enqueue(&self.producer, &self.topic, &rejected);
        self.in_flight.push((rejected, future));
    }

    /// Hands the queued dead letters to the commit that will record their offsets.
    pub fn take_pending(&mut self) -> PendingDeadLetters {
        PendingDeadLetters {
            producer: self.producer.clone(),
            topic: self.topic.clone(),
            in_flight: std::mem::take(&mut self.in_flight),
        }
    }

    /// Flushes librdkafka's own queue (on shutdown).
    pub fn close(&self, timeout: Duration) {
        let _ = self.producer.flush(timeout);
    }
}

/// Dead letters queued since the last commit, travelling with the commit job.
pub struct PendingDeadLetters {
    producer: FutureProducer,
    topic: String,
    in_flight: Vec<(Rejected, DeliveryFuture)>,
}

impl std::fmt::Debug for PendingDeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingDeadLetters")
            .field("topic", &self.topic)
            .field("in_flight", &self.in_flight.len())
            .finish()
    }
}

impl PendingDeadLetters {
    pub fn len(&self) -> usize {
        self.in_flight.len()
    }

    pub fn is_empty(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// Waits until every dead letter is acknowledged, re-sending failures with backoff.
    /// Returns how many were delivered. Never gives up: an offset may not pass a bad
    /// record until its dead letter is safe.
    pub async fn deliver(mut self) -> usize {
        let mut delivered = 0;
        let mut attempt = 0u32;
        while !self.in_flight.is_empty() {
            let mut failed = Vec::new();
            for (rejected, future) in self.in_flight.drain(..) {
                match future.await {
                    Ok(Ok(_)) => delivered += 1,
                    Ok(Err((e, _))) => {
                        tracing::warn!(error = %e, topic = %self.topic, "dead letter not delivered; retrying");
                        failed.push(rejected);
                    }
                    Err(_canceled) => failed.push(rejected),
                }
            }
            if !failed.is_empty() {
                attempt += 1;
                let delay = Duration::from_millis(100u64 << attempt.min(7));
                tokio::time::sleep(delay).await;
                for r in failed {
                    let f = enqueue(&self.producer, &self.topic, &r);
                    self.in_flight.push((r, f));
                }
            }
        }
        delivered
    }
}

/// `kafka.properties` serve the consumer and this producer; consumer-only ones would
/// only make librdkafka warn here.
fn is_consumer_only(key: &str) -> bool {
    const PREFIXES: [&str; 10] = [
        "group.",
        "session.timeout",
        "heartbeat.",
        "auto.",
        "enable.auto.",
        "fetch.",
        "max.poll.",
        "isolation.level",
        "partition.assignment",
        "queued.",
    ];
    PREFIXES.iter().any(|p| key.starts_with(p))
}

fn enqueue(producer: &FutureProducer, topic: &str, r: &Rejected) -> DeliveryFuture {
    let partition = r.source.partition.to_string();
    let offset = r.source.offset.to_string();
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let headers = OwnedHeaders::new()
        .insert(header(HEADER_SOURCE_TOPIC, &r.source.topic))
        .insert(header(HEADER_SOURCE_PARTITION, &partition))
        .insert(header(HEADER_SOURCE_OFFSET, &offset))
        .insert(header(HEADER_ERROR_KIND, r.kind))
        .insert(header(HEADER_ERROR_MESSAGE, &r.message))
        .insert(header(HEADER_SINK_VERSION, k2_common::VERSION))
        .insert(header(HEADER_TIMESTAMP, &now));
    let mut record = FutureRecord::<[u8], [u8]>::to(topic).headers(headers);
    if let Some(v) = &r.value {
        record = record.payload(v);
    }
    if let Some(k) = &r.key {
        record = record.key(k);
    }
    if let Some(ts) = r.source.timestamp_ms {
        record = record.timestamp(ts);
    }
    loop {
        match producer.send_result(record) {
            Ok(f) => return f,
            Err((e, rec)) => {
                // Local queue full: let librdkafka deliver some, then try again.
                tracing::debug!(error = %e, "dead-letter queue full; waiting");
                producer.poll(Duration::from_millis(100));
                record = rec;
            }
        }
    }
}

fn header<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
    Header {
        key,
        value: Some(value),
    }
}
