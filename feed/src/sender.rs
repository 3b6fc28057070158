//! Sending: encode events in the Confluent wire format for their topic, produce them with
//! an idempotent `acks=all` producer, pace them, and report progress.

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use k2_common::records::WireEncoder;
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

pub struct Sender {
    producer: FutureProducer,
    encoders: HashMap<DataType, WireEncoder>,
    topics: HashMap<(DataType, String), String>,
    in_flight: FuturesUnordered<DeliveryFuture>,
    window: usize,
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
        let producer: FutureProducer = cc.create()?;
        let encoders = ids
            .iter()
            .map(|(dt, id)| (*dt, WireEncoder::new(*dt, *id)))
            .collect();
        let topics = topics
            .iter()
            .map(|t| ((t.data_type(), t.exchange().to_string()), t.to_string()))
            .collect();
        Ok(Sender {
            producer,
            encoders,
            topics,
            in_flight: FuturesUnordered::new(),
            window: 50_000,
            summary: Summary::default(),
            progress: Progress::new(expected),
        })
    }

    fn topic(&self, e: &Event) -> Result<&str, SendError> {
        self.topics
            .get(&(e.data_type(), e.exchange().to_string()))
            .map(String::as_str)
            .ok_or_else(|| SendError::NoTopic {
                data_type: e.data_type().as_str(),
                exchange: e.exchange().to_string(),
                asset_class: e.asset_class().to_string(),
            })
    }

    fn encode(&self, e: Event) -> Result<(Vec<u8>, Option<Vec<u8>>), SendError> {
        let dt = e.data_type();
        let encoder = &self.encoders[&dt];
        Ok(match e {
            Event::Trade(t) => (
                t.envelope.symbol.clone().into_bytes(),
                Some(encoder.encode(t.to_avro())?),
            ),
            Event::Quote(q) => (
                q.envelope.symbol.clone().into_bytes(),
                Some(encoder.encode(q.to_avro())?),
            ),
            Event::Reference(r) => (
                r.symbol.clone().into_bytes(),
                Some(encoder.encode(r.to_avro())?),
            ),
            Event::Raw {
                key,
                mut value,
                kind,
                ..
            } => {
                // Poison built with the local ids; frame it with this run's real id unless
                // the id itself is the fault.
                if let Some(v) = value.as_mut()
                    && v.len() >= 5
                    && kind != "unknown_schema_id"
                    && kind != "bad_magic_byte"
                {
                    v[1..5].copy_from_slice(&encoder.schema_id().to_be_bytes());
                }
                (key, value)
            }
        })
    }

    /// Produces one event; waits for acknowledgements when too many are in flight.
    pub async fn send(&mut self, e: Event) -> Result<(), SendError> {
        let topic = self.topic(&e)?.to_string();
        let (key, value) = self.encode(e)?;
        self.summary.bytes += (key.len() + value.as_ref().map_or(0, Vec::len)) as u64;
        *self.summary.per_topic.entry(topic.clone()).or_default() += 1;
        let mut record = FutureRecord::<[u8], [u8]>::to(&topic).key(&key);
        if let Some(v) = &value {
            record = record.payload(v);
        }
        loop {
            match self.producer.send_result(record) {
                Ok(f) => {
                    self.in_flight.push(f);
                    break;
                }
                Err((
                    KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    back,
                )) => {
                    record = back;
                    self.settle_one().await?;
                    if self.in_flight.is_empty() {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
        self.summary.records += 1;
        while self.in_flight.len() >= self.window {
            self.settle_one().await?;
        }
        self.progress
            .update(self.summary.records, self.summary.bytes);
        Ok(())
    }

    async fn settle_one(&mut self) -> Result<(), SendError> {
        if let Some(r) = self.in_flight.next().await {
            match r {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(e.into()),
                Err(_) => return Err(KafkaError::Canceled.into()),
            }
        }
        Ok(())
    }

    /// Waits for every acknowledgement and returns the totals.
    pub async fn finish(mut self, started: Instant) -> Result<Summary, SendError> {
        while !self.in_flight.is_empty() {
            self.settle_one().await?;
        }
        let _ = self.producer.flush(Duration::from_secs(30));
        self.summary.seconds = started.elapsed().as_secs_f64();
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
