//! Dead letters: records that cannot enter a table go to the dead-letter topic with their
//! original key and value bytes and headers saying where they came from and why.
//!
//! Delivery is at-least-once: a record's offset is only recorded as handled after the
//! broker acknowledged its dead letter, so after a crash it may be dead-lettered again;
//! the `k2.source.*` headers identify repeats.
//!
//! Nothing here blocks the poll thread: [`DeadLetters::send`] only queues (a full local
//! queue is retried by the committer), and the committer waits for acknowledgements.
//! Failures that may pass (broker down, queue full, timeouts) are retried with backoff. A
//! dead letter the broker can never take as it is (too large once K2's headers are added,
//! or refused as invalid) is sent *truncated*: the original key and every header, no value,
//! plus `k2.dead-letter.truncated` (the value's size) and `k2.dead-letter.error` (why the
//! full one failed), so the record is still found at its source offset. If even that
//! fails for good (the topic is missing or not writable), the commit fails with an error
//! naming the record, and the sink stops: its offset must not pass a record that is not
//! safely dead-lettered.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use crate::decode::avro::Rejected;
use k2_common::logging::LogBudget;

use crate::instrumentation::{Metrics, Operation};

pub const HEADER_SOURCE_TOPIC: &str = "k2.source.topic";
pub const HEADER_SOURCE_PARTITION: &str = "k2.source.partition";
pub const HEADER_SOURCE_OFFSET: &str = "k2.source.offset";
pub const HEADER_ERROR_KIND: &str = "k2.error.kind";
pub const HEADER_ERROR_MESSAGE: &str = "k2.error.message";
pub const HEADER_SINK_VERSION: &str = "k2.sink.version";
pub const HEADER_TIMESTAMP: &str = "k2.timestamp";
/// On a truncated dead letter: the size in bytes of the value it leaves out.
pub const HEADER_TRUNCATED: &str = "k2.dead-letter.truncated";
/// On a truncated dead letter: why the full one could not be delivered.
pub const HEADER_DELIVERY_ERROR: &str = "k2.dead-letter.error";

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("cannot create the dead-letter producer")]
    Create(#[source] KafkaError),
    #[error(
        "the dead letter of {record} cannot be delivered to {dead_letter_topic}, even truncated: {source}"
    )]
    Undeliverable {
        /// `topic[partition] offset n`
        record: String,
        dead_letter_topic: String,
        #[source]
        source: Box<KafkaError>,
    },
}

/// What of a rejected record a dead letter carries.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Form {
    /// Key, value and headers.
    Full,
    /// Key and headers only; the full form failed with this error.
    Truncated(String),
}

/// A dead letter on its way: queued with librdkafka, or not yet (its local queue was full).
struct InFlight {
    rejected: Rejected,
    form: Form,
    delivery: Result<DeliveryFuture, KafkaError>,
}

pub struct DeadLetters {
    producer: FutureProducer,
    topic: String,
    in_flight: Vec<InFlight>,
    log_budget: LogBudget,
    metrics: Metrics,
}

impl DeadLetters {
    pub fn new(
        client_properties: &std::collections::BTreeMap<String, String>,
        topic: &str,
        metrics: Metrics,
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
            metrics,
        })
    }

    pub fn pending(&self) -> usize {
        self.in_flight.len()
    }

    /// Queues a dead letter; its acknowledgement is awaited by [`PendingDeadLetters::deliver`]
    /// before the commit that records its offset.
    pub fn send(&mut self, rejected: Rejected) {
        self.metrics
            .dead_letter(&rejected.source.topic, rejected.kind);
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
        let delivery = enqueue(&self.producer, &self.topic, &rejected, &Form::Full);
        self.in_flight.push(InFlight {
            rejected,
            form: Form::Full,
            delivery,
        });
    }

    /// Hands the queued dead letters to the commit that will record their offsets.
    pub fn take_pending(&mut self) -> PendingDeadLetters {
        PendingDeadLetters {
            producer: self.producer.clone(),
            topic: self.topic.clone(),
            in_flight: std::mem::take(&mut self.in_flight),
            metrics: self.metrics.clone(),
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
    in_flight: Vec<InFlight>,
    metrics: Metrics,
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

    /// Waits until every dead letter is acknowledged: what may pass is retried with
    /// backoff, what never will is sent truncated, and a truncated one that fails for good
    /// is an error. Returns how many were delivered.
    pub async fn deliver(mut self) -> Result<usize, DeadLetterError> {
        let mut delivered = 0;
        let mut backoff = k2_common::retry::Backoff::new();
        while !self.in_flight.is_empty() {
            let mut again = Vec::new();
            let mut transient = None;
            for f in self.in_flight.drain(..) {
                let result = match f.delivery {
                    Ok(future) => match future.await {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err((e, _))) => Err(e),
                        Err(_canceled) => Err(KafkaError::Canceled),
                    },
                    Err(e) => Err(e),
                };
                match result {
                    Ok(()) => delivered += 1,
                    Err(e) if is_transient(&e) => {
                        transient = Some(e);
                        again.push((f.rejected, f.form));
                    }
                    Err(e) if f.form == Form::Full => {
                        tracing::warn!(
                            topic = %f.rejected.source.topic,
                            partition = f.rejected.source.partition,
                            offset = f.rejected.source.offset,
                            error = %e,
                            "the dead letter cannot be delivered as it is; sending it without its value"
                        );
                        self.metrics.dead_letters_truncated.inc();
                        again.push((f.rejected, Form::Truncated(e.to_string())));
                    }
                    Err(source) => {
                        let r = f.rejected.source;
                        return Err(DeadLetterError::Undeliverable {
                            record: format!("{}[{}] offset {}", r.topic, r.partition, r.offset),
                            dead_letter_topic: self.topic,
                            source: Box::new(source),
                        });
                    }
                }
            }
            if let Some(e) = transient {
                self.metrics.retried(Operation::DeadLetterSend);
                backoff.wait("delivering dead letters", &e).await;
            }
            for (rejected, form) in again {
                let delivery = enqueue(&self.producer, &self.topic, &rejected, &form);
                self.in_flight.push(InFlight {
                    rejected,
                    form,
                    delivery,
                });
            }
        }
        Ok(delivered)
    }
}

