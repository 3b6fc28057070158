//! Sending: encode events in the Confluent wire format for their topic, produce them with
//! an idempotent `acks=all` producer, pace them, and report progress.
//!
//! The hot path allocates nothing per record: events are encoded straight from their
//! structs into one reused buffer (`WireEncoder::encode_into`), librdkafka copies it, and
//! acknowledgements are counted by the producer's delivery callback (on librdkafka's own
//! polling thread) rather than awaited one future per record.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

use k2_common::records::{Record, WireEncoder};
use k2_common::topic::{DataType, TopicName};

use crate::event::Event;

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("no topic for {data_type} on exchange {exchange} ({asset_class}) in topics.yaml")]
    NoTopic {
        data_type: &'static str,
        exchange: String,
        asset_class: String,
    },
    #[error(transparent)]
    Encode(#[from] k2_common::records::EncodeError),
}

/// Writer schema id per data type (from the registry or the configured local ids).
pub type SchemaIds = BTreeMap<DataType, u32>;

/// How fast to send.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// As fast as the broker takes them.
    Unlimited,
    /// Records per second over the whole run.
    Rate(f64),
    /// Replay exchange time at this multiple of real time.
    Replay(f64),
}

/// Totals for the final line.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub records: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub per_topic: BTreeMap<String, u64>,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rate = if self.seconds > 0.0 {
            self.records as f64 / self.seconds
        } else {
            0.0
        };
        write!(
            f,
            "records={} bytes={} seconds={:.2} records_per_second={:.0}",
            self.records, self.bytes, self.seconds, rate
        )
    }
}

/// Acknowledgements, as librdkafka's delivery callbacks report them.
#[derive(Default)]
struct Deliveries {
    acknowledged: AtomicU64,
    failed: AtomicU64,
    /// The first failure, to report.
    first_error: Mutex<Option<KafkaError>>,
}

struct FeedContext(Arc<Deliveries>);

impl ClientContext for FeedContext {}

impl ProducerContext for FeedContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.0.acknowledged.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.0.failed.fetch_add(1, Ordering::Relaxed);
                self.0
                    .first_error
                    .lock()
                    .expect("deliveries lock")
                    .get_or_insert_with(|| e.clone());
            }
        }
    }
}

pub struct Sender {
    producer: ThreadedProducer<FeedContext>,
    deliveries: Arc<Deliveries>,
    encoders: BTreeMap<DataType, WireEncoder>,
    /// (data type, exchange, topic, records sent to it).
    topics: Vec<(DataType, String, String, u64)>,
    /// The encoded value of the record being sent (reused).
    buffer: Vec<u8>,
    /// Records handed to librdkafka not yet acknowledged may be at most this many.
    window: u64,
    summary: Summary,
    progress: Progress,
}

impl Sender {
    pub fn new(
        client_properties: &BTreeMap<String, String>,
        topics: &[TopicName],
        ids: &SchemaIds,
        expected: Option<u64>,
    ) -> Result<Self, SendError> {
        let mut cc = ClientConfig::new();
        cc.set("linger.ms", "20")
            .set("batch.num.messages", "10000")
            .set("compression.type", "zstd");
        for (k, v) in client_properties {
            cc.set(k, v);
        }
        // Never duplicated or reordered by retries.
        cc.set("enable.idempotence", "true").set("acks", "all");
        let deliveries = Arc::new(Deliveries::default());
        let producer = cc.create_with_context(FeedContext(deliveries.clone()))?;
        let encoders = ids
            .iter()
            .map(|(dt, id)| (*dt, WireEncoder::new(*dt, *id)))
            .collect();
        let topics = topics
            .iter()
            .map(|t| (t.data_type(), t.exchange().to_string(), t.to_string(), 0))
            .collect();
        Ok(Sender {
            producer,
            deliveries,
            encoders,
            topics,
            buffer: Vec::with_capacity(512),
            window: 200_000,
            summary: Summary::default(),
            progress: Progress::new(expected),
        })
    }

    fn topic(&self, e: &Event) -> Result<usize, SendError> {
        let (dt, exchange) = (e.data_type(), e.exchange());
        self.topics
            .iter()
            .position(|(d, x, _, _)| *d == dt && x == exchange)
            .ok_or_else(|| SendError::NoTopic {
                data_type: dt.as_str(),
                exchange: exchange.to_string(),
                asset_class: e.asset_class().to_string(),
            })
    }

    /// The record's key, and its value encoded into the reused buffer (`None`: a record
    /// without a value).
    fn encode<'e>(&mut self, e: &'e Event) -> Result<(&'e [u8], bool), SendError> {
        let encoder = &self.encoders[&e.data_type()];
        self.buffer.clear();
        let record = match e {
            Event::Trade(t) => Record::Trade(t),
            Event::Quote(q) => Record::Quote(q),
            Event::Reference(r) => Record::Reference(r),
            Event::Raw {
                key, value, kind, ..
            } => {
                let Some(v) = value else {
                    return Ok((key, false));
                };
                self.buffer.extend_from_slice(v);
                // Poison built with the local ids; frame it with this run's real id unless
                // the id itself is the fault.
                if self.buffer.len() >= 5
                    && *kind != "unknown_schema_id"
                    && *kind != "bad_magic_byte"
                {
                    self.buffer[1..5].copy_from_slice(&encoder.schema_id().to_be_bytes());
                }
                return Ok((key, true));
            }
        };
        encoder.encode_into(&record, &mut self.buffer)?;
        Ok((e.symbol().as_bytes(), true))
    }

    fn failed(&self) -> Option<SendError> {
        if self.deliveries.failed.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let e = self
            .deliveries
            .first_error
            .lock()
            .expect("deliveries lock")
            .clone()
            .unwrap_or(KafkaError::Canceled);
        Some(e.into())
    }

    fn unacknowledged(&self) -> u64 {
        self.summary.records
            - self.deliveries.acknowledged.load(Ordering::Relaxed)
            - self.deliveries.failed.load(Ordering::Relaxed)
    }

    /// Produces one event; waits for acknowledgements when too many are in flight.
    pub async fn send(&mut self, e: Event) -> Result<(), SendError> {
        if let Some(err) = self.failed() {
            return Err(err);
        }
        let topic = self.topic(&e)?;
        let (key, has_value) = self.encode(&e)?;
        let value_len = if has_value { self.buffer.len() } else { 0 };
        self.summary.bytes += (key.len() + value_len) as u64;
        let name = &self.topics[topic].2;
        let mut record = BaseRecord::<[u8], [u8]>::to(name).key(key);
        if has_value {
            record = record.payload(&self.buffer);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                Err((
                    KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    back,
                )) => {
                    record = back;
                    // librdkafka's own thread delivers; give it a moment.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
        self.topics[topic].3 += 1;
        self.summary.records += 1;
        while self.unacknowledged() >= self.window {
            if let Some(err) = self.failed() {
                return Err(err);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        self.progress
            .update(self.summary.records, self.summary.bytes);
        Ok(())
    }

    /// Waits for every acknowledgement and returns the totals.
    pub async fn finish(mut self, started: Instant) -> Result<Summary, SendError> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.unacknowledged() > 0 && Instant::now() < deadline {
            let _ = self.producer.flush(Duration::from_millis(100));
            if let Some(err) = self.failed() {
                return Err(err);
            }
        }
        if let Some(err) = self.failed() {
            return Err(err);
        }
        if self.unacknowledged() > 0 {
            return Err(
                KafkaError::Flush(rdkafka::types::RDKafkaErrorCode::MessageTimedOut).into(),
            );
        }
        self.summary.seconds = started.elapsed().as_secs_f64();
        self.summary.per_topic = self
            .topics
            .iter()
            .filter(|t| t.3 > 0)
            .map(|t| (t.2.clone(), t.3))
            .collect();
        self.progress.finish();
        Ok(self.summary)
    }
}

/// Paces a run: how long to wait before record `n` (0-based) or an event at exchange
/// time `event_micros`.
pub struct Pacer {
    pace: Pace,
    started: Instant,
    first_event: Option<i64>,
}

impl Pacer {
    pub fn new(pace: Pace) -> Self {
        Pacer {
            pace,
            started: Instant::now(),
            first_event: None,
        }
    }

    pub async fn wait(&mut self, n: u64, event_micros: Option<i64>) {
        let due = match self.pace {
            Pace::Unlimited => return,
            Pace::Rate(r) => Duration::from_secs_f64(n as f64 / r),
            Pace::Replay(speed) => {
                let Some(t) = event_micros else { return };
                let first = *self.first_event.get_or_insert(t);
                Duration::from_secs_f64(((t - first).max(0) as f64 / 1e6) / speed)
            }
        };
        let elapsed = self.started.elapsed();
        // Sleeping for less than a millisecond costs more than it paces.
        if due > elapsed + Duration::from_millis(1) {
            tokio::time::sleep(due - elapsed).await;
        }
    }
}

/// A progress bar on a terminal; a plain line every 5 s otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    last_line: Instant,
    started: Instant,
}

impl Progress {
    fn new(expected: Option<u64>) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = match expected {
                Some(n) => indicatif::ProgressBar::new(n).with_style(
                    indicatif::ProgressStyle::with_template(
                        "{bar:40} {pos}/{len} records  {per_sec}  ETA {eta}  {msg}",
                    )
                    .expect("template"),
                ),
                None => indicatif::ProgressBar::new_spinner().with_style(
                    indicatif::ProgressStyle::with_template(
                        "{spinner} {pos} records  {per_sec}  {elapsed}  {msg}",
                    )
                    .expect("template"),
                ),
            };
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr_with_hz(4));
            bar
        });
        Progress {
            bar,
            last_line: Instant::now(),
            started: Instant::now(),
        }
    }

    fn update(&mut self, records: u64, bytes: u64) {
        match &self.bar {
            Some(bar) => {
                if records.is_multiple_of(256) {
                    bar.set_position(records);
                    bar.set_message(format!("{:.1} MB", bytes as f64 / 1e6));
                }
            }
            None => {
                if self.last_line.elapsed() >= Duration::from_secs(5) {
                    self.last_line = Instant::now();
                    let secs = self.started.elapsed().as_secs_f64();
                    eprintln!(
                        "k2-feed: {records} records, {:.1} MB, {:.0} records/s",
                        bytes as f64 / 1e6,
                        records as f64 / secs
                    );
                }
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