/// Errors that may pass by themselves. librdkafka already retried a failed delivery
/// within `message.timeout.ms`; what it reports is either that timeout (the broker was
/// unreachable) or an error about the record or the topic that no retry changes.
fn is_transient(e: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    match e {
        KafkaError::MessageProduction(code) => !matches!(
            code,
            C::MessageSizeTooLarge
                | C::InvalidMessageSize
                | C::MessageBatchTooLarge
                | C::InvalidRecord
                | C::InvalidMessage
                | C::InvalidTopic
                | C::UnknownTopic
                | C::TopicAuthorizationFailed
                | C::ClusterAuthorizationFailed
                | C::Fatal
        ),
        _ => true,
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

/// Hands a dead letter to librdkafka without waiting; a full local queue comes back as
/// an error to retry later.
fn enqueue(
    producer: &FutureProducer,
    topic: &str,
    r: &Rejected,
    form: &Form,
) -> Result<DeliveryFuture, KafkaError> {
    let partition = r.source.partition.to_string();
    let offset = r.source.offset.to_string();
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut headers = OwnedHeaders::new()
        .insert(header(HEADER_SOURCE_TOPIC, &r.source.topic))
        .insert(header(HEADER_SOURCE_PARTITION, &partition))
        .insert(header(HEADER_SOURCE_OFFSET, &offset))
        .insert(header(HEADER_ERROR_KIND, r.kind))
        .insert(header(HEADER_ERROR_MESSAGE, &r.message))
        .insert(header(HEADER_SINK_VERSION, k2_common::VERSION))
        .insert(header(HEADER_TIMESTAMP, &now));
    let value_bytes = r.value.as_ref().map_or(0, Vec::len).to_string();
    if let Form::Truncated(why) = form {
        headers = headers
            .insert(header(HEADER_TRUNCATED, &value_bytes))
            .insert(header(HEADER_DELIVERY_ERROR, why));
    }
    let mut record = FutureRecord::<[u8], [u8]>::to(topic).headers(headers);
    if let (Some(v), Form::Full) = (&r.value, form) {
        record = record.payload(v);
    }
    if let Some(k) = &r.key {
        record = record.key(k);
    }
    if let Some(ts) = r.source.timestamp_ms {
        record = record.timestamp(ts);
    }
    producer.send_result(record).map_err(|(e, _)| e)
}

fn header<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
    Header {
        key,
        value: Some(value),
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::types::RDKafkaErrorCode as C;

    use super::*;

    #[test]
    fn only_what_may_pass_is_retried_as_it_is() {
        for code in [
            C::MessageTimedOut,
            C::QueueFull,
            C::NotEnoughReplicas,
            C::LeaderNotAvailable,
        ] {
            assert!(
                is_transient(&KafkaError::MessageProduction(code)),
                "{code:?}"
            );
        }
        for code in [
            C::MessageSizeTooLarge,
            C::InvalidRecord,
            C::TopicAuthorizationFailed,
            C::UnknownTopic,
        ] {
            assert!(
                !is_transient(&KafkaError::MessageProduction(code)),
                "{code:?}"
            );
        }
    }
}
